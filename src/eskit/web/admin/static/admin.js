// The admin UI's only script: the live tail and the projections dashboard's refresh.
// Everything from the server is inserted as text (textContent), never as markup, except
// the dashboard's table, which the server renders and escapes itself.
"use strict";

(function () {
  const MAX_ROWS = 200;

  function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    row.appendChild(td);
  }

  function followTail(table) {
    const body = table.tBodies[0];
    const status = document.getElementById("tail-status");
    const count = document.getElementById("tail-count");
    let received = 0;
    const source = new EventSource(table.dataset.feed);
    source.onopen = function () {
      status.textContent = "connected";
      status.className = "connected";
    };
    source.onerror = function () {
      status.textContent = "reconnecting";
      status.className = "reconnecting";
    };
    source.onmessage = function (message) {
      const event = JSON.parse(message.data);
      const row = document.createElement("tr");
      row.className = "new";
      row.dataset.position = String(event.position);
      cell(row, String(event.position));
      cell(row, String(event.recorded_at).replace("T", " ").slice(0, 19));
      const link = document.createElement("a");
      link.href = table.dataset.stream + "?name=" + encodeURIComponent(event.stream);
      link.textContent = event.stream + " v" + event.version;
      cell(row, link);
      cell(row, event.type);
      const metadata = event.metadata || {};
      cell(row, String(metadata.user || metadata.command || ""));
      const data = JSON.stringify(event.data);
      cell(row, data.length > 200 ? data.slice(0, 200) + "…" : data);
      body.insertBefore(row, body.firstChild);
      setTimeout(function () { row.className = ""; }, 1500);
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
      received += 1;
      count.textContent = String(received);
    };
  }

  function refreshDashboard(holder) {
    async function refresh() {
      if (document.hidden) return;
      try {
        const answer = await fetch(holder.dataset.src, { credentials: "same-origin" });
        if (answer.ok) holder.innerHTML = await answer.text();
      } catch (error) {
        // the server is restarting: try again at the next tick
      }
    }
    setInterval(refresh, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const tail = document.getElementById("tail");
    if (tail) followTail(tail);
    const projections = document.getElementById("projections");
    if (projections && projections.dataset.src) refreshDashboard(projections);
  });
})();
