// The demo page: pick a user (select, input, or ?user=ID in the URL), show history and picks.
"use strict";

const $ = (id) => document.getElementById(id);
let stringUserIds = false;  // the service's user ids are strings: typed text stays text ("00060")

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function score(value) {
  return value === null || value === undefined ? "–" : value.toFixed(4);
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

async function loadUsers(selected) {
  const data = await getJson("/users");
  const select = $("user-select");
  stringUserIds = data.user_ids.some((id) => typeof id === "string");
  for (const id of data.user_ids) {
    const option = document.createElement("option");
    option.value = String(id);
    option.textContent = String(id);
    select.appendChild(option);
  }
  if (selected !== null) select.value = selected;
}

function parseId(text) {
  return !stringUserIds && /^-?\d+$/.test(text) ? Number(text) : text;
}

async function show(userText) {
  $("status").textContent = "";
  const k = Number($("k-input").value) || 10;
  const history = $("history").tBodies[0];
  const recs = $("recommendations").tBodies[0];
  history.replaceChildren();
  recs.replaceChildren();
  try {
    const user = await fetch("/users/" + encodeURIComponent(userText));
    const items = user.ok ? (await user.json()).history : [];
    $("history-count").textContent = "(" + items.length + ")";
    items.forEach((item, i) => {
      const row = history.insertRow();
      row.className = "history-row";
      cell(row, String(i + 1));
      cell(row, item.title || String(item.item_id), "title");
      cell(row, item.genres.join(", "), "genres");
    });
    const body = JSON.stringify({ user_id: parseId(userText), k: k });
    const result = await getJson("/recommend", { method: "POST", headers: { "Content-Type": "application/json" }, body: body });
    $("fallback").hidden = result.fallback !== "popular";
    if (result.reason) $("status").textContent = result.reason;  // why nothing came back
    for (const item of result.items) {
      const row = recs.insertRow();
      row.className = "recommendation";
      cell(row, String(item.rank), "num");
      cell(row, item.title || String(item.item_id), "title");
      cell(row, item.genres.join(", "), "genres");
      cell(row, score(item.recall_score), "num recall-score");
      cell(row, score(item.rank_score), "num rank-score");
    }
    document.body.dataset.loaded = "true";
  } catch (error) {
    $("status").textContent = String(error);
  }
}

async function main() {
  const params = new URLSearchParams(window.location.search);
  const initial = params.get("user");
  if (params.get("k")) $("k-input").value = params.get("k");
  try {
    await loadUsers(initial);
  } catch (error) {
    $("status").textContent = String(error);
  }
  $("user-select").addEventListener("change", (e) => show(e.target.value));
  $("go").addEventListener("click", () => show($("user-input").value || $("user-select").value));
  const first = initial !== null ? initial : $("user-select").value;
  if (first) {
    $("user-input").value = first;
    await show(first);
  }
}

main();
