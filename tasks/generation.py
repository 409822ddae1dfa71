"""What the small and large generation tasks share: run the tier's engine and record the result."""
from __future__ import annotations

import logging
import time
from typing import Optional

from celery import Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from engines.base import Engine, EngineStalled
from engines.confidence import WEAK_ANSWER, AnswerStats, EscalationRule
from engines.provider import get_engine
from jobs.status import JobStatus
from tasks.answer import Answers, generation_request
from tasks.context import WorkerContext, worker_context
from tasks.delivery import fence, hand_over, settle, start_stage
from tasks.fallback import after_failure, escalated
from tasks.watch import GenerationWatch

log = logging.getLogger(__name__)


def run_generation(task: Task, tier: str, job: dict, routing: dict) -> Optional[dict]:
    """Generate the answer for `job` on this process's engine for `tier`.

    The job stops within one decode step when it is cancelled; past the tier's soft time limit, or
    when the tier's engine has stalled, it moves to the other tier (tasks.fallback) or fails.
    """
    context = worker_context()
    started = time.time()
    if not start_stage(task, JobStatus.GENERATING, generation_started_at=started, tokens_so_far=0):
        return None  # cancelled, or already finished by an earlier delivery
    engine = get_engine(tier)
    try:
        return _generate(context, task, tier, job, routing, engine, started)
    except EngineStalled as stalled:
        _fall_back(context, task, tier, job, routing, "engine_stalled", stalled, None)


def _generate(context: WorkerContext, task: Task, tier: str, job: dict, routing: dict, engine: Engine,
              started: float) -> dict:
    store, job_id, delivery = context.store, task.request.id, fence(task)
    if engine.stalled():  # jobs still queued for a wedged engine move on at once
        raise EngineStalled(f"the {tier} engine has not stepped for {engine.stalled_for():.0f}s")
    request = generation_request(job)
    asked_logprobs = request.logprobs is not None
    # An armed job's small answer is judged by its tokens' log-probabilities (tasks.escalation).
    judged = bool(routing.get("escalate")) and tier == "small" and "fallback" not in routing
    if judged and not asked_logprobs:
        request.logprobs = 0
    # A job whose caller waits for the whole answer (job["stream"] False: /generate, an OpenAI request
    # that does not stream) has no live stream: its stream holds the final event alone, and the tokens
    # cost no Redis writes. A redelivered task starts over: readers drop the text they had before a `start`.
    live = request.streamed
    if live:
        context.tokens.publish(job_id, "start", {"tier": tier, "model": engine.model_id, "routing": routing},
                               at_once=True, fence=delivery)
    answers, first_token_at, streamed = Answers(request, publish_logprobs=asked_logprobs), None, False
    deadline = started + task.soft_time_limit if task.soft_time_limit else None
    record: Optional[dict] = None  # the job's stamps (created_at, ...), for the result's timings
    try:
        with GenerationWatch(store, job_id, request.cancel, context.settings.cancel_poll_s, deadline,
                             delivery) as watch:
            for chunk in engine.generate(request):
                if first_token_at is None:
                    first_token_at = time.time()
                event = answers.add(chunk)
                if event is not None and live:
                    context.tokens.publish(job_id, "token", event, at_once=not streamed, fence=delivery)
                    streamed = True
                watch.tokens = answers.tokens
                if record is None:  # read while the engine goes on, not between the last token and the answer
                    record = store.get(job_id) or {}
    except BaseException:
        _flush_tokens(context, job_id, quiet=True)  # the failure that ended generation (EngineStalled) counts
        context.tokens.finish(job_id)
        raise
    _flush_tokens(context, job_id)  # every token is in the stream before the job moves on or ends
    context.tokens.finish(job_id)
    tokens = answers.tokens
    if watch.reason == "superseded":  # a later delivery runs the job: it answers and bills, not this one
        log.warning("job %s: delivery %s stopped, a later delivery runs the job", job_id, delivery)
        return None
    if answers.cancelled and watch.reason == "timeout":
        # What this tier generated before it gave up was work done: it is billed as the job moves on.
        _fall_back(context, task, tier, job, routing, "timeout", SoftTimeLimitExceeded(
            f"the {tier} tier did not finish within {task.soft_time_limit:g}s"), answers)
    finished = time.time()
    verdict = _judge(context, task, tier, job, routing, answers, started, finished) if judged else None
    result = {
        **answers.result_fields(with_logprobs=asked_logprobs),
        "model_used": engine.model_id,
        "tier": tier,
        "queue": (task.request.delivery_info or {}).get("routing_key"),
        "intent": routing["intent"],
        "score": routing["score"],
        "routing": routing,
        "cached": False,
        **_timings(record if record is not None else store.get(job_id) or {}, started, first_token_at or finished,
                   finished),
    }
    if "fallback" in routing:
        result["fallback"] = routing["fallback"]
    if "escalation" in routing:
        result["escalated"], result["escalation"] = True, routing["escalation"]
    elif judged:
        result["escalated"] = False
        if verdict is not None:
            result["escalation"] = {**verdict.as_dict(), "weak": False}
    if answers.cancelled:
        result["tokens_after_cancel"] = tokens - (watch.tokens_at_cancel or 0)
        # What came before the cancel; billed, since the tokens were generated all the same (once: by
        # the delivery whose write landed).
        if store.move(job_id, JobStatus.CANCELLED, fence=delivery, result=result, finished_at=finished):
            context.meter.record_job(job.get("key_id"), tier, result)
        return result
    final = ("final", {"id": job_id, "status": JobStatus.SUCCEEDED.value, **result})
    if store.move(job_id, JobStatus.SUCCEEDED, event=final, fence=delivery, result=result, finished_at=finished):
        settle(task)
        context.meter.record_job(job.get("key_id"), tier, result)
        _remember_answer(context, job_id, job, result)
    return result


