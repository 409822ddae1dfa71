"""A job's answers as the engine produces them: the engine request built from the job, and each
answer's text, tokens, finish reason and log-probabilities gathered from its chunks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from engines.base import SAMPLING_FIELDS, GenerationChunk, GenerationRequest
from jobs.request import job_messages


def generation_request(job: dict) -> GenerationRequest:
    """What the engine runs for `job`: its prompt, and only the sampling fields it sets."""
    sampling = {name: job[name] for name in SAMPLING_FIELDS if name in job}
    return GenerationRequest(job_messages(job), job["max_tokens"], **sampling, stop=tuple(job.get("stop") or ()),
                             n=job.get("n", 1), logprobs=job.get("logprobs"), grammar=job.get("grammar"),
                             prompt_text=job["prompt"] if job.get("raw_prompt") else None,
                             streamed=job.get("stream", True))


@dataclass
class Answer:
    """One of the job's `n` answers."""

    pieces: list[str] = field(default_factory=list)
    tokens: int = 0
    finish_reason: Optional[str] = None
    logprobs: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Answers:
    """Gathers the chunks of a job's answers; says what each chunk publishes on the job's stream."""

    def __init__(self, request: GenerationRequest, publish_logprobs: bool = True) -> None:
        self.answers = [Answer() for _ in range(request.n)]
        self.prompt_tokens = 0
        # False: the engine computes log-probabilities the job did not ask for (escalation reads them):
        # they are kept here, not published.
        self.publish_logprobs = publish_logprobs

    def add(self, chunk: GenerationChunk) -> Optional[dict]:
        """Take a chunk; the `token` event to publish for it, or None when it carries nothing to show."""
        answer = self.answers[chunk.index]
        answer.tokens += chunk.token is not None and chunk.finish_reason != "stop"  # the stop token is no text
        answer.pieces.append(chunk.text)
        answer.finish_reason = chunk.finish_reason or answer.finish_reason
        self.prompt_tokens = chunk.prompt_tokens
        if chunk.logprob is not None:
            answer.logprobs.append(chunk.logprob)
        logprob = chunk.logprob if self.publish_logprobs else None
        if not chunk.text and logprob is None:
            return None
        event: dict = {"text": chunk.text}
        if len(self.answers) > 1:
            event["index"] = chunk.index
        if logprob is not None:
            event["logprobs"] = [logprob]
        return event

    @property
    def tokens(self) -> int:
        """Tokens generated over every answer (what the key is billed)."""
        return sum(answer.tokens for answer in self.answers)

    @property
    def cancelled(self) -> bool:
        return any(answer.finish_reason == "cancelled" for answer in self.answers)

    def result_fields(self, with_logprobs: bool) -> dict:
        """The result's `response` and `finish_reason` (the first answer's), `tokens` (all answers'),
        `logprobs` when asked for, and `choices` when there are several answers."""
        first = self.answers[0]
        fields: dict = {"response": first.text, "tokens": self.tokens, "prompt_tokens": self.prompt_tokens,
                        "finish_reason": "cancelled" if self.cancelled else first.finish_reason}
        if with_logprobs:
            fields["logprobs"] = first.logprobs
        if len(self.answers) > 1:
            fields["choices"] = [{"index": i, "text": a.text, "finish_reason": a.finish_reason, "tokens": a.tokens,
                                  **({"logprobs": a.logprobs} if with_logprobs else {})}
                                 for i, a in enumerate(self.answers)]
        return fields
