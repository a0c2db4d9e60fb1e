"""The console's pages: server-rendered HTML with a little hand-written JavaScript (nothing from the internet)."""

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; background: #10141a; color: #dde3ea; }
h1 { font-size: 1.3em; } table { border-collapse: collapse; margin-bottom: 1em; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #2a323c; text-align: left; }
.up { color: #4cd07d; } .down { color: #ff6b6b; } .muted { color: #8a96a3; }
#log { font: 12px ui-monospace, monospace; max-height: 24em; overflow-y: auto; }
form.login { max-width: 20em; } input { display: block; margin: 0.3em 0 0.8em; width: 100%; }
.error { color: #ff6b6b; }
"""

LOGIN_PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TOROS console: log in</title><style>"""
    + STYLE
    + """</style></head>
<body><h1>TOROS console</h1>
<form class="login" method="post" action="/login">
<label>Name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<p class="error" id="message">{message}</p>
<button type="submit">Log in</button>
</form></body></html>
"""
)

OVERVIEW_PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TOROS console</title><style>"""
    + STYLE
    + """</style></head>
<body>
<h1>TOROS console <span class="muted">· {user} ({role})</span></h1>
<form id="logout" method="post" action="/logout"><button type="submit">Log out</button></form>
<h2>Daemons</h2>
<table><thead><tr><th>module</th><th>state</th><th>clock</th><th>queue</th><th>running</th><th>activity</th></tr></thead>
<tbody id="daemons"></tbody></table>
<h2>Devices</h2>
<table><thead><tr><th>device</th><th>state</th><th>driver</th><th>message</th></tr></thead>
<tbody id="devices"></tbody></table>
<h2>Events <span class="muted" id="stream">connecting…</span></h2>
<div id="log"></div>
<script>
"use strict";
const text = (value) => document.createTextNode(value === undefined ? "" : String(value));
function row(cells, className) {
  const tr = document.createElement("tr");
  for (const cell of cells) { const td = document.createElement("td"); td.appendChild(text(cell)); tr.appendChild(td); }
  if (className) tr.firstChild.nextSibling.className = className;
  return tr;
}
async function refresh() {
  const answer = await fetch("/api/status");
  if (answer.status === 401) { location.href = "/login"; return; }
  const daemons = document.getElementById("daemons"), devices = document.getElementById("devices");
  daemons.replaceChildren(); devices.replaceChildren();
  for (const d of await answer.json()) {
    daemons.appendChild(d.reachable
      ? row([d.module, "reachable", d.clock_time, d.queue_depth || 0, d.running || 0, d.activity], "up")
      : row([d.module, "unreachable", d.error, "", "", ""], "down"));
    for (const device of d.devices || [])
      devices.appendChild(row([device.name, (device.state || "").replace("DEVICE_STATE_", ""), device.driver, device.message]));
  }
}
const log = document.getElementById("log");
const events = new EventSource("/api/events");
events.onopen = () => { document.getElementById("stream").textContent = "live"; };
events.onerror = () => { document.getElementById("stream").textContent = "reconnecting…"; };
events.onmessage = null;
for (const kind of ["work_order_update", "image_ready", "calibration_progress", "alert_processed",
                    "device_update", "transient_candidate"]) {
  events.addEventListener(kind, (message) => {
    const e = JSON.parse(message.data);
    const line = document.createElement("div");
    line.appendChild(text(`${e.time || ""} ${e.module} #${e.sequence} ${kind} ${e.work_order_id || ""}`));
    log.prepend(line);
    if (kind === "device_update" || kind === "work_order_update") refresh();
  });
}
document.getElementById("logout").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const session = await (await fetch("/api/session")).json();
  await fetch("/logout", {method: "POST", headers: {"X-CSRF-Token": session.csrf_token}});
  location.href = "/login";
});
refresh(); setInterval(refresh, 5000);
</script>
</body></html>
"""
)
