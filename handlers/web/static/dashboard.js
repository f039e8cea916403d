// KPI dashboard: loads /api/kpi and draws cards, SVG charts and breakdown tables.
// Every value goes in through textContent or SVG attributes built with the DOM API,
// never parsed as HTML, so data can never become markup; no inline script (strict CSP).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const BREAKDOWNS = ["channel", "agent", "topic", "touchpoint", "stage", "cause"];
  const CAUSE_BARS = 6; // bars in the complaints-by-cause chart
  let labels = {};
  let today = null;
  let chartIds = 0;

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const label = (key, fallback) => (key in labels ? labels[key] : fallback || key);
  const dash = () => label("no_data", "—");

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- dates (YYYY-MM-DD strings, computed in UTC so the browser's zone never shifts them)
  function addDays(day, n) {
    const d = new Date(day + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  function query(from, to, extra) {
    const p = new URLSearchParams();
    if (from) p.set("from", from);
    if (to) p.set("to", to);
    for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
    return p.toString();
  }

  // --- numbers for the chart tables (the cards come formatted by the server)
  function number(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return dash();
    const lang = document.documentElement.lang === "fr" ? "fr-FR" : "en-GB";
    return new Intl.NumberFormat(lang, { maximumFractionDigits: digits || 0 }).format(value);
  }

  // --- loading
  let latest = 0;

  async function load(from, to) {
    const request = ++latest; // a slower earlier answer must not overwrite a newer one
    const status = $("#status");
    status.textContent = label("dash_loading", "Loading…");
    status.classList.remove("error");
    let response;
    try {
      response = await fetch("/api/kpi?" + query(from, to), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
    } catch (err) {
      if (request === latest) showError(String(err));
      return;
    }
    const data = await response.json().catch(() => null);
    if (request !== latest) return;
    if (!response.ok || !data) {
      showError(data && data.error ? data.error : "HTTP " + response.status);
      return;
    }
    render(data);
    status.textContent = "";
    loadGaps(from, to, request);
  }

  // The questions the bot could not answer, grouped by meaning (GET /api/kb-gaps).
  async function loadGaps(from, to, request) {
    const section = $("#gaps");
    let data = null;
    try {
      const response = await fetch("/api/kb-gaps?" + query(from, to), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      data = response.ok ? await response.json() : null;
    } catch (err) {
      data = null;
    }
    if (request !== latest) return;
    section.hidden = !data;
    if (!data) return;
    const names = data.labels;
    $("h2", section).textContent = names.title;
    table(
      $(".table", section),
      [names.col_question, names.col_count, names.col_examples],
      data.gaps.map((g) => [g.question, String(g.count), g.examples.slice(1).join(" · ")]),
    );
  }

  function showError(reason) {
    const status = $("#status");
    status.classList.add("error");
    const template = label("dash_error", "Could not load the KPIs: {reason}");
    status.textContent = template.replace("{reason}", reason);
  }

  // --- rendering
  function render(data) {
    labels = data.labels || {};
    today = data.dates.today;
    document.documentElement.lang = data.language;
    for (const node of $$("[data-label]")) {
      const key = node.getAttribute("data-label");
      if (key in labels) node.textContent = labels[key];
    }
    document.title = label("dash_title", document.title);
    $("#period-text").textContent = data.display.period;
    $("#from").value = data.dates.from;
    $("#to").value = data.dates.to;

    const shown = data.display.figures;
    for (const node of $$("[data-kpi]")) {
      const key = node.getAttribute("data-kpi");
      node.textContent = key in shown ? shown[key] : dash();
    }
    const nps = $('[data-kpi="nps"]');
    nps.setAttribute("data-value", data.nps.score === null ? "" : String(data.nps.score));

    renderTrend(data.series);
    renderHistogram(data.series.frt_histogram);
    renderAbandonment(data.series);
    renderCauses(data.series.causes || []);
    for (const by of BREAKDOWNS) renderBreakdown(by, data.display, data.dates);
  }

  function pointLabel(series, point) {
    const unit = series.granularity === "week" ? label("dash_week", "Week of") + " " : "";
    return unit + point.label;
  }

  function renderTrend(series) {
    const points = series.trend;
    const lines = [
      { name: "NPS", cls: "s1", values: points.map((p) => p.nps.score) },
      { name: "CSAT %", cls: "s2", values: points.map((p) => p.csat.score_pct) },
    ];
    const figure = $("#chart-trend");
    const title = label("dash_trend", "NPS and CSAT");
    drawLines(figure, title, points.map((p) => p.label), lines, -100, 100);
    table(
      $(".data", figure),
      [label("dash_day", "Day"), "NPS", "n", "CSAT %", "n"],
      points.map((p) => [
        pointLabel(series, p),
        number(p.nps.score, 1),
        number(p.nps.responses),
        number(p.csat.score_pct, 1),
        number(p.csat.responses),
      ]),
    );
  }

  function renderAbandonment(series) {
    const points = series.trend;
    const figure = $("#chart-abandonment");
    const name = label("dash_abandonment_trend", "Abandonment rate");
    const values = points.map((p) => p.abandonment_rate_pct);
    // Scaled to the data (rates are usually a few %), never beyond 100 %.
    const high = Math.min(100, 4 * step(Math.max(0, ...values.filter((v) => v !== null))));
    drawLines(figure, name, points.map((p) => p.label), [{ name: name + " %", cls: "s3", values: values }], 0, high);
    table(
      $(".data", figure),
      [label("dash_day", "Day"), "%", label("dash_abandoned", "Abandoned"), label("dash_started", "Started")],
      points.map((p) => [
        pointLabel(series, p),
        number(p.abandonment_rate_pct, 1),
        number(p.conversations.abandoned),
        number(p.conversations.started),
      ]),
    );
  }

  function renderHistogram(histogram) {
    const figure = $("#chart-frt");
    const series = [
      { name: label("chart_first", "First response"), cls: "s1", values: histogram.first },
      { name: label("chart_agent", "Agent"), cls: "s2", values: histogram.agent_first },
    ];
    drawBars(figure, label("dash_frt_distribution", "First response time"), histogram.labels, series);
    table(
      $(".data", figure),
      [label("dash_bucket", "Time"), series[0].name, series[1].name],
      histogram.labels.map((name, i) => [name, number(histogram.first[i]), number(histogram.agent_first[i])]),
    );
  }

  // Complaints by root cause: this period against the previous one of the same length.
  function renderCauses(causes) {
    const figure = $("#chart-causes");
    const series = [
      { name: label("chart_this_period", "This period"), cls: "s1", values: causes.map((c) => c.count) },
      { name: label("chart_previous_period", "Previous period"), cls: "s2", values: causes.map((c) => c.previous_count) },
    ];
    // Bars for the largest causes (the report's order), short names under them; every
    // cause and its full name is in the table beside the chart and in the chart data.
    const top = causes.slice(0, CAUSE_BARS);
    const short = (name) => (name.length > 14 ? name.slice(0, 13) + "…" : name);
    const bars = series.map((s) => ({ ...s, values: s.values.slice(0, CAUSE_BARS) }));
    drawBars(figure, label("dash_causes", "Complaint causes"), top.map((c) => short(c.name)), bars);
    table(
      $(".data", figure),
      [label("group_cause", "Cause"), series[0].name, label("col_share", "Share"), series[1].name],
      causes.map((c) => [
        c.name,
        number(c.count),
        c.share_pct === null || c.share_pct === undefined ? dash() : number(c.share_pct, 0) + " %",
        number(c.previous_count),
      ]),
    );
  }

  function renderBreakdown(by, shown, dates) {
    const section = $('.breakdown[data-by="' + by + '"]');
    $("a.csv", section).setAttribute("href", "/api/kpi.csv?" + query(dates.from, dates.to, { by: by }));
    table(
      $(".table", section),
      [label("group_" + by, by), ...shown.columns.map((c) => c.label)],
      shown.by[by].map((row) => [row.name, ...shown.columns.map((c) => row[c.key])]),
    );
  }

  function table(container, headers, rows) {
    const t = el("table");
    const head = el("tr");
    for (const h of headers) head.appendChild(el("th", { scope: "col" }, h));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    for (const row of rows) {
      const tr = body.appendChild(el("tr"));
      row.forEach((cell, i) => tr.appendChild(el(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : {}, cell)));
    }
    if (!rows.length) {
      const tr = body.appendChild(el("tr"));
      tr.appendChild(el("td", { colspan: String(headers.length) }, dash()));
    }
    container.replaceChildren(t);
  }

  // --- SVG charts
  const W = 560;
  const H = 240;
  const M = { top: 16, right: 28, bottom: 46, left: 44 };

  function frame(figure, title) {
    const id = "chart-title-" + ++chartIds;
    const root = svg("svg", {
      viewBox: "0 0 " + W + " " + H,
      role: "img",
      "aria-labelledby": id,
      preserveAspectRatio: "xMidYMid meet",
    });
    root.appendChild(svg("title", { id: id }, title));
    $(".plot", figure).replaceChildren(root);
    return root;
  }

  // The smallest of 1, 2, 2.5, 5 × 10^k that is at least x: round tick steps.
  function nice(x) {
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  // One of four whole tick steps reaching top.
  const step = (top) => Math.max(1, nice(top / 4));

  function noData(root, empty) {
    if (!empty) return;
    root.appendChild(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, dash()));
  }

  function yAxis(root, low, high, ticks) {
    const y = (v) => M.top + ((high - v) / (high - low)) * (H - M.top - M.bottom);
    for (let i = 0; i <= ticks; i++) {
      const v = low + ((high - low) * i) / ticks;
      root.appendChild(svg("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: "grid" }));
      root.appendChild(svg("text", { x: M.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, number(v)));
    }
    return y;
  }

  function xLabels(root, names, x) {
    const every = Math.max(1, Math.ceil(names.length / 8));
    names.forEach((name, i) => {
      if (i % every) return;
      root.appendChild(svg("text", { x: x(i), y: H - M.bottom + 16, class: "tick x", "text-anchor": "middle" }, name));
    });
  }

  function legend(root, series) {
    series.forEach((s, i) => {
      const x = M.left + i * 170;
      root.appendChild(svg("rect", { x: x, y: H - 16, width: 10, height: 10, class: "fill " + s.cls }));
      root.appendChild(svg("text", { x: x + 14, y: H - 7, class: "tick" }, s.name));
    });
  }

  function drawLines(figure, title, names, series, low, high) {
    const root = frame(figure, title);
    const y = yAxis(root, low, high, 4);
    const n = names.length;
    const x = (i) => M.left + (n <= 1 ? (W - M.left - M.right) / 2 : (i * (W - M.left - M.right)) / (n - 1));
    xLabels(root, names, x);
    for (const s of series) {
      // No data is a gap in the line, never a zero.
      let run = [];
      const flush = () => {
        if (run.length > 1) root.appendChild(svg("polyline", { points: run.join(" "), class: "line " + s.cls }));
        run = [];
      };
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return flush();
        run.push(x(i) + "," + y(v));
        const dot = root.appendChild(svg("circle", { cx: x(i), cy: y(v), r: 3, class: "fill " + s.cls }));
        dot.appendChild(svg("title", {}, names[i] + " — " + s.name + ": " + number(v, 1)));
      });
      flush();
    }
    noData(root, series.every((s) => s.values.every((v) => v === null || v === undefined)));
    legend(root, series);
  }

  function drawBars(figure, title, names, series) {
    const root = frame(figure, title);
    const high = 4 * step(Math.max(0, ...series.flatMap((s) => s.values)));
    const y = yAxis(root, 0, high, 4);
    const slot = (W - M.left - M.right) / names.length;
    const bar = (slot * 0.8) / series.length;
    const x = (i) => M.left + slot * i + slot / 2;
    xLabels(root, names, x);
    series.forEach((s, k) => {
      s.values.forEach((v, i) => {
        const left = M.left + slot * i + slot * 0.1 + k * bar;
        const rect = svg("rect", { x: left, y: y(v), width: bar, height: y(0) - y(v), class: "fill " + s.cls });
        rect.appendChild(svg("title", {}, names[i] + " — " + s.name + ": " + number(v)));
        root.appendChild(rect);
      });
    });
    noData(root, series.every((s) => s.values.every((v) => !v)));
    legend(root, series);
  }

  // --- the period picker
  function start() {
    const params = new URLSearchParams(window.location.search);
    const form = $("#period-form");
    const go = (from, to) => {
      const url = new URL(window.location.href);
      url.search = query(from, to);
      window.history.replaceState(null, "", url);
      load(from, to);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      go($("#from").value, $("#to").value);
    });
    for (const button of $$("button[data-days]")) {
      button.addEventListener("click", () => {
        const end = today ? addDays(today, 1) : $("#to").value; // "to" is exclusive
        if (!end) return;
        go(addDays(end, -Number(button.getAttribute("data-days"))), end);
      });
    }
    $("#from").value = params.get("from") || "";
    $("#to").value = params.get("to") || "";
    load(params.get("from"), params.get("to"));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
