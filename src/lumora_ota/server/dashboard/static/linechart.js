/* A small SVG line chart for the Lumora dashboard (no dependencies).
 *
 * LumoraChart.render(container, {title, labels: [date...], series: [{key, name, values}]})
 * draws one polyline per series with a marker per point. Every marker carries
 * data-series / data-date / data-value (and a <title> tooltip); a visually hidden table
 * repeats the numbers for screen readers.
 */
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#16a34a", "#9333ea", "#dc2626", "#ea580c", "#0891b2"];
  const W = 720, H = 260, PAD = { l: 44, r: 30, t: 12, b: 34 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function render(container, spec) {
    container.textContent = "";
    const labels = spec.labels || [];
    const series = spec.series || [];
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
    const n = Math.max(labels.length, 1);
    const x = (i) => PAD.l + (n === 1 ? (W - PAD.l - PAD.r) / 2 : (i * (W - PAD.l - PAD.r)) / (n - 1));
    const y = (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - v / max);

    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "linechart",
      "aria-labelledby": "", preserveAspectRatio: "xMidYMid meet" });
    const titleId = "chart-title-" + Math.random().toString(36).slice(2);
    svg.setAttribute("aria-labelledby", titleId);
    el("title", { id: titleId }, svg).textContent = spec.title || "Chart";

    const grid = el("g", { class: "grid" }, svg);
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }, grid);
      el("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, grid)
        .textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
    }
    const every = Math.max(1, Math.ceil(labels.length / 8));
    labels.forEach((label, i) => {
      if ((labels.length - 1 - i) % every !== 0) return;
      el("text", { x: x(i), y: H - PAD.b + 18, "text-anchor": "middle", class: "tick" }, grid)
        .textContent = label.slice(5);
    });

    series.forEach((s, si) => {
      const color = COLORS[si % COLORS.length];
      const g = el("g", { class: "series", "data-series": s.key }, svg);
      el("polyline", { points: s.values.map((v, i) => `${x(i)},${y(v)}`).join(" "),
        fill: "none", stroke: color, "stroke-width": 2 }, g);
      s.values.forEach((v, i) => {
        const c = el("circle", { cx: x(i), cy: y(v), r: 3.5, fill: color, class: "point",
          "data-series": s.key, "data-date": labels[i], "data-value": v }, g);
        el("title", {}, c).textContent = `${s.name} on ${labels[i]}: ${v}`;
      });
    });
    container.appendChild(svg);

    const legend = document.createElement("ul");
    legend.className = "legend";
    series.forEach((s, si) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch swatch-" + (si % COLORS.length);
      li.appendChild(sw);
      li.appendChild(document.createTextNode(`${s.name} (${s.values.reduce((a, b) => a + b, 0)})`));
      legend.appendChild(li);
    });
    container.appendChild(legend);

    const table = document.createElement("table");
    table.className = "sr-only";
    const cap = document.createElement("caption");
    cap.textContent = spec.title || "Chart data";
    table.appendChild(cap);
    const head = table.insertRow();
    ["Date", ...series.map((s) => s.name)].forEach((h) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = h;
      head.appendChild(th);
    });
    labels.forEach((label, i) => {
      const row = table.insertRow();
      row.insertCell().textContent = label;
      series.forEach((s) => { row.insertCell().textContent = String(s.values[i]); });
    });
    container.appendChild(table);
  }

  window.LumoraChart = { render };
})();
