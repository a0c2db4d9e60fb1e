// What every page of the console shares.
"use strict";
const text = (value) => document.createTextNode(value === undefined || value === null ? "" : String(value));
async function get(path) {
  const answer = await fetch(path);
  if (answer.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  return answer;
}
function cell(tr, value) { const td = document.createElement("td"); td.appendChild(text(value)); tr.appendChild(td); return td; }
