// The alerts and candidates page: each alert's banner and sky map (contours, Sun, Moon, horizon, and every
// target coloured by where it is in its life, the reason on hover), the ranked galaxies, and the transient
// candidates with their triplets, light curves and the operators' real/bogus labels.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const STATE_COLOURS = {
  ranked: "#8a96a3", relayed: "#c6a5ff", planned: "#7cb7ff", observing: "#ffd166", observed: "#4cd07d",
  calibrated: "#1b9e5a", unobservable: "#ff6b6b",
};
function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.appendChild(element);
  return element;
}
function titled(element, words) { svg("title", {}, element).textContent = words; return element; }
const degrees = (v) => Number(v).toFixed(3);

// A plate carrée of RA (increasing to the left) and Dec within bounds; RA is unwrapped from the left edge.
function projection(bounds, width, height) {
  const [low, high] = bounds.ra, [bottom, top] = bounds.dec;
  return (ra, dec) => {
    const unwrapped = low + ((((ra - low) % 360) + 360) % 360);
    return [width * (high - unwrapped) / (high - low), height * (top - dec) / (top - bottom)];
  };
}
function polyline(points, project, width, attributes, parent) {
  let run = [];
  const flush = () => { if (run.length > 1) svg("polyline", {points: run.join(" "), ...attributes}, parent); run = []; };
  let last = null;
  for (const [ra, dec] of points) {
    const [x, y] = project(ra, dec);
    if (last && Math.abs(x - last) > width / 2) flush();  // across the map's edge in RA
    run.push(`${x.toFixed(1)},${y.toFixed(1)}`); last = x;
  }
  flush();
}
function drawSky(view, bounds, contours, width, height, whole) {
  const map = svg("svg", {viewBox: `0 0 ${width} ${height}`, width, height, class: "sky"});
  svg("rect", {x: 0, y: 0, width, height, fill: "#0b0f14", stroke: "#2a323c"}, map);
  const project = projection(bounds, width, height);
  if (whole) {
    for (let ra = 0; ra < 360; ra += 30) polyline([[ra, -90], [ra, 90]], project, width, {class: "grid"}, map);
    for (let dec = -60; dec <= 60; dec += 30) polyline([[359.9, dec], [180, dec], [0, dec]], project, width, {class: "grid"}, map);
  }
  for (const [level, lines] of Object.entries(contours)) {
    for (const line of lines) polyline(line, project, width, {class: `contour c${level.replace(".", "")}`}, map);
  }
  const now = view.now;
  if (now) {
    polyline(now.horizon, project, width, {class: "horizon"}, map);
    for (const [name, colour, radius] of [["sun", "#ffcc33", 7], ["moon", "#d8d8d8", 5]]) {
      const [x, y] = project(...now[name]);
      titled(svg("circle", {cx: x, cy: y, r: radius, fill: colour, class: name}, map),
             `${name === "sun" ? "the Sun" : "the Moon"}: RA ${degrees(now[name][0])}, Dec ${degrees(now[name][1])}`);
    }
  }
  for (const site of view.sites || []) {
    site.targets.forEach((t, index) => {
      const [x, y] = project(t.ra_deg, t.dec_deg);
      const mark = svg("circle", {cx: x, cy: y, r: whole ? 3 : 6, fill: STATE_COLOURS[t.state] || "white",
                                   stroke: "#10141a", class: "target", "data-name": t.name, "data-state": t.state}, map);
      titled(mark, `${t.name} (${site.name} #${index + 1}): ${t.state}: ${t.reason}\nRA ${degrees(t.ra_deg)}, ` +
                   `Dec ${degrees(t.dec_deg)}${t.distance_mpc ? `, ${t.distance_mpc.toFixed(1)} Mpc` : ""}`);
      if (!whole) svg("text", {x: x + 7, y: y - 5, class: "label"}, map).textContent = index + 1;
    });
  }
  return map;
}
function legend(view) {
  const counts = {};
  for (const site of view.sites || []) for (const t of site.targets) counts[t.state] = (counts[t.state] || 0) + 1;
  const box = document.createElement("p"); box.className = "legend";
  for (const [state, colour] of Object.entries(STATE_COLOURS)) {
    const item = document.createElement("span");
    item.innerHTML = `<svg width="10" height="10"><circle cx="5" cy="5" r="5" fill="${colour}"/></svg> `;
    item.appendChild(text(`${state} ${counts[state] || 0}  `)); item.dataset.state = state;
    box.appendChild(item);
  }
  return box;
}
function banner(view, event) {
  const a = view ? view.alert : event.alert_processed, p = event.alert_processed;
  const words = [`${a.alert_id} ${a.alert_type || ""} #${a.serial || 0}`];
  if (a.drill || p.drill) words.push("DRILL");
  if (a.far_hz) words.push(`FAR ${(a.far_hz * 3.15576e7).toPrecision(3)} per year`);
  const classes = Object.entries(a.classification || {}).sort((x, y) => y[1] - x[1]);
  if (classes.length) words.push(classes.slice(0, 3).map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(", "));
  if (view && view.area_deg2) words.push(`90% area ${view.area_deg2["0.9"]} deg²`);
  words.push(`${p.targets_relayed || 0} targets relayed`);
  return words.join(" · ");
}
function galaxies(view) {
  const chosen = new Map();
  for (const site of view.sites || []) for (const t of site.targets) {
    for (const g of t.galaxies || [t]) chosen.set(g.name, [site.name, t]);  // a field holds several galaxies
  }
  const table = document.createElement("table"); table.className = "galaxies";
  table.innerHTML = "<thead><tr><th>rank</th><th>galaxy</th><th>RA</th><th>Dec</th><th>Mpc</th><th>score</th>" +
                    "<th>target of</th><th>state</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const g of view.galaxies || []) {
    const tr = document.createElement("tr"), [site, target] = chosen.get(g.name) || ["", null];
    for (const v of [g.rank, g.name, degrees(g.ra_deg), degrees(g.dec_deg),
                     g.distance_mpc ? g.distance_mpc.toFixed(1) : "", g.score.toPrecision(3), site]) cell(tr, v);
    const state = cell(tr, target ? target.state : "");
    if (target) { state.title = target.reason; state.style.color = STATE_COLOURS[target.state]; }
    body.appendChild(tr);
  }
  table.appendChild(body);
  return table;
}
const sections = new Map();  // alert work order id -> its section, redrawn as its targets move on
async function drawAlert(section, event) {
  const answer = await get(`/api/sky/${encodeURIComponent(event.work_order_id)}`);
  const view = answer.ok ? await answer.json() : null;
  const heading = document.createElement("h3");
  heading.appendChild(text(banner(view, event)));
  const note = document.createElement("p"); note.className = "muted";
  note.appendChild(text(view ? event.alert_processed.message : (await answer.json()).error));
  const parts = [heading, note];
  if (view) {
    if (view.telescope_error) parts.push(Object.assign(document.createElement("p"), {className: "down",
      textContent: `the telescope: ${view.telescope_error} (target states as the alert daemon knows them)`}));
    const maps = document.createElement("div"); maps.className = "maps";
    maps.append(drawSky(view, {ra: [0, 360], dec: [-90, 90]}, view.contours, 560, 280, true),
                drawSky(view, view.zoom, view.zoom.contours, 360, 360 * (view.zoom.dec[1] - view.zoom.dec[0]) /
                        Math.max(1e-6, (view.zoom.ra[1] - view.zoom.ra[0]) * Math.cos(Math.PI / 180 *
                        (view.zoom.dec[0] + view.zoom.dec[1]) / 2)), false));
    const ranked = document.createElement("details");
    ranked.open = true;
    ranked.appendChild(Object.assign(document.createElement("summary"),
      {textContent: `the ${(view.galaxies || []).length} best-ranked galaxies of the credible region`}));
    ranked.appendChild(galaxies(view));
    parts.push(maps, legend(view), ranked);
  }
  section.replaceChildren(...parts);
  section.dataset.ready = view ? "sky" : "banner";
}
let alertsDrawn = 0;  // each drawing of the list has its number: a slower, older one never lands
async function alerts() {
  const drawing = ++alertsDrawn;
  const answer = await get("/api/history/alert?kind=alert_processed&limit=10");
  const box = document.getElementById("alerts");
  if (!answer.ok) { box.textContent = `the alert daemon: ${(await answer.json()).error}`; return; }
  const events = (await answer.json()).reverse();
  const retracted = new Set(events.filter((e) => e.alert_processed.alert_type === "RETRACTION")
                                  .map((e) => e.alert_processed.alert_id));
  const drawn = new Map();
  for (const e of events) {
    const section = document.createElement("section");
    section.className = "alert"; section.dataset.workOrder = e.work_order_id;
    if (retracted.has(e.alert_processed.alert_id)) section.classList.add("retracted");
    drawn.set(e.work_order_id, [section, e]);
  }
  await Promise.all([...drawn.values()].map(([section, e]) => drawAlert(section, e)));
  if (drawing !== alertsDrawn) return;
  sections.clear();
  for (const [id, entry] of drawn) sections.set(id, entry);
  if (drawn.size) box.replaceChildren(...[...drawn.values()].map(([section]) => section));
}
function debounced(work) { let timer = null; return () => { clearTimeout(timer); timer = setTimeout(work, 700); }; }
async function redraw() { await Promise.all([...sections.values()].map(([s, e]) => drawAlert(s, e))); }

