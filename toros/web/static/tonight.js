// Tonight: the telescope's plan, what was observed, what cannot be.
"use strict";
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
