// Dashboard: asks GET /v1/dashboard every few seconds and draws its figures with Chart.js (vendored in
// static/vendor/). With API keys on, every call carries the key typed into #api-key (apikey.js).
// Nothing from the server is put into the page as HTML: text goes through textContent, and Chart.js
// draws labels on the canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY_POINTS = 60; // throughput samples kept by the page (three minutes at the default refresh)
const COLORS = {
  blue: "#0b5cad", lightBlue: "#7fb0e6", orange: "#e36209", lightOrange: "#f5b380", purple: "#8250df",
  amber: "#9a6700", green: "#1a7f37", red: "#cf222e", grey: "#8c959f",
};
const PALETTE = ["#0b5cad", "#e36209", "#1a7f37", "#8250df", "#9a6700", "#cf222e", "#1b7c83", "#bf3989", "#57606a"];
// The parts of a job's latency, in the order they happen (GET /v1/dashboard: jobs[].split_ms).
const SPLIT = [
  ["queue", "Queue", COLORS.amber], ["routing", "Routing", COLORS.purple],
  ["first_token", "First token", COLORS.orange], ["generation", "Generation", COLORS.blue],
  ["cache", "Answered from cache", COLORS.green],
];
const charts = {};
const throughputHistory = { labels: [], jobs: [], tokens: [] };
let loading = false;

// ---------------------------------------------------------------- charts

function baseOptions(extra = {}) {
  return {
    responsive: true,
    maintainAspectRatio: false, // the box's CSS height decides, so narrow screens keep readable charts
    animation: false, // redrawn every few seconds: motion would only distract
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    ...extra,
  };
}

function msAxis(stacked = false) {
  return { beginAtZero: true, stacked, title: { display: true, text: "ms" } };
}

function makeChart(id, type, datasets, options) {
  charts[id] = new Chart($(id), { type, data: { labels: [], datasets }, options: baseOptions(options) });
}

function makeCharts() {
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  const line = (label, color, axis) => ({ label, data: [], borderColor: color, backgroundColor: color, yAxisID: axis,
                                          tension: 0.2 });
  const rateAxis = (position, unit) => ({ beginAtZero: true, position, title: { display: true, text: unit } });
  const lines = [line("jobs/s", COLORS.blue, "jobs"), line("tokens/s", COLORS.orange, "tokens")];
  makeChart("chart-throughput", "line", lines,
            { scales: { jobs: rateAxis("left", "jobs/s"),
                        tokens: { ...rateAxis("right", "tokens/s"), grid: { drawOnChartArea: false } },
                        x: { ticks: { maxTicksLimit: 6 } } } });
  makeChart("chart-latency", "bar", [
    { label: "total p50", data: [], backgroundColor: COLORS.blue },
    { label: "total p95", data: [], backgroundColor: COLORS.lightBlue },
    { label: "first token p50", data: [], backgroundColor: COLORS.orange },
    { label: "first token p95", data: [], backgroundColor: COLORS.lightOrange },
  ], { scales: { y: msAxis() } });
  makeChart("chart-queues", "bar", [
    { label: "waiting", data: [], backgroundColor: COLORS.blue },
    { label: "live workers", data: [], backgroundColor: COLORS.green },
  ], { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } });
  const noLegend = { legend: { display: false } };
  makeChart("chart-cache", "bar", [{ label: "hit ratio", data: [], backgroundColor: [COLORS.green, COLORS.purple] }],
            { plugins: noLegend, scales: { y: { beginAtZero: true, max: 100, title: { display: true, text: "%" } } } });
  makeChart("chart-tiers", "doughnut", [{ label: "jobs per tier", data: [], backgroundColor: PALETTE }]);
  makeChart("chart-intents", "doughnut", [{ label: "jobs per intent", data: [], backgroundColor: PALETTE }]);
  const outcomeColors = [COLORS.green, COLORS.red, COLORS.grey];
  makeChart("chart-outcomes", "bar", [{ label: "jobs", data: [], backgroundColor: outcomeColors }],
            { indexAxis: "y", plugins: noLegend, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } });
  // minBarLength: a cache hit's few milliseconds would not show beside a generation's seconds.
  makeChart("chart-jobs", "bar", SPLIT.map(([part, label, color]) => ({
    label, data: [], backgroundColor: color, minBarLength: part === "cache" ? 4 : 0 })),
            { indexAxis: "y", scales: { x: msAxis(true), y: { stacked: true, ticks: { autoSkip: false } } } });
}

