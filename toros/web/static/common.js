// What every page of the console shares.
"use strict";
const text = (value) => document.createTextNode(value === undefined || value === null ? "" : String(value));
async function get(path) {
  const answer = await fetch(path);
  if (answer.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  return answer;
}
function cell(tr, value) { const td = document.createElement("td"); td.appendChild(text(value)); tr.appendChild(td); return td; }
// One event stream per page, shared by its scripts (the console caps the streams of a session).
const events = new EventSource("/api/events");
// Said on the page that shows it (#stream); listened to here, so that an answer before the page's own scripts
// have loaded is not missed.
function streamState(words) { const where = document.getElementById("stream"); if (where) where.textContent = words; }
events.addEventListener("open", () => streamState("live"));
events.addEventListener("error", () => streamState("reconnecting…"));
document.addEventListener("DOMContentLoaded", () => {
  if (events.readyState === EventSource.OPEN) streamState("live");
});
// The operator's hold, on every page: who set it, since when, why, what waits; a resume button for operators.
async function showHold() {
  const banner = document.getElementById("hold");
  if (!banner) return;
  const answer = await get("/api/status");
  if (!answer.ok) return;
  const telescope = (await answer.json()).find((d) => d.module === "telescope");
  if (!telescope || !telescope.reachable) return;  // the last known hold stays shown while it is down
  const hold = telescope.hold;
  banner.hidden = !hold;
  if (!hold) return;
  const waiting = hold.waiting_alert_targets ? ` — ${hold.waiting_alert_targets} alert targets wait for it` : "";
  banner.querySelector(".what").textContent =
    `Telescope on hold by ${hold.by || "an anonymous client"} since ${hold.since}` +
    (hold.reason ? `: ${hold.reason}` : "") + waiting + ". The robot neither opens nor observes until an operator resumes.";
}
async function resumeHold(button) {
  const reason = button.parentElement.querySelector(".reason");
  const session = await (await get("/api/session")).json();
  const answer = await fetch("/api/work-orders/telescope", {method: "POST",
    body: JSON.stringify({id: "web-" + crypto.randomUUID(), night_operation: {step: "NIGHT_STEP_RESUME"}}),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token}});
  const result = await answer.json();
  reason.textContent = answer.ok ? "resuming…" : result.error;
}
document.addEventListener("DOMContentLoaded", () => {
  const banner = document.getElementById("hold");
  if (!banner) return;
  const button = banner.querySelector("button");
  if (document.body.dataset.role === "viewer") button.remove();
  else button.addEventListener("click", () => resumeHold(button));
  showHold();
  events.addEventListener("hold_update", showHold);
  events.addEventListener("daemon", showHold);
});