// -- candidates ---------------------------------------------------------------------------------------
let session = null, labels = {};
function lightCurve(history) {
  const width = 220, height = 90, times = history.map((c) => Date.parse(c.date_obs));
  const mags = history.map((c) => c.mag).filter((m) => Number.isFinite(m));
  const curve = svg("svg", {viewBox: `0 0 ${width} ${height}`, width, height, class: "lightcurve"});
  if (!mags.length) return curve;
  const [t0, t1] = [Math.min(...times), Math.max(...times) + 1], [m0, m1] = [Math.min(...mags) - 0.3, Math.max(...mags) + 0.3];
  const x = (t) => 10 + (width - 20) * (t - t0) / (t1 - t0), y = (m) => 5 + (height - 10) * (m - m0) / (m1 - m0);
  history.forEach((c, i) => {
    if (!Number.isFinite(c.mag)) return;
    const error = Number.isFinite(c.mag_err) ? c.mag_err : 0;
    svg("line", {x1: x(times[i]), x2: x(times[i]), y1: y(c.mag - error), y2: y(c.mag + error), stroke: "#8a96a3"}, curve);
    titled(svg("circle", {cx: x(times[i]), cy: y(c.mag), r: 3, fill: "#ffd166", class: "point"}, curve),
           `${c.date_obs} ${c.filter} ${c.mag.toFixed(2)} ± ${error.toFixed(2)}`);
  });
  return curve;
}
async function label(name, verdict, td) {
  const answer = await fetch("/api/work-orders/preprocessor", {method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token},
    body: JSON.stringify({id: `label-${name}-${verdict}-${Date.now()}`,
                          label_candidate: {name, label: `CANDIDATE_LABEL_${verdict.toUpperCase()}`}})});
  const result = await answer.json();
  const reason = td.querySelector(".reason");
  reason.textContent = answer.ok ? `${verdict}: sent` : result.error;
  reason.className = "reason " + (answer.ok ? "up" : "down");
}
async function reportLinks(workOrderId) {
  const answer = await get(`/api/work-orders/preprocessor/${encodeURIComponent(workOrderId)}`);
  if (!answer.ok) return [];
  const order = await answer.json(), links = [];
  for (const product of order.products || []) {
    const words = {gcn_draft: "circular draft", tns_report: "TNS report"}[product.kind];
    if (!words) continue;
    const a = document.createElement("a");
    a.href = `/api/files/preprocessor?path=${encodeURIComponent(product.path)}`; a.textContent = words;
    a.className = product.kind; links.push(a);
  }
  return links;
}
let candidatesDrawn = 0;
async function candidates() {
  const drawing = ++candidatesDrawn;
  const answer = await get("/api/history/preprocessor?kind=transient_candidate&limit=1000");
  const box = document.getElementById("triplets");
  if (!answer.ok) { box.textContent = `the preprocessor: ${(await answer.json()).error}`; return; }
  if (!session) session = await (await get("/api/session")).json();
  const labelled = await get(`/api/files/preprocessor?path=${encodeURIComponent("reports/labels.json")}`);
  labels = labelled.ok ? await labelled.json() : {};
  const histories = new Map(), latest = new Map();
  for (const e of await answer.json()) {
    const c = e.transient_candidate;
    if (!histories.has(c.name)) histories.set(c.name, []);
    histories.get(c.name).push(c); latest.set(c.name, [c, e.work_order_id]);
  }
  const rows = [], triplets = [];
  for (const [name, [c, workOrderId]] of latest) {
    const tr = document.createElement("tr"); tr.dataset.name = name;
    const kpc = c.host_offset_kpc ? `, ${c.host_offset_kpc.toFixed(1)} kpc` : "";
    for (const v of [name, c.alert_id, degrees(c.ra_deg), degrees(c.dec_deg),
                     `${(c.mag || 0).toFixed(2)} ± ${(c.mag_err || 0).toFixed(2)} ${c.filter || ""}`,
                     (c.snr || 0).toFixed(1), (c.score || 0).toFixed(2), c.host || "",
                     c.host ? `${(c.host_offset_arcsec || 0).toFixed(1)}″${kpc}` : "", c.detections,
                     (c.flags || []).join(" ")]) cell(tr, v);
    cell(tr, "").appendChild(lightCurve(histories.get(name)));
    const verdict = cell(tr, labels[name] ? `${labels[name].label} (${labels[name].by})` : "");
    verdict.className = "verdict";
    if (session.role !== "viewer") {
      for (const word of ["real", "bogus"]) {
        const button = document.createElement("button"); button.textContent = word; button.className = word;
        button.addEventListener("click", () => label(name, word, verdict)); verdict.append(" ", button);
      }
      verdict.appendChild(Object.assign(document.createElement("span"), {className: "reason"}));
    }
    const links = cell(tr, "");
    for (const link of await reportLinks(workOrderId)) links.append(link, " ");
    rows.push(tr);
    if (c.triplet_path) {
      const image = document.createElement("img");
      image.src = `/api/files/preprocessor?path=${encodeURIComponent(c.triplet_path)}`; image.alt = name;
      image.className = "triplet"; triplets.push(image);
    }
  }
  if (drawing !== candidatesDrawn) return;
  document.getElementById("candidates").replaceChildren(...rows);
  box.replaceChildren(...triplets);
}
alerts(); candidates();
events.addEventListener("alert_processed", debounced(alerts));
const moved = debounced(redraw);
for (const kind of ["image_ready", "work_order_update", "calibration_progress"]) events.addEventListener(kind, moved);
events.addEventListener("transient_candidate", candidates);
events.addEventListener("work_order_update", (message) => {
  if (JSON.parse(message.data).work_order_update.task === "label_candidate") candidates();
});
