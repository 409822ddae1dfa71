"""The shape of a cached answer, and how a cache hit finishes a job without generation."""
from __future__ import annotations

import time
from typing import Optional

ANSWER_FIELDS = ("response", "model_used", "tier", "intent", "score", "routing", "tokens", "finish_reason",
                 "prompt_tokens", "choices", "logprobs")
# Only in answers that asked for them (n > 1, logprobs), or kept since (prompt_tokens: a cached answer
# reports its prompt's size, as OpenAI's usage does).
OPTIONAL_FIELDS = ("prompt_tokens", "choices", "logprobs")


def answer_fields(source: dict) -> dict:
    """The answer's own fields of a result or cache entry (optional ones only where present)."""
    return {k: source.get(k) for k in ANSWER_FIELDS if k not in OPTIONAL_FIELDS or source.get(k) is not None}


def storable(result: dict) -> bool:
    """A cancelled or empty generation is no answer to keep."""
    return result.get("finish_reason") in ("stop", "length") and bool(str(result.get("response", "")).strip())


def entry_from_result(job: dict, result: dict) -> dict:
    """What a cache keeps of a generated result, plus what it needs to judge a later match."""
    return {**answer_fields(result), "prompt": job.get("prompt"),
            "max_tokens": job.get("max_tokens"), "cached_at": time.time()}


def cached_result(entry: dict, kind: str, created_at: float, finished_at: float,
                  routing: Optional[dict] = None, similarity: Optional[float] = None) -> dict:
    """A job's result served from the cache.

    `routing` is this job's own routing decision when there is one (semantic hits);
    an exact hit reports the decision made for the cached answer.
    """
    routing = routing or entry["routing"]
    result = {**answer_fields(entry), "routing": routing, "intent": routing["intent"],
              "score": routing["score"], "cached": kind, "latency_ms": round((finished_at - created_at) * 1000, 1)}
    if similarity is not None:
        result["similarity"] = round(similarity, 4)
    return result


def finished_fields(result: dict, finished_at: float) -> dict:
    """The job record fields of a job answered from the cache."""
    return {"status": "succeeded", "routing": result["routing"], "result": result, "finished_at": finished_at}


def pointer_fields(result: dict, entry_key: str, finished_at: float) -> dict:
    """The record fields of an exact hit: the job's own few fields, and a pointer to the entry for the
    answer itself (`jobs.store` reads it through), so a repeated request costs a few hundred bytes."""
    own = {field: result[field] for field in result if field not in ANSWER_FIELDS}
    return {**finished_fields(result, finished_at), "result": own,
            "result_ref": {"key": entry_key, "fields": list(ANSWER_FIELDS)}}


def pointer_request(job: dict, preview_chars: int) -> dict:
    """What the record of an exact hit keeps of its request: its owner and the prompt's start (the
    recent list shows it); the rest is in the cache entry."""
    return {"key_id": job.get("key_id"), "prompt": str(job.get("prompt", ""))[:preview_chars], "cached": "exact"}
