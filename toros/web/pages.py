"""The console's pages: server-rendered HTML with a little hand-written JavaScript (nothing from the internet)."""

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; background: #10141a; color: #dde3ea; }
h1 { font-size: 1.3em; } table { border-collapse: collapse; margin-bottom: 1em; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #2a323c; text-align: left; }
.up { color: #4cd07d; } .down { color: #ff6b6b; } .muted { color: #8a96a3; }
#log, .log { font: 12px ui-monospace, monospace; max-height: 24em; overflow-y: auto; }
#filters, #replay { margin-bottom: 0.5em; } #filters input, #replay input { display: inline; width: 12em; }
form.login { max-width: 20em; } input { display: block; margin: 0.3em 0 0.8em; width: 100%; }
.error { color: #ff6b6b; } .invalid { outline: 2px solid #ff6b6b; }
#images { display: flex; flex-wrap: wrap; gap: 0.8em; } figure { margin: 0; } figure img { width: 192px; }
figcaption { font-size: 12px; } a { color: #7cb7ff; } #header { font: 11px ui-monospace, monospace; }
img.skymap, img#plan { max-width: 100%; background: white; } nav { margin-bottom: 1em; }
#actions form, #actions .action { margin-bottom: 0.8em; } #actions input { display: inline; width: 7em; }
svg.sky { margin: 0 0.8em 0.5em 0; } .maps { display: flex; flex-wrap: wrap; align-items: flex-start; }
.grid { stroke: #2a323c; fill: none; } .contour { fill: none; stroke-width: 1.5; } .c09 { stroke: #3f7fbf; }
.c05 { stroke: #9fd0ff; } .horizon { fill: none; stroke: #ff9f43; stroke-dasharray: 4 3; }
.label { fill: #dde3ea; font-size: 10px; } section.retracted h3 { text-decoration: line-through; }
img.triplet { max-width: 100%; background: white; margin-bottom: 0.5em; } .legend span { margin-right: 0.6em; }
progress { width: 12em; } .blink { display: flex; gap: 0.5em; } .blink img { width: 192px; }
.banner { background: #5a3d00; color: #ffe2a8; padding: 0.6em 1em; margin-bottom: 1em; border-radius: 4px; }
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
<body data-role="{role}">
<h1>TOROS console <span class="muted">· {user} ({role})</span></h1>
<nav><a href="/">Overview</a> · <a href="/alerts">Alerts and candidates</a> · <a href="/tonight">Tonight</a></nav>
<div id="hold" class="banner" role="status" hidden><span class="what"></span>
<button type="button">Resume the robot</button> <span class="reason"></span></div>
<script src="/static/common.js"></script>
<form id="logout" method="post" action="/logout"><button type="submit">Log out</button></form>
<h2>Daemons</h2>
<table><thead><tr><th>module</th><th>state</th><th>clock</th><th>queue</th><th>running</th><th>activity</th>
<th>status (the current target, safety)</th></tr></thead>
<tbody id="daemons"></tbody></table>
<h2>Devices</h2>
<table><thead><tr><th>device</th><th>state</th><th>driver</th><th>message</th></tr></thead>
<tbody id="devices"></tbody></table>
<h2>Latest images</h2>
<div id="images" data-follow="{follow}"></div>
<h2>Calibration</h2>
<div id="calibration"><p class="muted">nothing calibrating</p></div>
<pre id="header" hidden></pre>
{actions}
<h2>Events <span class="muted" id="stream">connecting…</span></h2>
<form id="filters">
<select name="module"><option value="">every module</option><option>alert</option><option>telescope</option>
<option>preprocessor</option></select>
<select name="kind"><option value="">every kind</option><option>work_order_update</option><option>image_ready</option>
<option>calibration_progress</option><option>alert_processed</option><option>device_update</option>
<option>transient_candidate</option></select>
<input name="work_order" placeholder="work order"></form>
<div id="log"></div>
<h2>Replay a night</h2>
<form id="replay"><select name="module"><option>telescope</option><option>preprocessor</option><option>alert</option>
</select> <input name="night" type="date" required> <button type="submit">Replay</button>
<span class="reason"></span></form>
<div id="replayed" class="log"></div>
<script>
"use strict";
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
      ? row([d.module, "reachable", d.clock_time, d.queue_depth || 0, d.running || 0, d.activity, d.message], "up")
      : row([d.module, "unreachable", d.error, "", "", "", ""], "down"));
    for (const device of d.devices || [])
      devices.appendChild(row([device.name, (device.state || "").replace("DEVICE_STATE_", ""), device.driver, device.message]));
  }
}
const log = document.getElementById("log"), filters = document.getElementById("filters");
function line(e) {
  const div = document.createElement("div");
  div.dataset.module = e.module; div.dataset.kind = e.kind; div.dataset.workOrder = e.work_order_id || "";
  div.dataset.sequence = e.sequence;
  div.appendChild(text(`${e.time || ""} ${e.module} #${e.sequence} ${e.kind} ${e.work_order_id || ""}`));
  return div;
}
function shown(div) {
  const f = new FormData(filters);
  return (!f.get("module") || div.dataset.module === f.get("module")) &&
         (!f.get("kind") || div.dataset.kind === f.get("kind")) &&
         (!f.get("work_order") || div.dataset.workOrder.includes(f.get("work_order")));
}
filters.addEventListener("input", () => { for (const div of log.children) div.hidden = !shown(div); });
const replay = document.getElementById("replay");
replay.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const f = new FormData(replay), box = document.getElementById("replayed");
  const answer = await fetch(`/api/history/${f.get("module")}?night=${f.get("night")}&limit=1000`);
  const result = await answer.json();
  replay.querySelector(".reason").textContent = answer.ok ? `${result.length} events` : result.error;
  box.replaceChildren(...(answer.ok ? result.map(line) : []));
});
events.onopen = () => { document.getElementById("stream").textContent = "live"; };
events.onerror = () => { document.getElementById("stream").textContent = "reconnecting…"; };
events.onmessage = null;
// The console tells at once when a daemon goes away or comes back.
events.addEventListener("daemon", (message) => {
  const d = JSON.parse(message.data);
  const tr = [...document.getElementById("daemons").children].find((r) => r.firstChild.textContent === d.module);
  if (tr) {
    tr.children[1].textContent = d.reachable ? "reachable" : "unreachable";
    tr.children[1].className = d.reachable ? "up" : "down";
    if (!d.reachable) tr.children[2].textContent = d.error;
  }
  refresh();
});
for (const kind of ["work_order_update", "image_ready", "calibration_progress", "alert_processed",
                    "device_update", "transient_candidate"]) {
  events.addEventListener(kind, (message) => {
    const e = JSON.parse(message.data), div = line(e);
    div.hidden = !shown(div);
    log.prepend(div);
    while (log.children.length > 2000) log.lastChild.remove();
    if (kind === "device_update" || kind === "work_order_update") refresh();
    if (kind === "image_ready") showImage(e);
    if (kind === "calibration_progress") showProgress(e);
    if (kind === "work_order_update") showCalibrated(e);
  });
}
function showProgress(e) {
  const p = e.calibration_progress, box = document.getElementById("calibration");
  box.querySelector("p.muted")?.remove();
  let bar = [...box.children].find((div) => div.dataset.workOrder === e.work_order_id);
  if (!bar) {
    bar = document.createElement("div"); bar.dataset.workOrder = e.work_order_id;
    bar.append(document.createElement("progress"), document.createElement("span"));
    box.prepend(bar);
    while (box.children.length > 6) box.lastChild.remove();
  }
  bar.firstChild.max = 100; bar.firstChild.value = p.percent || 0;
  bar.lastChild.textContent = ` ${e.work_order_id}: ${p.stage || ""} ${p.frames_done || 0} of ${p.frames_total || 0} ` +
                              `(${(p.percent || 0).toFixed(0)}%)`;
}
// A calibrated frame beside its raw one (the follow work order names the raw frame's image_ready), and a blink.
async function showCalibrated(e) {
  const follow = document.getElementById("images").dataset.follow;
  const match = /^follow-(.+)-([0-9]+)$/.exec(e.work_order_id || "");
  if (e.module !== "preprocessor" || !match || match[1] !== follow) return;
  if ((e.work_order_update || {}).state !== "WORK_ORDER_STATE_DONE") return;
  const figure = document.querySelector(`#images figure[data-sequence="${match[2]}"]`);
  if (!figure || figure.querySelector("img.calibrated")) return;
  const order = await (await fetch(`/api/work-orders/preprocessor/${encodeURIComponent(e.work_order_id)}`)).json();
  const product = (order.products || []).find((p) => p.kind === "calibrated");
  if (!product || figure.querySelector("img.calibrated")) return;
  const calibrated = document.createElement("img");
  calibrated.className = "calibrated"; calibrated.alt = "calibrated";
  calibrated.src = `/api/preview/preprocessor?path=${encodeURIComponent(product.path)}&size=256`;
  figure.querySelector(".blink").appendChild(calibrated);
  const blink = document.createElement("button");
  blink.textContent = "blink"; blink.className = "blink";
  blink.addEventListener("click", () => {
    const [raw, cal] = figure.querySelectorAll(".blink img");
    if (figure.dataset.timer) {
      clearInterval(Number(figure.dataset.timer)); delete figure.dataset.timer; raw.hidden = cal.hidden = false; return;
    }
    raw.hidden = true;
    figure.dataset.timer = setInterval(() => { raw.hidden = !raw.hidden; cal.hidden = !cal.hidden; }, 500);
  });
  figure.querySelector("figcaption").appendChild(blink);
}
function showImage(e) {
  const ready = e.image_ready, query = `?path=${encodeURIComponent(ready.path)}`;
  const figure = document.createElement("figure");
  figure.dataset.sequence = e.sequence;
  const pair = document.createElement("div"); pair.className = "blink";
  const image = document.createElement("img");
  image.src = `/api/preview/${e.module}${query}&size=256`; image.alt = ready.object || ready.path;
  image.className = "raw"; pair.appendChild(image);
  const caption = document.createElement("figcaption");
  caption.appendChild(text(`${ready.object || ""} ${ready.filter || ""} ${ready.exposure_time || ""} `));
  const header = document.createElement("a");
  header.href = "#"; header.textContent = "header";
  header.addEventListener("click", async (click) => {
    click.preventDefault();
    const pre = document.getElementById("header");
    pre.textContent = await (await fetch(`/api/header/${e.module}${query}`)).text(); pre.hidden = false;
  });
  const download = document.createElement("a");
  download.href = `/api/files/${e.module}${query}&download=1`; download.textContent = " download";
  caption.append(header, download); figure.append(pair, caption);
  const images = document.getElementById("images");
  images.prepend(figure);
  while (images.children.length > 8) images.lastChild.remove();
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

ACTIONS = r"""
<h2>Actions</h2>
<section id="actions">
<div class="action"><button id="open" data-confirm="Really open the dome? Click again">Open the dome</button>
<span class="reason"></span></div>
<div class="action"><button id="close">Close the dome</button> <span class="reason"></span></div>
<div class="action">Night: <button id="prepare">Prepare (bias, darks)</button>
<button id="night-open" data-confirm="Really open for the night? Click again">Open for the night</button>
<button id="night-close">Close for the night</button> <span class="reason"></span></div>
<form id="observe">
<input name="name" placeholder="target" required> <input name="ra_deg" placeholder="RA deg" required>
<input name="dec_deg" placeholder="Dec deg" required> <input name="exposure_s" placeholder="exposure s" value="60">
<input name="count" placeholder="frames" value="1"> <input name="filter" placeholder="filter">
<button type="submit">Observe</button> <span class="reason"></span></form>
<form id="drill">
<select name="sample"><option value="">a shipped sample notice…</option></select> or
<input name="notice" type="file" accept=".xml,.json,application/json,text/xml" style="width: 16em">
<button type="submit">Replay as a drill</button> <span class="reason"></span></form>
<form id="cancel">
<select name="module"><option>telescope</option><option>preprocessor</option><option>alert</option></select>
<input name="id" placeholder="work order id" required> <input name="reason" placeholder="reason" required>
<button type="submit">Cancel work order</button> <span class="reason"></span></form>
</section>
<script>
"use strict";
let csrf = null;
async function token() {
  if (!csrf) csrf = (await (await fetch("/api/session")).json()).csrf_token;
  return csrf;
}
// One id per intent until it is answered: a double click submits once.
function intent(element) {
  if (!element.dataset.id) element.dataset.id = "web-" + crypto.randomUUID();
  return element.dataset.id;
}
async function command(path, body, element) {
  const reason = element.querySelector(".reason") || element.parentElement.querySelector(".reason");
  const answer = await fetch(path, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": await token()}});
  const result = await answer.json();
  delete element.dataset.id;
  reason.textContent = answer.ok ? "accepted: " + result.id : result.error;
  reason.className = "reason " + (answer.ok ? "up" : "down");
  return {ok: answer.ok, result};
}
function step(button, order) {
  button.addEventListener("click", () => {
    const label = button.dataset.label || button.textContent;
    if (button.dataset.confirm && !button.dataset.armed) {  // risky: a second click within 5 s
      button.dataset.armed = "yes"; button.dataset.label = label; button.textContent = button.dataset.confirm;
      setTimeout(() => { delete button.dataset.armed; button.textContent = label; }, 5000);
      return;
    }
    delete button.dataset.armed; button.textContent = label;
    command("/api/work-orders/telescope", {id: intent(button), ...order}, button);
  });
}
step(document.getElementById("open"), {dome_control: {action: "DOME_ACTION_OPEN"}});
step(document.getElementById("close"), {dome_control: {action: "DOME_ACTION_CLOSE"}});
step(document.getElementById("prepare"), {night_operation: {step: "NIGHT_STEP_PREPARE"}});
step(document.getElementById("night-open"), {night_operation: {step: "NIGHT_STEP_OPEN"}});
step(document.getElementById("night-close"), {night_operation: {step: "NIGHT_STEP_CLOSE"}});
const observe = document.getElementById("observe");
observe.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const f = new FormData(observe);
  for (const input of observe.querySelectorAll("input")) { input.classList.remove("invalid"); input.title = ""; }
  const target = {name: f.get("name"), ra_deg: Number(f.get("ra_deg")), dec_deg: Number(f.get("dec_deg")),
    exposure_time: f.get("exposure_s") + "s", exposure_count: Number(f.get("count")), filter: f.get("filter")};
  const {ok, result} = await command("/api/work-orders/telescope",
    {id: intent(observe), observe_targets: {targets: [target]}}, observe);
  const field = !ok && /targets\[0\]\.(\w+)/.exec(result.error || "");  // the field the daemon named
  const names = {exposure_time: "exposure_s", exposure_count: "count"};
  const input = field && observe.querySelector(`input[name=${names[field[1]] || field[1]}]`);
  if (input) { input.classList.add("invalid"); input.title = result.error; }
});
const drill = document.getElementById("drill");
(async () => {
  const answer = await fetch("/api/samples");
  if (!answer.ok) return;
  for (const name of await answer.json()) drill.sample.appendChild(new Option(name, name));
})();
function base64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 32768) binary += String.fromCharCode(...bytes.subarray(i, i + 32768));
  return btoa(binary);
}
drill.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const file = drill.notice.files[0], sample = drill.sample.value, reason = drill.querySelector(".reason");
  if (!file && !sample) { reason.textContent = "choose a sample or a notice file"; reason.className = "reason down"; return; }
  const bytes = file ? new Uint8Array(await file.arrayBuffer())
                     : new Uint8Array(await (await fetch(`/api/samples/${encodeURIComponent(sample)}`)).arrayBuffer());
  command("/api/work-orders/alert", {id: intent(drill),
    process_alert: {payload: base64(bytes), source: `web: ${file ? file.name : sample}`, drill: true}}, drill);
});
const cancel = document.getElementById("cancel");
cancel.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const f = new FormData(cancel);
  command(`/api/work-orders/${f.get("module")}/${encodeURIComponent(f.get("id"))}/cancel`,
          {reason: f.get("reason")}, cancel);
});
</script>
"""


def _page(title: str, body: str, script: str) -> str:
    """A page of the console: the header, its navigation, its body and its own script."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TOROS console: {title}</title><style>{STYLE}</style></head>
<body data-role="{{role}}">
<h1>{title} <span class="muted">· {{user}} ({{role}})</span></h1>
<nav><a href="/">Overview</a> · <a href="/alerts">Alerts and candidates</a> · <a href="/tonight">Tonight</a></nav>
<div id="hold" class="banner" role="status" hidden><span class="what"></span>
<button type="button">Resume the robot</button> <span class="reason"></span></div>
<script src="/static/common.js"></script>
{body}
{f'<script>"use strict";{script}</script>' if script else ""}
</body></html>
"""


ALERTS_PAGE = _page(
    "Alerts and candidates",
    """<h2>Alerts</h2><div id="alerts"><p class="muted">none yet</p></div>
<h2>Transient candidates</h2>
<table><thead><tr><th>name</th><th>alert</th><th>RA</th><th>Dec</th><th>mag</th><th>S/N</th><th>score</th>
<th>host</th><th>offset</th><th>detections</th><th>flags</th><th>light curve</th><th>real or bogus</th>
<th>reports</th></tr></thead><tbody id="candidates"></tbody></table>
<div id="triplets"></div>
<script src="/static/alerts.js"></script>""",
    "",
)

TONIGHT_PAGE = _page(
    "Tonight",
    """<p id="night" class="muted">asking the telescope…</p>
<img id="plan" alt="tonight's plan" hidden>
<h2>Observed</h2>
<table><thead><tr><th>target</th><th>start</th><th>end</th><th>frames</th></tr></thead><tbody id="observed"></tbody></table>
<h2>Planned (remaining)</h2>
<table><thead><tr><th>target</th><th>start</th><th>end</th><th>state</th></tr></thead><tbody id="blocks"></tbody></table>
<h2>Not observable tonight</h2>
<table><thead><tr><th>target</th><th>why</th></tr></thead><tbody id="unobservable"></tbody></table>""",
    """
async function tonight() {
  const answer = await get("/api/tonight");
  const night = document.getElementById("night");
  if (!answer.ok) { night.textContent = (await answer.json()).error; return; }
  const t = await answer.json();
  if (!t.plan) { night.textContent = `night ${t.night}: no plan yet (no targets)`; return; }
  night.textContent = `night ${t.night}, planned at ${t.plan.made || ""}`;
  const plan = document.getElementById("plan");
  plan.src = `/api/files/telescope?path=${encodeURIComponent(t.plan_png)}&t=${Date.now()}`; plan.hidden = false;
  const blocks = document.getElementById("blocks"), unobservable = document.getElementById("unobservable");
  const observed = document.getElementById("observed");
  blocks.replaceChildren(); unobservable.replaceChildren(); observed.replaceChildren();
  for (const o of t.plan.observed || []) {
    const tr = document.createElement("tr");
    for (const v of [o.name, o.start, o.end, o.frames]) cell(tr, v);
    observed.appendChild(tr);
  }
  for (const b of t.plan.blocks || []) {
    const tr = document.createElement("tr");
    for (const v of [b.name || b.target, b.start, b.end, b.start <= t.now && t.now < b.end ? "now" : "planned"]) cell(tr, v);
    blocks.appendChild(tr);
  }
  for (const u of t.plan.unobservable || []) {
    const tr = document.createElement("tr");
    for (const v of [u.name || u.target, u.reason]) cell(tr, v);
    unobservable.appendChild(tr);
  }
}
tonight();
setInterval(tonight, 30000);  // the line for now moves on
events.addEventListener("image_ready", tonight);
events.addEventListener("work_order_update", tonight);
""",
)

PAGES = {"/alerts": ALERTS_PAGE, "/tonight": TONIGHT_PAGE}
