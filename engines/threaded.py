"""What every batching backend shares: one thread owns the model; callers queue requests and read chunks.

Model state is only touched on the engine thread, so callers (Celery task
threads) never run model code concurrently. A backend implements `_serve`, a
loop that admits queued requests into its batch and emits their tokens, and
sets a tokenizer with the `EngineTokenizer` interface: mlx-lm's
TokenizerWrapper (MLX engine) or engines.hf_tokenizer.ChatTokenizer (llama.cpp,
no MLX).

No caller waits on the engine without a timeout: it polls its answers, so a
cancel is honoured even when the engine does not answer it, and an engine that
has work but stopped stepping (`stalled()`, past `ENGINE_STALL_S`) fails its
callers with EngineStalled instead of hanging them. The loop itself never
spins: it steps while it has requests and blocks on its inbox when it has none.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Iterator, Optional, Protocol

from engines.base import EngineStalled, EngineStats, GenerationChunk, GenerationRequest
from engines.stops import StopMatcher
from settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a waiting caller looks at its cancel flag and at the watchdog
# A caller that wants the whole answer (GenerationRequest.streamed False) gets its chunks in batches: the
# first at once (its time to first token), then every HAND_OVER_S and at the end. Each hand-over wakes the
# caller's thread, and on a small host a wakeup per token took a core from the engine's threads.
HAND_OVER_S = 0.5
BATCHED_POLL_S = 1.0  # such a caller is woken by the end (or a cancel's answer) and polls less often
CANCEL_GRACE_S = 0.5  # how long a cancelled caller waits for the engine's own `cancelled` answer
RESTART_DELAY_S = 0.1  # pause before the engine loop restarts after a failure


class Detokenizer(Protocol):
    """One request's generated tokens turned into text as they come (mlx-lm's streaming detokenizers
    and engines.hf_tokenizer.StreamingDetokenizer have this interface)."""

    def add_token(self, token: int) -> None: ...

    def finalize(self) -> None:
        """No more tokens: release the text held back."""

    @property
    def last_segment(self) -> str:
        """The text completed since the last read."""


class EngineTokenizer(Protocol):
    """What the batch loop uses of a tokenizer."""

    chat_template: Optional[str]
    eos_token_ids: AbstractSet[int]

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    @property
    def detokenizer(self) -> Detokenizer:
        """A new detokenizer for one request (requests are detokenized side by side)."""


@dataclass
class Active:
    """Book-keeping for one request inside the batch loop."""

    request: GenerationRequest
    outbox: queue.Queue
    detokenizer: Detokenizer
    prompt_tokens: int
    held: list[GenerationChunk] = field(default_factory=list)  # chunks not handed over yet
    handed_at: Optional[float] = None  # when chunks were last handed over

    def emit(self, token: Optional[int], finish_reason: Optional[str], logprob: Optional[dict] = None) -> None:
        """Hand the caller the text of `token` (at once, or with the next batch: `batched`); a finish reason
        ends the request."""
        if token is not None and finish_reason != "stop":  # the stop token itself is not text
            self.detokenizer.add_token(token)
        if finish_reason:
            self.detokenizer.finalize()
        self._hand_over(GenerationChunk(self.detokenizer.last_segment, token=token, finish_reason=finish_reason,
                                        prompt_tokens=self.prompt_tokens, index=self.request.index,
                                        logprob=logprob if finish_reason != "stop" else None))

    def cancel(self) -> None:
        self._hand_over(GenerationChunk("", finish_reason="cancelled", prompt_tokens=self.prompt_tokens,
                                        index=self.request.index))

    @property
    def batched(self) -> bool:
        """Whether the caller gets its chunks in batches: it wants the whole answer, and has no stop strings
        (those are matched by the caller, and a batch would let the engine decode past one)."""
        return not self.request.streamed and not self.request.stop

    def _hand_over(self, chunk: GenerationChunk) -> None:
        now = time.monotonic()
        if self.batched and not chunk.finish_reason and self.handed_at is not None \
                and now - self.handed_at < HAND_OVER_S:
            self.held.append(chunk)
            return
        for held in self.held:  # no waiter is woken by these: it wakes at the first put, and reads on
            self.outbox.put(held)
        self.held.clear()
        self.outbox.put(chunk)
        self.handed_at = now


class Progress:
    """When the engine thread last made progress: the watchdog behind `stalled_for()`.

    The engine has work while requests wait on its inbox or its loop holds some (running, or parked
    for KV room). The clock restarts when work reaches an idle engine and at every completed step.
    Updated by callers and the engine thread, read by any thread (the worker's heartbeat), so every
    access takes the lock: a few hundred nanoseconds per step.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued = 0  # submitted, not yet taken by the engine thread
        self._holding = False  # the engine loop has requests of its own
        self._since = time.monotonic()

    def submitted(self) -> None:
        with self._lock:
            if not self._has_work():  # an idle engine has not been failing to step until now
                self._since = time.monotonic()
            self._queued += 1

    def taken(self, kept: bool = True) -> None:
        """The engine thread took a request off the inbox: it holds it now, unless it answered it at
        once (`kept=False`: cancelled while queued), which leaves an idle loop idle."""
        with self._lock:
            self._queued -= 1
            self._holding = self._holding or kept

    def holding(self, holding: bool) -> None:
        """The engine thread, once per loop pass: whether it still has requests of its own."""
        with self._lock:
            self._holding = holding

    def stepped(self) -> None:
        with self._lock:
            self._since = time.monotonic()

    def stalled_for(self) -> float:
        with self._lock:
            return time.monotonic() - self._since if self._has_work() else 0.0

    def _has_work(self) -> bool:
        return self._queued > 0 or self._holding


class ThreadedEngine:
    """Base class: the request queue, the engine thread and the chat template.

    A subclass sets `self.tokenizer` (an `EngineTokenizer`) before calling
    `start()`, and implements `_serve()`.
    """

    model_id: str
    tokenizer: EngineTokenizer
    copies_prompt = False  # whether a request's later answers copy the first one's prompt KV

    def __init__(self, model_id: str, max_batch: int, settings: Settings) -> None:
        self.model_id = model_id
        self.max_batch = max_batch
        self.stats = EngineStats()
        self._inbox: queue.Queue = queue.Queue()
        self._progress = Progress()
        self._stall_s = settings.engine_stall_s
        self._running: dict = {}  # the engine loop's running requests (the loop publishes its own dict)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"engine-{self.model_id}", daemon=True).start()

    def encode(self, request: GenerationRequest) -> list[int]:
        """Token ids of the prompt, ready for generation: the chat-templated messages, or a completion
        prompt's text as it is."""
        if request.prompt_text is not None:
            return list(self.tokenizer.encode(request.prompt_text))
        if getattr(self.tokenizer, "chat_template", None):
            return list(self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True))
        text = "\n".join(m["content"] for m in request.messages)
        return self.tokenizer.encode(text)

    def generate(self, request: GenerationRequest) -> Iterator[GenerationChunk]:
        """Queue the request on the engine thread and yield its chunks as they arrive.

        Its `n` answers run as `n` sequences of the batch; each ends on its own (a stop string ends
        only its sequence), and the request ends when all have. On an engine that `copies_prompt`, the
        others are queued once the first has its prompt in the KV cache (its first chunk), and copy it
        instead of computing it again. Raises EngineStalled when the engine stops stepping while this
        request waits."""
        prompt = self.encode(request)
        outbox: queue.Queue = queue.Queue()
        first, *later = _choices(request)
        answers = {choice.index: choice for choice in (first, *later)}
        stops = {index: StopMatcher(request.stop) for index in answers}
        for choice in (first,) if self.copies_prompt else (first, *later):
            self._submit(choice, prompt, outbox)
        later = later if self.copies_prompt else []
        try:
            for item in self._answers(request, len(prompt), outbox):
                if later and item.index == first.index and not request.cancel.is_set():
                    for choice in later:
                        self._submit(choice, prompt, outbox)
                    later = []
                if item.index not in answers or (request.cancel.is_set() and not item.finish_reason):
                    continue  # an answer already ended, or decoded before the engine saw the cancel
                for chunk in stops[item.index].feed(item):
                    yield chunk
                    if chunk.finish_reason:
                        answers.pop(chunk.index).cancel.set()  # a stop string: the engine drops it
                if not answers:
                    return
        finally:
            # A caller that stops reading early must not keep a batch slot busy.
            request.cancel.set()

    def _submit(self, request: GenerationRequest, prompt: list[int], outbox: queue.Queue) -> None:
        self._progress.submitted()
        self._inbox.put((request, prompt, outbox))

    def stalled_for(self) -> float:
        """Seconds the engine has had work (running, parked or queued requests) without completing a
        decode step; 0.0 when idle or progressing. Safe to call from any thread."""
        return self._progress.stalled_for()

    def stalled(self) -> bool:
        """Whether the engine has had work without a decode step for longer than ENGINE_STALL_S."""
        return self.stalled_for() > self._stall_s

    # --- read-only figures for metrics (any thread; no lock: single reads of ints and dicts) ---

    @property
    def batch_width(self) -> int:
        """Requests in the engine's current batch (generating or prefilling)."""
        return len(self._running)

    @property
    def steps(self) -> int:
        """Decode steps completed so far (EngineStats.decode_steps)."""
        return self.stats.decode_steps

    @property
    def kv_usage(self) -> Optional[float]:
        """Share of the engine's KV cache in use, 0..1; None where the backend has no fixed KV pool."""
        return None

    def _answers(self, request: GenerationRequest, prompt_tokens: int,
                 outbox: queue.Queue) -> Iterator[GenerationChunk]:
        """What the engine puts in `outbox`, read in short polls so that a caller never waits forever:
        a cancel the engine has not answered within CANCEL_GRACE_S (it may be wedged) is answered
        here, and a stalled engine raises EngineStalled."""
        cancel_seen: Optional[float] = None
        poll_s = POLL_S if request.streamed else BATCHED_POLL_S
        while True:
            try:
                item = outbox.get(timeout=poll_s)
            except queue.Empty:
                if request.cancel.is_set():
                    cancel_seen = cancel_seen or time.monotonic()
                    if time.monotonic() - cancel_seen >= CANCEL_GRACE_S:
                        for index in range(request.n):  # the caller skips answers that already ended
                            yield GenerationChunk("", finish_reason="cancelled", prompt_tokens=prompt_tokens,
                                                  index=index)
                        return
                elif self.stalled():
                    raise EngineStalled(f"engine {self.model_id} has had work for {self.stalled_for():.1f}s "
                                        f"without a decode step (ENGINE_STALL_S={self._stall_s:g})")
                continue
            if isinstance(item, BaseException):
                raise item
            yield item

    def _next_request(self, wait: bool) -> Optional[tuple[GenerationRequest, list[int], queue.Queue]]:
        """The next queued request, or None; one cancelled while queued is answered here.

        `wait` (the loop holds no requests) blocks until one comes, with no timeout: an idle loop has
        nothing to watch (stalled_for() is 0), and one that woke up to poll would exit during
        interpreter shutdown, where MLX's thread-local generation stream then aborts the process."""
        while True:
            try:
                request, prompt, outbox = self._inbox.get(block=wait)
            except queue.Empty:
                return None
            kept = not request.cancel.is_set()
            self._progress.taken(kept)
            if kept:
                return request, prompt, outbox
            self._answer_cancelled(request, prompt, outbox)

    @staticmethod
    def _answer_cancelled(request: GenerationRequest, prompt: list[int], outbox: queue.Queue) -> None:
        """Answer a request cancelled before it got a batch slot."""
        outbox.put(GenerationChunk("", finish_reason="cancelled", prompt_tokens=len(prompt), index=request.index))

    def _record_step(self, batch_width: int) -> None:
        """The engine thread completed a decode step (`batch_width` requests got a token)."""
        self.stats.record_step(batch_width)
        self._progress.stepped()

    def _pass_done(self, holding: bool) -> None:
        """The engine thread ends a loop pass: whether it still holds requests (running or parked)."""
        self._progress.holding(holding)

    def _active(self, request: GenerationRequest, prompt: list[int], outbox: queue.Queue) -> Active:
        return Active(request, outbox, self.tokenizer.detokenizer, len(prompt))

    def _run(self) -> None:
        while True:
            try:
                self._serve()
            except Exception as exc:  # keep the engine alive for the next request
                log.exception("engine loop failed: %s", exc)
                time.sleep(RESTART_DELAY_S)  # a loop that fails again at once must not spin

    def _serve(self) -> None:
        raise NotImplementedError


class ChildCancel:
    """One answer's cancel flag: set on its own (a stop string ended it), or through the request's."""

    def __init__(self, parent: threading.Event) -> None:
        self._parent, self._own = parent, threading.Event()

    def is_set(self) -> bool:
        return self._own.is_set() or self._parent.is_set()

    def set(self) -> None:
        self._own.set()


def _choices(request: GenerationRequest) -> list[GenerationRequest]:
    """The request's `n` answers as sequences of their own: answer i draws from `seed + i`."""
    return [replace(request, n=1, index=i, cancel=ChildCancel(request.cancel),
                    seed=None if request.seed is None else request.seed + i) for i in range(request.n)]
