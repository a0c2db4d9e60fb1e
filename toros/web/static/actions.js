// An operator's actions: each a work order, a double click submitting once.
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