function setChart(id, labels, ...series) {
  const chart = charts[id];
  chart.data.labels = labels;
  series.forEach((data, index) => { chart.data.datasets[index].data = data; });
  chart.update();
}

// ---------------------------------------------------------------- formatting

function ms(value) {
  if (typeof value !== "number") return "—";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

function percent(ratio) {
  return typeof ratio === "number" ? `${Math.round(ratio * 100)}%` : "—";
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

function count(number, noun) {
  return typeof number === "number" ? `${number} ${noun}${number === 1 ? "" : "s"}` : `— ${noun}s`;
}

function text(id, value) {
  $(id).textContent = value;
}

// ---------------------------------------------------------------- figures

function describeSource(body) {
  const span = body.window || {};
  if (body.scope === "key") return `Your key's figures, over its last ${count(span.jobs, "job")}`;
  if (body.source === "prometheus") {
    return `Platform figures from Prometheus (rates over the last ${span.rate_s} s, counts over ${span.range}); `
      + "the last jobs from the platform";
  }
  return `Platform figures, the platform's own over the last ${count(span.jobs, "job")} (it keeps ${span.max_jobs})`;
}

function showSource(body) {
  const source = $("source");
  source.textContent = `${describeSource(body)} · updated ${clock(body.generated_at)}`;
  source.dataset.state = "ok";
  text("scope", body.scope === "key"
    ? "This key is not an admin key: it sees figures over its own jobs only. Queue depths, workers and other "
      + "keys' jobs are shown to admin keys only."
    : "");
  $("fallback").hidden = !body.fallback;
  text("fallback", body.fallback || "");
}

function showThroughput(throughput, generatedAt) {
  const points = throughputHistory;
  points.labels.push(clock(generatedAt));
  points.jobs.push(throughput.jobs_per_s);
  points.tokens.push(throughput.tokens_per_s);
  for (const list of Object.values(points)) list.splice(0, list.length - HISTORY_POINTS);
  setChart("chart-throughput", [...points.labels], [...points.jobs], [...points.tokens]);
  text("throughput-figure",
       `${throughput.jobs_per_s.toFixed(2)} jobs/s · ${throughput.tokens_per_s.toFixed(1)} tokens/s`);
}

function showLatency(latency) {
  const tiers = Object.keys(latency);
  const series = ["p50_ms", "p95_ms", "first_token_p50_ms", "first_token_p95_ms"]
    .map((field) => tiers.map((tier) => latency[tier][field]));
  setChart("chart-latency", tiers, ...series);
  text("latency-figure", tiers.map((tier) => {
    const figures = latency[tier];
    return figures.jobs ? `${tier}: p50 ${ms(figures.p50_ms)}, p95 ${ms(figures.p95_ms)}, first token p50 `
      + `${ms(figures.first_token_p50_ms)}` : `${tier}: no jobs`;
  }).join(" · "));
}

function showQueues(queues) {
  if (!queues) { // a key that is not an admin: platform-wide figures are not its to see
    setChart("chart-queues", [], [], []);
    text("queues-figure", "Platform-wide: shown to admin keys only.");
    return;
  }
  const names = Object.keys(queues);
  setChart("chart-queues", names, names.map((name) => queues[name].depth),
           names.map((name) => queues[name].workers));
  text("queues-figure", names.map((name) => `${name}: ${queues[name].depth ?? "—"} waiting, `
    + `${count(queues[name].workers, "worker")}`).join(" · "));
}

function showCache(cache) {
  const kinds = ["exact", "semantic"];
  const ratio = (kind) => (typeof cache[kind].ratio === "number" ? Math.round(cache[kind].ratio * 1000) / 10 : 0);
  setChart("chart-cache", kinds, kinds.map(ratio));
  text("cache-figure", kinds.map((kind) => `${kind} ${percent(cache[kind].ratio)} of ${cache[kind].lookups}`)
    .join(" · "));
}

function showRouting(routing) {
  const tiers = Object.keys(routing.tiers);
  const intents = Object.keys(routing.intents);
  setChart("chart-tiers", tiers, Object.values(routing.tiers));
  setChart("chart-intents", intents, Object.values(routing.intents));
  const total = Object.values(routing.tiers).reduce((sum, count) => sum + count, 0);
  text("routing-figure", total
    ? tiers.map((tier) => `${tier} ${percent(routing.tiers[tier] / total)}`).join(" · ")
      + (intents.length ? ` · most asked: ${intents[0]}` : "")
    : "No routed jobs yet.");
}

function showErrors(errors) {
  setChart("chart-outcomes", ["succeeded", "failed", "cancelled"],
           [errors.succeeded, errors.failed, errors.cancelled]);
  const finished = errors.succeeded + errors.failed + errors.cancelled;
  text("errors-figure", `${errors.failed} failed of ${finished} finished (${percent(errors.failed_ratio)}) · `
    + `${errors.cancelled} cancelled`);
  const items = (errors.recent || []).map((failure) => {
    const item = document.createElement("li");
    item.textContent = `${clock(failure.at)} · ${failure.tier || "not routed"} · ${failure.type || "error"}: `
      + `${failure.message || "no message"} (job ${failure.id})`;
    return item;
  });
  $("failures").replaceChildren(...items);
  $("failures-empty").hidden = items.length > 0;
}

function showJobs(jobs) {
  // Two short lines per job rather than one long one: a narrow screen keeps room for the bars.
  const labels = jobs.map((job) => [job.id.slice(0, 8),
                                    `${job.tier || "—"} · ${job.cached ? `${job.cached} hit` : job.status}`]);
  setChart("chart-jobs", labels, ...SPLIT.map(([part]) => jobs.map((job) => job.split_ms[part])));
  text("jobs-figure", jobs.length
    ? `${count(jobs.length, "job")}, newest first: where the time went.`
    : "No jobs yet.");
}

function showFigures(body) {
  showSource(body);
  showThroughput(body.throughput, body.generated_at);
  showLatency(body.latency);
  showQueues(body.queues);
  showCache(body.cache);
  showRouting(body.routing);
  showErrors(body.errors);
  showJobs(body.jobs);
}

// The key changed: what the page shows belonged to the previous one.
function clearFigures() {
  for (const list of Object.values(throughputHistory)) list.length = 0;
  for (const chart of Object.values(charts)) {
    chart.data.labels = [];
    for (const dataset of chart.data.datasets) dataset.data = [];
    chart.update();
  }
  for (const id of ["throughput-figure", "latency-figure", "queues-figure", "cache-figure", "routing-figure",
                    "errors-figure", "jobs-figure", "usage-key", "usage-month", "usage-today"]) {
    if ($(id)) text(id, "—"); // the usage panel is there with API keys on only
  }
  $("failures").replaceChildren();
}

// ---------------------------------------------------------------- usage (API keys on)

function showUsage(usage) {
  const month = usage.month;
  text("usage-key", usage.key_id);
  text("usage-month", month.budget
    ? `${month.tokens} tokens of ${month.budget} (${month.remaining} left)`
    : `${month.tokens} tokens (no budget)`);
  const today = usage.days[usage.days.length - 1];
  text("usage-today", today
    ? `${count(today.requests, "request")} · ${today.prompt_tokens} prompt + ${today.completion_tokens} `
      + `completion tokens · ${count(today.cache_hits, "cache hit")}`
    : "nothing yet");
}

async function refreshUsage() {
  if (!$("usage-card")) return;
  const response = await ApiKey.api("/v1/usage?days=1");
  showUsage(await response.json());
}

// ---------------------------------------------------------------- refresh

function showProblem(message) {
  const source = $("source");
  source.textContent = message;
  source.dataset.state = "error";
}

async function refresh() {
  if (loading) return; // a slow answer must not pile requests up
  if (ApiKey.required() && !ApiKey.current()) {
    showProblem("Enter an API key to see the figures.");
    return;
  }
  loading = true;
  try {
    const response = await ApiKey.api("/v1/dashboard");
    showFigures(await response.json());
    await refreshUsage();
  } catch (error) {
    showProblem(`Could not load the figures: ${error.message}`);
  } finally {
    loading = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  makeCharts();
  ApiKey.setUp({ onChange: clearFigures, onUse: refresh });
  refresh();
  const everyMs = 1000 * Number(document.body.dataset.refreshS || 3);
  setInterval(() => { if (!document.hidden) refresh(); }, everyMs);
});