def _flush_tokens(context: WorkerContext, job_id: str, quiet: bool = False) -> None:
    """Write the pending token events; if Redis refuses, drop the job's (see TokenBatches.discard)."""
    try:
        context.tokens.flush()
    except Exception:
        context.tokens.discard(job_id)
        if not quiet:
            raise


def _remember_answer(context: WorkerContext, job_id: str, job: dict, result: dict) -> None:
    try:
        context.exact_cache.store(job, result)
        context.semantic_cache.store(job_id, job, result)
    except Exception:  # a cache that cannot store must not turn a good answer into an error
        log.exception("could not cache the answer of job %s", job_id)


def _judge(context: WorkerContext, task: Task, tier: str, job: dict, routing: dict, answers: Answers,
           started: float, finished: float) -> Optional[AnswerStats]:
    """The small answer's figures; a weak answer (tasks.escalation) moves the job to the large tier instead
    (the small tier's tokens are billed first, as work done). None: nothing to judge (no token)."""
    if answers.cancelled:
        return None
    rule = EscalationRule.from_settings(context.settings)
    stats = rule.stats(entry["logprob"] for entry in answers.answers[0].logprobs)
    if not rule.weak(stats):
        return stats
    details = {**stats.as_dict(), "small_tokens": answers.tokens, "small_prompt_tokens": answers.prompt_tokens,
               "small_latency_ms": round((finished - started) * 1000, 1), "small_model": get_engine(tier).model_id}
    moved = escalated(routing, WEAK_ANSWER, details)
    if moved is None:
        return stats
    _move(context, task, tier, job, moved, f"weak answer (mean log-probability {stats.mean_logprob:.3f}, "
                                           f"minimum {stats.min_logprob:.3f}, low share {stats.low_share:.2f})",
          answers, logging.INFO)  # routine, not a fault
    return stats  # not reached: _move raises


def _fall_back(context: WorkerContext, task: Task, tier: str, job: dict, routing: dict, reason: str,
               failure: Exception, work_done: Optional[Answers]) -> None:
    """Hand the job to the other tier (same job id), or fail it with `failure` when it may not fall back;
    `work_done` (what this tier generated first) is billed either way."""
    moved = after_failure(context.settings, routing, reason)
    if moved is None:
        _bill(context, job, work_done)
        raise failure
    _move(context, task, tier, job, moved, failure, work_done)


def _move(context: WorkerContext, task: Task, tier: str, job: dict, moved: dict, why: object,
          work_done: Optional[Answers], level: int = logging.WARNING) -> None:
    """Queue the job again on `moved`'s tier (same job id), replacing this task; `work_done` is billed once,
    by the delivery whose move landed."""
    if not context.store.move(task.request.id, JobStatus.QUEUED, fence=fence(task), routing=moved):
        raise Ignore()  # a later delivery runs the job (or it ended): no second task for it
    _bill(context, job, work_done)
    log.log(level, "job %s moves from the %s tier to %s: %s", task.request.id, tier, moved["tier"], why)
    hand_over(task, job, moved)


def _bill(context: WorkerContext, job: dict, work_done: Optional[Answers]) -> None:
    if work_done is not None:
        context.meter.record(job.get("key_id"), prompt_tokens=work_done.prompt_tokens,
                             completion_tokens=work_done.tokens)


def _timings(record: dict, started: float, first_token_at: float, finished: float) -> dict:
    created = record.get("created_at", started)
    routing_started = record.get("routing_started_at", created)
    routed = record.get("routed_at", routing_started)
    ms = lambda seconds: round(seconds * 1000, 1)  # noqa: E731
    return {
        "latency_ms": ms(finished - created),
        "queue_ms": ms((routing_started - created) + (started - routed)),
        "routing_ms": ms(routed - routing_started),
        "first_token_ms": ms(first_token_at - started),
        "generation_ms": ms(finished - started),
    }
