"""What makes two requests the same question: prompt normalisation, cache keys, cacheability."""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from jobs.request import job_messages

# Request fields that do not change the answer; every other field is part of the key. A
# `response_format` changes it only through the grammar made from it (its name, description and
# `strict` change nothing), and the grammar is part of the key. `priority` only orders the queue; it
# must stay out, or an answer stored after fair share lowered a job's priority would be kept under a
# key that the same request, looked up before, never finds. `escalate` only says whether a weak small answer
# may be redone on large (OpenAI streams default to false): keyed, it would split streamed from plain requests.
NOT_ANSWER_FIELDS = frozenset({"prompt", "messages", "cache", "stream", "response_format", "priority", "escalate"})
# Fields that only change which token a draw picks: a greedy (temperature 0) answer ignores them.
DRAW_FIELDS = frozenset({"top_p", "top_k", "min_p", "seed"})
SPACES = re.compile(r"\s+")
TRAILING_QUESTION_MARK = re.compile(r"(?<=[^\W\d_])[?.]+$")


def normalise_text(text: str) -> str:
    """Case, width, runs of spaces and a final '?' or '.' after a word do not change the question."""
    text = SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
    return TRAILING_QUESTION_MARK.sub("", text)


def greedy(job: dict) -> bool:
    return float(job.get("temperature", 0.0)) == 0.0


def deterministic(job: dict) -> bool:
    """Only reproducible answers are cached: temperature 0, or a draw from a given seed."""
    return greedy(job) or job.get("seed") is not None


def lookups_wanted(job: dict) -> bool:
    """False when the client asked to bypass the cache (`"cache": false` or `Cache-Control: no-cache`)."""
    return job.get("cache", True) is not False


def semantically_cacheable(job: dict, max_entries: int) -> bool:
    """Deterministic single questions with one answer only: a conversation's answer depends on more than
    its last words, a completion prompt is continued as written (a paraphrase continues differently),
    and of several answers one may have run out of tokens where the others did not."""
    return (max_entries > 0 and deterministic(job) and not job.get("messages")
            and not job.get("raw_prompt") and job.get("n", 1) == 1 and bool(job.get("prompt")))


def wants_embedding(job: dict, max_entries: int) -> bool:
    """Whether the job's prompt embedding is of use to the semantic cache (of `max_entries`): to look its
    answer up. A job that bypasses the lookup is not stored there either, so it needs none."""
    return semantically_cacheable(job, max_entries) and lookups_wanted(job)


def scope(job: dict) -> str:
    """Whose cache this is: answers are shared only within one API key (`key_id`), else 'public'."""
    return str(job.get("key_id") or "public")


def answer_settings(job: dict, *skip: str) -> dict:
    """The request fields other than the prompt that change the answer (max_tokens, temperature, ...)."""
    ignored = NOT_ANSWER_FIELDS | DRAW_FIELDS if greedy(job) else NOT_ANSWER_FIELDS
    return {k: v for k, v in job.items() if k not in ignored and k not in skip}


def exact_key(job: dict, models: dict[str, str]) -> str:
    """Hash of the normalised conversation plus everything else that changes the answer
    (`models`: the model id per tier, so that a changed model misses)."""
    # A completion prompt is continued exactly as written: case, spaces and a final '.' change the answer.
    as_is = (lambda text: text) if job.get("raw_prompt") else normalise_text
    material = {
        "messages": [[m.get("role", "user"), as_is(str(m.get("content", "")))] for m in job_messages(job)],
        "settings": answer_settings(job, "key_id"),
        "models": models,
        "scope": scope(job),
    }
    return _digest(material)


def semantic_namespace(job: dict, model_id: str, tier: str, dimensions: int) -> str:
    """Semantic entries are shared only between jobs with the same model, tier, key and settings
    (and embeddings of the same size, so that a changed embedding model cannot mix spaces).

    max_tokens is left out: an entry that stopped by itself within the budget also serves a
    larger budget (see SemanticCache), and keeping it out lets such entries be found at all.
    """
    material = {"model": model_id, "tier": tier, "scope": scope(job), "dimensions": dimensions,
                "settings": answer_settings(job, "key_id", "tier", "max_tokens")}
    return _digest(material)[:16]


def _digest(material: dict) -> str:
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()
