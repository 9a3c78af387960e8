// The admin UI's script: the live tail, the refresh of the projections' table and of the
// dashboard's top, and the dashboard's charts (drawn by uPlot, served beside this file).
// Everything from the server is inserted as text (textContent), never as markup, except
// the refreshed fragments, which the server renders and escapes itself.
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

  function refreshFragment(holder) {
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

  const CHART_EVERY_MS = 2000;
  const COLORS = ["#2457c5", "#1d7a3a", "#a86400", "#b3261e", "#7a2a9a", "#00838f",
                  "#5d6575", "#c2185b", "#558b2f", "#4527a0"];

  // A chart of one figure: made at the first data, remade when its series change, and
  // marked on the figure (data-drawn: draws so far; data-points: values shown) for tests.
  function chart(figure, padded, seriesOf) {
    const plot = figure.querySelector(".plot");
    let made = null;
    let labels = "";
    function width() { return Math.max(300, plot.clientWidth || figure.clientWidth); }
    window.addEventListener("resize", function () {
      if (made) made.setSize({ width: width(), height: 240 });
    });
    return function show(data) {
      const series = seriesOf(data);
      const names = series.map(function (s) { return s.label; }).join("\n");
      const points = data.slice(1).reduce(function (sum, values) {
        return sum + values.filter(function (v) { return v !== null; }).length;
      }, 0);
      figure.dataset.points = String(points);
      if (made && names === labels) {
        made.setData(data);
        return;
      }
      if (made) made.destroy();
      labels = names;
      made = new uPlot({
        width: width(),
        height: 240,
        series: [{}].concat(series),
        tzDate: function (seconds) { return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"); },
        axes: [{}, { size: 60 }],
        scales: {
          // bars: room for the first and the newest minute's
          x: padded ? { range: function (u, min, max) { return [min - 30, max + 60]; } } : {},
          y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } },
        },
        hooks: {
          draw: [function () {
            figure.dataset.drawn = String(Number(figure.dataset.drawn || "0") + 1);
          }],
        },
      }, data, plot);
    };
  }

  function drawCharts(holder) {
    if (typeof uPlot === "undefined") return;
    const throughput = chart(document.getElementById("throughput"), true, function () {
      return [{ label: "events/s", stroke: COLORS[0], fill: "rgba(36, 87, 197, 0.25)",
                paths: uPlot.paths.bars({ size: [0.8, 24] }), points: { show: false } }];
    });
    let names = [];
    const lag = chart(document.getElementById("lag"), false, function () {
      return names.map(function (name, i) {
        return { label: name, stroke: COLORS[i % COLORS.length], width: 2 };
      });
    });
    const total = document.getElementById("throughput-total");
    const since = document.getElementById("throughput-since");
    const empty = document.getElementById("lag-empty");
    async function refresh() {
      let data;
      try {
        const answer = await fetch(holder.dataset.src, {
          credentials: "same-origin", headers: { Accept: "application/json" },
        });
        if (!answer.ok) return;
        data = await answer.json();
      } catch (error) {
        return; // the server is restarting: try again at the next tick
      }
      const counted = data.throughput;
      total.textContent = String(counted.total);
      since.hidden = counted.since === null;
      if (counted.since !== null) {
        since.textContent = "counted from " + new Date(counted.since * 1000).toISOString() +
          " only: reading further back would have read too many events";
      }
      throughput([counted.times, counted.rates]);
      names = Object.keys(data.lag.series).sort();
      empty.hidden = names.length > 0;
      lag([data.lag.times].concat(names.map(function (name) { return data.lag.series[name]; })));
    }
    refresh();
    setInterval(function () { if (!document.hidden) refresh(); }, CHART_EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const tail = document.getElementById("tail");
    if (tail) followTail(tail);
    ["projections", "attention"].forEach(function (id) {
      const holder = document.getElementById(id);
      if (holder && holder.dataset.src) refreshFragment(holder);
    });
    const charts = document.getElementById("charts");
    if (charts && charts.dataset.src) drawCharts(charts);
  });
})();
