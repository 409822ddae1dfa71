// Playground: submit a prompt to /v1/jobs, follow /v1/jobs/<id>/stream, show routing and latency.
"use strict";

const $ = (id) => document.getElementById(id);
const RECENT_REFRESH_MS = 5000;
let source = null;

function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

function ms(value) {
  return typeof value === "number" ? `${Math.round(value)} ms` : "—";
}

function describeError(body) {
  const error = (body && body.error) || {};
  const fields = error.fields ? ` (${Object.keys(error.fields).join(", ")})` : "";
  return `${error.message || "request failed"}${fields}`;
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
  if (source) source.close();
  const answer = $("answer");
  answer.textContent = "";
  answer.dataset.chunks = "0";
  answer.setAttribute("aria-busy", "true");
  $("job-id").textContent = jobId;
  resetPanels();
  setStatus("Queued: routing…", "busy");
  source = new EventSource(`/v1/jobs/${encodeURIComponent(jobId)}/stream`);
  source.addEventListener("start", (event) => {
    const start = JSON.parse(event.data);
    answer.textContent = ""; // a retried generation starts over
    answer.dataset.chunks = "0";
    showRouting(start.routing, { tier: start.tier, model: start.model });
    setStatus(`Generating on the ${start.tier} tier…`, "busy");
  });
  source.addEventListener("token", (event) => {
    answer.textContent += JSON.parse(event.data).text;
    answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
  });
  source.addEventListener("final", (event) => {
    source.close();
    finish(JSON.parse(event.data));
  });
  source.addEventListener("timeout", (event) => {
    source.close();
    done(`Still running: ${JSON.parse(event.data).message}`, "error");
  });
  source.onerror = (event) => {
    if (event.data) { // the server's own `error` event (Redis unreachable): the job may still finish
      source.close();
      done(`${JSON.parse(event.data).error.message}; the job may still finish: follow it again`, "error");
      return;
    }
    // EventSource reconnects by itself (resuming after the last event); a closed one will not.
    if (source.readyState === EventSource.CLOSED) done("The stream was refused (unknown job?)", "error");
  };
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
  const tier = document.querySelector('input[name="tier"]:checked').value;
  const maxTokens = Number($("max-tokens").value);
  $("send").disabled = true;
  setStatus("Submitting…", "busy");
  try {
    const response = await fetch("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, tier, max_tokens: maxTokens }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(describeError(body));
    follow(body.id);
    refreshRecent();
  } catch (error) {
    setStatus(error.message, "error");
    $("send").disabled = false;
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

async function refreshRecent() {
  try {
    const response = await fetch("/v1/jobs?limit=10");
    if (!response.ok) return;
    const { jobs } = await response.json();
    const list = $("recent-list");
    const focused = document.activeElement && document.activeElement.dataset.jobId;
    list.replaceChildren(...jobs.map(recentItem));
    $("recent-empty").hidden = jobs.length > 0;
    if (focused) {
      const again = list.querySelector(`[data-job-id="${focused}"]`);
      if (again) again.focus(); // a refresh must not steal keyboard focus
    }
  } catch (_) {
    /* the next refresh tries again */
  }
}

function onPromptKey(event) {
  if (event.key !== "Enter" || event.isComposing || event.shiftKey) return;
  event.preventDefault();
  $("prompt-form").requestSubmit();
}

document.addEventListener("DOMContentLoaded", () => {
  $("prompt-form").addEventListener("submit", submitPrompt);
  $("prompt").addEventListener("keydown", onPromptKey);
  $("refresh-recent").addEventListener("click", refreshRecent);
  refreshRecent();
  setInterval(() => { if (!document.hidden) refreshRecent(); }, RECENT_REFRESH_MS);
});
