// The console's plots, drawn here as SVG from data the service has: an endpoint's live
// counters, accuracy by k from its verbose answers, and several endpoints compared on one
// test set. No library: a small chart function, the vote, and the loops that call endpoints.
"use strict";

(function () {
  const openknn = (window.openknn = window.openknn || {});
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0b63c4", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#e67700", "#5c940d"];

  function node(name, attrs, parent, text) {
    const e = document.createElementNS(SVG, name);
    for (const key of Object.keys(attrs)) e.setAttribute(key, String(attrs[key]));
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  // Round tick values covering [lo, hi], about `count` of them.
  function ticks(lo, hi, count, integer) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
    return out;
  }

  function label(v) {
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
    if (a >= 1) return v.toFixed(2).replace(/0$/, "").replace(/\.0$/, "");
    return v.toPrecision(2);
  }

  // chart(container, {series: [{name, points: [[x, y]], line}], x: {label, integer},
  //   y: {label, min, max}, marks: [{x, label}], height}): axes, grid, lines or points, legend.
  openknn.chart = function (container, opts) {
    container.textContent = "";
    const W = 640, H = opts.height || 240;
    const legend = opts.series.length > 1 && opts.legend !== false;
    const m = { l: 56, r: 16, t: legend ? 30 : 14, b: 40 };
    const pts = [].concat(...opts.series.map((s) => s.points.filter((p) => p[1] !== null && isFinite(p[1]))));
    const svg = node("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, container);
    if (opts.title) node("title", {}, svg, opts.title);
    if (!pts.length) {
      node("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg, opts.empty || "No data yet");
      return svg;
    }
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    let x0 = opts.x.min !== undefined ? Math.min(opts.x.min, ...xs) : Math.min(...xs);
    let x1 = opts.x.max !== undefined ? Math.max(opts.x.max, ...xs) : Math.max(...xs);
    let y0 = opts.y.min !== undefined ? opts.y.min : Math.min(...ys);
    let y1 = opts.y.max !== undefined ? opts.y.max : Math.max(...ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const pad = Math.abs(y0) * 0.05 || 1; y0 -= pad; y1 += pad; }
    if (opts.y.min === undefined) { const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad; }
    if (opts.x.pad) { const pad = (x1 - x0) * opts.x.pad; x0 -= pad; x1 += pad; }
    const sx = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
    const tick = (v) => String(Number(v.toPrecision(6)));
    for (const v of ticks(y0, y1, 5)) {
      if (v < y0 || v > y1) continue;
      node("line", { x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "grid" }, svg);
      node("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end" }, svg, tick(v));
    }
    for (const v of ticks(x0, x1, 8, opts.x.integer)) {
      if (v < x0 || v > x1) continue;
      node("line", { x1: sx(v), x2: sx(v), y1: H - m.b, y2: H - m.b + 4, class: "axis" }, svg);
      node("text", { x: sx(v), y: H - m.b + 16, "text-anchor": "middle" }, svg, tick(v));
    }
    node("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }, svg);
    node("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }, svg);
    node("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, svg, opts.x.label);
    node("text", { x: 12, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
                   transform: "rotate(-90 12 " + (m.t + H - m.b) / 2 + ")" }, svg, opts.y.label);
    for (const mark of opts.marks || []) {
      if (mark.x < x0 || mark.x > x1) continue;
      node("line", { x1: sx(mark.x), x2: sx(mark.x), y1: m.t, y2: H - m.b, class: "mark" }, svg);
      const right = sx(mark.x) > (m.l + W - m.r) / 2;  // the label on the roomier side
      node("text", { x: sx(mark.x) + (right ? -4 : 4), y: m.t + 10,
                     "text-anchor": right ? "end" : "start" }, svg, mark.label);
    }
    opts.series.forEach(function (s, i) {
      const color = s.color || COLORS[i % COLORS.length];
      const ok = s.points.filter((p) => p[1] !== null && isFinite(p[1]));
      if (s.line !== false && ok.length > 1) {
        const d = ok.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
        node("path", { d: d, fill: "none", stroke: color, "stroke-width": 2 }, svg);
      }
      for (const p of ok) {
        const dot = node("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.line === false ? 5 : 2.5, fill: color }, svg);
        node("title", {}, dot, s.name + ": " + label(p[0]) + ", " + label(p[1]));
        if (s.line === false) node("text", { x: sx(p[0]) + 8, y: sy(p[1]) - 6 }, svg, s.name);
      }
    });
    if (legend) {  // one line above the plot, left to right
      let x = m.l;
      opts.series.forEach(function (s, i) {
        node("rect", { x: x, y: 6, width: 10, height: 10, fill: s.color || COLORS[i % COLORS.length] }, svg);
        node("text", { x: x + 14, y: 15 }, svg, s.name);
        x += 24 + 6.5 * s.name.length;
      });
    }
    return svg;
  };

  // -- the endpoint's live counters ----------------------------------------------------------

  function figure(value, key) {
    if (value === null || value === undefined) return "–";
    if (key.endsWith("_ms")) return value < 10 ? value.toFixed(2) + " ms" : value.toFixed(1) + " ms";
    return value < 10 ? value.toFixed(2) : value.toFixed(0);
  }

  function metricsPanel() {
    const card = document.getElementById("metrics");
    if (!card) return;
    const rate = card.querySelector('[data-chart="rate"]');
    const latency = card.querySelector('[data-chart="latency"]');
    openknn.poll(2000, async function () {
      const answer = await fetch(card.dataset.metrics, { credentials: "same-origin" });
      if (!answer.ok) return true;
      const m = await answer.json();
      for (const e of card.querySelectorAll("[data-figure]")) {
        const key = e.dataset.figure;
        const now = m.latest ? m.latest[key] : null;
        // a window without requests has no latency: then the workers' whole histogram's
        const all = key.endsWith("_ms") && (now === null || now === undefined) ? m.totals[key] : null;
        const whole = all !== null && all !== undefined;
        e.textContent = whole ? figure(all, key) : figure(now, key);
        e.classList.toggle("whole", whole);  // marked: since the workers started
        e.title = whole ? "no requests in the last window: over every request since the workers started" : "";
      }
      for (const e of card.querySelectorAll("[data-total]")) {
        const v = m.totals[e.dataset.total];
        e.textContent = v === null || v === undefined ? "–" : String(Math.round(v));
      }
      const now = Date.now() / 1000;
      const at = (key) => m.series.map((p) => [p.time - now, p[key]]);
      openknn.chart(rate, { series: [{ name: "requests/s", points: at("requests_per_s") },
                                     { name: "errors/s", points: at("errors_per_s") }],
                            x: { label: "seconds ago", min: -60, max: 0 },
                            y: { label: "per second", min: 0 },
                            height: 190, empty: "Waiting for a second reading" });
      openknn.chart(latency, { series: [{ name: "p50 ms", points: at("p50_ms") },
                                        { name: "p99 ms", points: at("p99_ms") }],
                               x: { label: "seconds ago", min: -60, max: 0 },
                               y: { label: "latency (ms)", min: 0 },
                               height: 190, empty: "No requests in the window" });
      card.dataset.readings = String(Number(card.dataset.readings || 0) + 1);
      return true;
    }, true);
  }

  // -- accuracy by k -------------------------------------------------------------------------

  async function testSet(url, form) {
    const query = new URLSearchParams({ uri: form.elements.uri.value, rows: form.elements.rows.value,
                                        content_type: form.elements.content_type.value });
    const answer = await fetch(url + "?" + query.toString(), { credentials: "same-origin" });
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.message || answer.status);
    return data;
  }

  function batches(data, size) {
    const lines = data.csv.split("\n").filter((l) => l.length);
    const out = [];
    for (let i = 0; i < lines.length; i += size) {
      out.push({ body: lines.slice(i, i + size).join("\n") + "\n", labels: data.labels.slice(i, i + size) });
    }
    return out;
  }

  function predictions(answer) {
    if (answer.status !== 200) throw new Error("the endpoint answered " + answer.status + ": " + answer.body.slice(0, 300));
    return JSON.parse(answer.body).predictions;
  }

  // The classifier's vote over a row's first k labels: the most frequent, ties to the smallest
  // (openknn's rule, decision 2); the regressor's mean.
  openknn.vote = function (labels) {
    const counts = new Map();
    for (const v of labels) counts.set(v, (counts.get(v) || 0) + 1);
    let best = null, most = -1;
    for (const [v, n] of counts) if (n > most || (n === most && v < best)) { best = v; most = n; }
    return best;
  };

  // curve(neighbours, truth, regressor): accuracy (or mean squared error) for k = 1..K.
  openknn.curve = function (neighbours, truth, regressor) {
    const K = Math.min(...neighbours.map((l) => l.length));
    const out = [];
    for (let k = 1; k <= K; k++) {
      let total = 0;
      neighbours.forEach(function (labels, i) {
        const first = labels.slice(0, k);
        if (regressor) {
          const mean = first.reduce((a, b) => a + b, 0) / k;
          total += (mean - truth[i]) * (mean - truth[i]);
        } else if (openknn.vote(first) === truth[i]) {
          total += 1;
        }
      });
      out.push([k, total / neighbours.length]);
    }
    return out;
  };

  async function verboseLabels(url, parts, status, what) {
    const neighbours = [];
    for (let i = 0; i < parts.length; i++) {
      status.textContent = what + ": request " + (i + 1) + " of " + parts.length + " (verbose)…";
      const answer = await openknn.invoke(url, parts[i].body, "text/csv", "application/json; verbose=true");
      for (const p of predictions(answer)) neighbours.push(p.labels);
    }
    return neighbours;
  }

  function table(element, head, rows) {
    element.textContent = "";
    const tr = element.createTHead().insertRow();
    for (const h of head) { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); }
    const body = element.createTBody();
    for (const row of rows) {
      const r = body.insertRow();
      if (row.key !== undefined) r.dataset.key = String(row.key);
      for (const cell of row.cells) r.insertCell().textContent = cell;
    }
  }

  function accuracyByK() {
    const form = document.getElementById("accuracy");
    if (!form) return;
    const status = document.getElementById("accuracy-status");
    const regressor = form.dataset.predictor === "regressor";
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        status.textContent = "Reading the test set…";
        const data = await testSet(form.dataset.testset, form);
        const parts = batches(data, 100);
        const neighbours = await verboseLabels(form.dataset.url, parts, status, "Endpoint");
        const curve = openknn.curve(neighbours, data.labels, regressor);
        const metric = regressor ? "mean squared error" : "accuracy";
        const k = Number(form.dataset.k);
        openknn.chart(document.getElementById("accuracy-chart"), {
          series: [{ name: metric, points: curve }], x: { label: "k", integer: true },
          y: { label: metric }, marks: k ? [{ x: k, label: "the model's k" }] : [], height: 280 });
        table(document.getElementById("accuracy-table"), ["k", metric],
              curve.map((p) => ({ key: p[0], cells: [String(p[0]), p[1].toFixed(4)] })));
        status.textContent = metric + " of " + data.rows + " rows (" + data.sources.length +
          " object" + (data.sources.length > 1 ? "s" : "") + ") for k = 1…" + curve.length + ".";
        status.dataset.done = "1";
      } catch (err) {
        status.textContent = "Failed: " + err.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- endpoints compared ----------------------------------------------------------------------

  function quantile(values, q) {
    const s = values.slice().sort((a, b) => a - b);
    const at = (s.length - 1) * q, lo = Math.floor(at), hi = Math.ceil(at);
    return s[lo] + (s[hi] - s[lo]) * (at - lo);
  }

  async function measure(url, parts, status, name) {
    const times = [];
    let right = 0, squared = 0, rows = 0;
    const began = performance.now();
    for (let i = 0; i < parts.length; i++) {
      status.textContent = name + ": request " + (i + 1) + " of " + parts.length + "…";
      const t0 = performance.now();
      const answer = await openknn.invoke(url, parts[i].body, "text/csv", "application/json");
      times.push(performance.now() - t0);
      predictions(answer).forEach(function (p, j) {
        const truth = parts[i].labels[j];
        if (p.predicted_label === truth) right += 1;
        squared += (p.predicted_label - truth) * (p.predicted_label - truth);
        rows += 1;
      });
    }
    const seconds = (performance.now() - began) / 1000;
    return { accuracy: right / rows, mse: squared / rows, p50: quantile(times, 0.5),
             p99: quantile(times, 0.99), rowsPerS: rows / seconds, rows: rows };
  }

  function compare() {
    const form = document.getElementById("compare");
    if (!form) return;
    const status = document.getElementById("compare-status");
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const names = Array.from(form.querySelectorAll('input[name="endpoint"]:checked')).map((e) => e.value);
      const button = form.querySelector("button");
      if (!names.length) { status.textContent = "Pick at least one endpoint."; return; }
      button.disabled = true;
      try {
        status.textContent = "Reading the test set…";
        const data = await testSet(form.dataset.testset, form);
        const parts = batches(data, Math.max(1, Number(form.elements.batch.value) || 100));
        const regressor = !data.labels.every((v) => Number.isInteger(v));
        const metric = regressor ? "mean squared error" : "accuracy";
        const results = [];
        for (const name of names) {
          const url = form.dataset.invoke + encodeURIComponent(name) + "/invoke";
          const r = await measure(url, parts, status, name);
          r.name = name;
          r.curve = openknn.curve(await verboseLabels(url, parts, status, name), data.labels, regressor);
          r.value = regressor ? r.mse : r.accuracy;
          results.push(r);
        }
        openknn.chart(document.getElementById("compare-scatter"), {
          series: results.map((r) => ({ name: r.name, points: [[r.p50, r.value]], line: false })),
          x: { label: "median latency per request of " + parts[0].labels.length + " rows (ms)", pad: 0.15 },
          y: { label: metric }, height: 280, legend: false });
        openknn.chart(document.getElementById("compare-curves"), {
          series: results.map((r) => ({ name: r.name, points: r.curve })),
          x: { label: "k", integer: true }, y: { label: metric }, height: 280, legend: true });
        table(document.getElementById("compare-table"),
              ["endpoint", "rows", metric, "p50 ms", "p99 ms", "rows/s"],
              results.map((r) => ({ key: r.name, cells: [r.name, String(r.rows), r.value.toFixed(4),
                                                       r.p50.toFixed(1), r.p99.toFixed(1), r.rowsPerS.toFixed(0)] })));
        status.textContent = names.length + " endpoint" + (names.length > 1 ? "s" : "") + " on " +
          data.rows + " rows, " + parts.length + " request" + (parts.length > 1 ? "s" : "") +
          " each (and as many verbose ones).";
        status.dataset.done = "1";
      } catch (err) {
        status.textContent = "Failed: " + err.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    metricsPanel();
    accuracyByK();
    compare();
  });
})();
