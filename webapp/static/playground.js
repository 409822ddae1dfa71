// Playground: submit a prompt to /v1/jobs, follow /v1/jobs/<id>/stream, show routing and latency.
// With API keys on, every call carries the key typed into #api-key (apikey.js keeps it in sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const RECENT_REFRESH_MS = 5000;
const STREAM_RETRIES = 3;
const STREAM_RETRY_MS = 1000;
let streaming = null; // the AbortController of the stream being followed

// The key field and every API call: webapp/static/apikey.js, shared with the dashboard.
const { ApiError, api } = ApiKey;

function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

function ms(value) {
  return typeof value === "number" ? `${Math.round(value)} ms` : "—";
}

function resetPanels() {
  for (const id of ["route-intent", "route-score", "route-tier", "route-rule", "route-model", "route-cached",
                    "route-top", "lat-queue", "lat-routing", "lat-first-token", "lat-total"]) {
    $(id).textContent = "—";
  }
  for (const bar of document.querySelectorAll(".bar")) bar.style.width = "0";
}

function showRouting(routing, extra) {
  routing = routing || {};
  $("route-intent").textContent = routing.intent ?? "—";
  $("route-score").textContent = typeof routing.score === "number"
    ? `${routing.score.toFixed(3)}` + (typeof routing.threshold === "number" ? ` (threshold ${routing.threshold})` : "")
    : "—";
  $("route-tier").textContent = extra.tier ?? routing.tier ?? "—";
  $("route-rule").textContent = routing.rule ?? "—";
  $("route-model").textContent = extra.model ?? "—";
  if (extra.cached !== undefined) $("route-cached").textContent = extra.cached ? "hit" : "miss";
  $("route-top").textContent = Array.isArray(routing.top)
    ? routing.top.map(([name, score]) => `${name} ${Number(score).toFixed(2)}`).join(" · ")
    : "—";
}

function showLatency(result) {
  const parts = { queue: result.queue_ms, routing: result.routing_ms, "first-token": result.first_token_ms,
                  total: result.latency_ms };
  const total = result.latency_ms || 1;
  for (const [name, value] of Object.entries(parts)) {
    $(`lat-${name}`).textContent = ms(value);
    $(`bar-${name}`).style.width = `${Math.max(0, Math.min(60, (60 * (value || 0)) / total))}%`;
  }
}

function follow(jobId) {
  if (streaming) streaming.abort(); // one stream at a time: choosing another job drops the last one
  streaming = new AbortController();
  const answer = $("answer");
  answer.textContent = "";
  answer.dataset.chunks = "0";
  answer.setAttribute("aria-busy", "true");
  $("job-id").textContent = jobId;
  resetPanels();
  setStatus("Queued: routing…", "busy");
  readStream(jobId, streaming.signal, handleEvent).catch((error) => {
    if (error.name !== "AbortError") done(error.message, "error");
  });
}

// What each event of a job's stream does to the page; true once the stream is over.
function handleEvent(event) {
  const data = JSON.parse(event.data);
  const answer = $("answer");
  if (event.event === "start") {
    answer.textContent = ""; // a retried generation starts over
    answer.dataset.chunks = "0";
    showRouting(data.routing, { tier: data.tier, model: data.model });
    setStatus(`Generating on the ${data.tier} tier…`, "busy");
  } else if (event.event === "token") {
    answer.textContent += data.text;
    answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
  } else if (event.event === "final") {
    finish(data);
    return true;
  } else if (event.event === "timeout") {
    done(`Still running: ${data.message}`, "error");
    return true;
  } else if (event.event === "error") { // Redis unreachable: the job may still finish
    done(`${data.error.message}; the job may still finish: follow it again`, "error");
    return true;
  }
  return false;
}

// Follow /v1/jobs/<id>/stream with fetch rather than EventSource, which cannot send the
// Authorization header. Like EventSource, a dropped connection resumes after the last event seen.
async function readStream(jobId, signal, onEvent) {
  let lastId = "";
  for (let attempt = 0; attempt <= STREAM_RETRIES; attempt += 1) {
    if (attempt) await pause(STREAM_RETRY_MS, signal);
    const headers = lastId ? { "Last-Event-ID": lastId } : {};
    let response;
    try {
      response = await api(`/v1/jobs/${encodeURIComponent(jobId)}/stream`, { headers, signal });
    } catch (error) {
      if (error.name === "AbortError" || error instanceof ApiError) throw error;
      continue; // the network failed before an answer: try again
    }
    try {
      for await (const event of sseEvents(response.body, signal)) {
        if (event.id) lastId = event.id;
        if (onEvent(event)) return;
      }
    } catch (_) {
      /* the connection broke mid-stream: resume below */
    }
    signal.throwIfAborted(); // following another job ended this stream: no reconnect
  }
  throw new Error("The stream broke off; the job may still finish: follow it again");
}

