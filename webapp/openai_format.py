"""How OpenAI's chat and legacy completion APIs map to jobs and back: the job a request queues, and
the response and stream chunks built from its result and events. One `Format` per API, so the
routes and the streaming loop (webapp.openai_stream) serve both."""
from __future__ import annotations

from typing import Optional

from webapp.openai_schemas import last_user_message
from webapp.sampling import DEFAULT_MAX_TOKENS, sampling_job_fields

DEFAULT_COMPLETION_MAX_TOKENS = 16  # legacy completions: OpenAI's default


def _common_job(body: dict, tier: str, max_tokens: int) -> dict:
    """The fields chat and completion jobs share: budget, temperature (0 when not given: reproducible
    and cacheable), tier, sampling, `n`, escalation."""
    temperature = body.get("temperature")
    job = {"max_tokens": max_tokens, "temperature": 0.0 if temperature is None else temperature, "tier": tier,
           **sampling_job_fields(body)}
    if (body.get("n") or 1) > 1:
        job["n"] = body["n"]
    # An OpenAI stream cannot take text back: escalating after small text went out would end it with
    # `job_restarted`, so a stream escalates only when the caller asks for it.
    escalate = body.get("escalate")
    if escalate is False or escalate is None and body.get("stream"):
        job["escalate"] = False
    if not body.get("stream"):
        job["stream"] = False  # the caller waits for the whole answer: no token events (tasks.generation)
    return job


def job_from_chat(body: dict, tier: str) -> dict:
    """The job a chat request queues: the messages for the model, the last user message for the router."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    job = {"prompt": last_user_message(body["messages"]),
           "messages": [{"role": m["role"], "content": m["content"]} for m in body["messages"]],
           **_common_job(body, tier, max_tokens)}
    if body.get("logprobs"):
        job["logprobs"] = body.get("top_logprobs") or 0
    return job


def completion_prompt(body: dict) -> str:
    prompt = body["prompt"]
    return prompt[0] if isinstance(prompt, list) else prompt


def job_from_completion(body: dict, tier: str) -> dict:
    """The job a legacy completion queues: the prompt continued as it is (`raw_prompt`: no chat template)."""
    job = {"prompt": completion_prompt(body), "raw_prompt": True,
           **_common_job(body, tier, body.get("max_tokens") or DEFAULT_COMPLETION_MAX_TOKENS)}
    if body.get("logprobs") is not None:
        job["logprobs"] = body["logprobs"]
    return job


def result_choices(result: dict) -> list[dict]:
    """The result's answers: `index`, `text`, `finish_reason` and `logprobs` (None unless asked for)."""
    if result.get("choices"):
        return [{**choice, "logprobs": choice.get("logprobs")} for choice in result["choices"]]
    return [{"index": 0, "text": result.get("response", ""), "finish_reason": result.get("finish_reason"),
             "logprobs": result.get("logprobs")}]


def finish_reason(reason: Optional[str]) -> str:
    return "length" if reason == "length" else "stop"


def usage(result: dict) -> dict:
    prompt, completion = result.get("prompt_tokens", 0), result.get("tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatFormat:
    """`chat.completion` responses and `chat.completion.chunk` stream chunks."""

    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def __init__(self, body: dict) -> None:
        self.body = body

    def choice(self, answer: dict) -> dict:
        logprobs = None if answer["logprobs"] is None else {"content": answer["logprobs"]}
        return {"index": answer["index"], "message": {"role": "assistant", "content": answer["text"]},
                "logprobs": logprobs, "finish_reason": finish_reason(answer["finish_reason"])}

    def opening(self, n: int) -> list[dict]:
        return [self._delta(i, {"role": "assistant", "content": ""}) for i in range(n)]

    def text(self, index: int, text: str, logprobs: Optional[list]) -> dict:
        return self._delta(index, {"content": text}, logprobs=None if logprobs is None else {"content": logprobs})

    def finish(self, index: int, reason: Optional[str]) -> dict:
        return self._delta(index, {}, finish_reason=finish_reason(reason))

    @staticmethod
    def _delta(index: int, delta: dict, finish_reason: Optional[str] = None, logprobs: Optional[dict] = None) -> dict:
        choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return choice


class CompletionFormat:
    """`text_completion` responses and stream chunks; `echo` puts the prompt before each answer, and
    log-probabilities take the legacy shape (tokens, token_logprobs, top_logprobs, text_offset)."""

    object = "text_completion"
    chunk_object = "text_completion"
    id_prefix = "cmpl-"

    def __init__(self, body: dict) -> None:
        self.echo = completion_prompt(body) if body.get("echo") else ""
        self._offsets: dict[int, int] = {}  # where each streamed answer's next token starts

    def choice(self, answer: dict) -> dict:
        logprobs = None if answer["logprobs"] is None else legacy_logprobs(answer["logprobs"], len(self.echo))
        return {"text": self.echo + answer["text"], "index": answer["index"], "logprobs": logprobs,
                "finish_reason": finish_reason(answer["finish_reason"])}

    def opening(self, n: int) -> list[dict]:
        return [self._text(i, self.echo, None) for i in range(n)] if self.echo else []

    def text(self, index: int, text: str, logprobs: Optional[list]) -> dict:
        offset = self._offsets.get(index, len(self.echo))
        self._offsets[index] = offset + len(text)
        return self._text(index, text, None if logprobs is None else legacy_logprobs(logprobs, offset))

    def finish(self, index: int, reason: Optional[str]) -> dict:
        return {"text": "", "index": index, "logprobs": None, "finish_reason": finish_reason(reason)}

    @staticmethod
    def _text(index: int, text: str, logprobs: Optional[dict]) -> dict:
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": None}


def legacy_logprobs(entries: list[dict], offset: int = 0) -> dict:
    """Chat-shaped log-probabilities in the legacy completions shape; offsets count from `offset`."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{alt["token"]: alt["logprob"] for alt in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}
