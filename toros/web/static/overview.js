// The overview: daemons, devices, images as they come, calibration, the event log.
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