function pause(delayMs, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) { reject(signal.reason); return; }
    const timer = setTimeout(resolve, delayMs);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

// Server-Sent Events from a response body: yields {event, data, id}; comments (keep-alives) are skipped.
async function* sseEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (event) yield event;
    }
  }
}

function parseEvent(block) {
  const event = { event: "message", data: null, id: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "event" || field === "id") event[field] = value;
  }
  if (!data.length) return null;
  event.data = data.join("\n");
  return event;
}

function finish(result) {
  if (result.status !== "succeeded") {
    const detail = result.error && result.error.message ? `: ${result.error.message}` : "";
    done(`Job ${result.status}${detail}`, "error");
    return;
  }
  const answer = $("answer");
  if (!answer.textContent && result.response) answer.textContent = result.response; // answered without streaming
  showRouting(result.routing || { intent: result.intent, score: result.score, tier: result.tier },
              { tier: result.tier, model: result.model_used, cached: result.cached });
  showLatency(result);
  done(`Done: ${result.tokens ?? 0} tokens in ${ms(result.latency_ms)}`, "done");
}

function done(text, state) {
  setStatus(text, state);
  $("answer").setAttribute("aria-busy", "false");
  $("send").disabled = false;
  refreshRecent();
}

async function submitPrompt(event) {
  event.preventDefault();
  const prompt = $("prompt").value;
  if (!prompt.trim()) {
    setStatus("Type a prompt first.", "error");
    $("prompt").focus();
    return;
  }
  if (ApiKey.required() && !ApiKey.current()) {
    ApiKey.showProblem("Enter your API key first.");
    setStatus("An API key is needed.", "error");
    $("api-key").focus();
    return;
  }
  const tier = document.querySelector('input[name="tier"]:checked').value;
  const maxTokens = Number($("max-tokens").value);
  $("send").disabled = true;
  setStatus("Submitting…", "busy");
  try {
    const response = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, tier, max_tokens: maxTokens }),
    });
    follow((await response.json()).id);
    refreshRecent();
  } catch (error) {
    setStatus(error.message, "error");
    $("send").disabled = false;
    if (error.status === 401) $("api-key").focus(); // the fix is there
  }
}

function recentItem(job) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.jobId = job.id;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.dataset.status = job.status;
  badge.textContent = job.status;
  const prompt = document.createElement("span");
  prompt.className = "prompt";
  prompt.textContent = job.prompt || job.id;
  const meta = document.createElement("span");
  meta.className = "muted";
  meta.textContent = [job.tier, job.result ? ms(job.result.latency_ms) : ""].filter(Boolean).join(" · ");
  button.append(badge, prompt, meta);
  button.setAttribute("aria-label", `Show job: ${job.status}, ${job.tier || "not routed yet"}, ${job.prompt || job.id}`);
  button.addEventListener("click", () => follow(job.id));
  item.append(button);
  return item;
}

function showJobs(jobs) {
  const list = $("recent-list");
  const focused = document.activeElement && document.activeElement.dataset.jobId;
  list.replaceChildren(...jobs.map(recentItem));
  $("recent-empty").hidden = jobs.length > 0;
  if (focused) {
    const again = list.querySelector(`[data-job-id="${focused}"]`);
    if (again) again.focus(); // a refresh must not steal keyboard focus
  }
}

// The caller's recent jobs: with API keys on, /v1/jobs lists only the jobs of the key sent.
async function refreshRecent() {
  if (ApiKey.required() && !ApiKey.current()) return; // nothing to ask for yet: no 401 before the key is typed
  try {
    const response = await api("/v1/jobs?limit=10");
    showJobs((await response.json()).jobs);
  } catch (_) {
    /* a 401 is shown by the key field; otherwise the next refresh tries again */
  }
}

function onPromptKey(event) {
  if (event.key !== "Enter" || event.isComposing || event.shiftKey) return;
  event.preventDefault();
  $("prompt-form").requestSubmit();
}

document.addEventListener("DOMContentLoaded", () => {
  ApiKey.setUp({ onChange: () => showJobs([]), onUse: refreshRecent });
  $("prompt-form").addEventListener("submit", submitPrompt);
  $("prompt").addEventListener("keydown", onPromptKey);
  $("refresh-recent").addEventListener("click", refreshRecent);
  refreshRecent();
  setInterval(() => { if (!document.hidden) refreshRecent(); }, RECENT_REFRESH_MS);
});
