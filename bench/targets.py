"""The things the benchmark compares, behind one call: send a prompt, get the answer and its token count.

Each can also stream (`stream=True`), which is how the time to first token is measured.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Optional, Protocol

import requests

HTTP_TIMEOUT_S = 900
CONNECT_RETRIES = 20


def post_json(url: str, body: dict, headers: Optional[dict] = None) -> tuple[dict, int]:
    """POST and return the JSON answer and how many times the connection had to be retried.

    mlx_lm.server's HTTP server has a listen backlog of 5 and resets connections beyond
    it; a client would retry, so the benchmark does too and reports the retries.
    """
    for attempt in range(CONNECT_RETRIES + 1):
        try:
            response = requests.post(url, json=body, headers=headers or {}, timeout=HTTP_TIMEOUT_S)
        except requests.ConnectionError:
            if attempt == CONNECT_RETRIES:
                raise
            time.sleep(0.1 * (attempt + 1))
            continue
        response.raise_for_status()
        return response.json(), attempt
    raise AssertionError("unreachable")


@dataclass
class Answer:
    """One finished request as the client saw it."""

    latency_s: float
    tokens: int
    text: str
    cached: object = False
    retries: int = 0  # connections the server refused or reset before it took the request
    error: str = ""
    first_token_s: Optional[float] = None  # streamed requests: when the first text arrived


def stream_chat(url: str, body: dict, headers: Optional[dict] = None) -> Answer:
    """POST an OpenAI chat request with `stream: true` and read its server-sent events to the end.

    The completion tokens come from the final usage chunk (`stream_options.include_usage`).
    """
    started = time.perf_counter()
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    first, pieces, tokens = None, [], 0
    with requests.post(url, json=body, headers=headers or {}, timeout=HTTP_TIMEOUT_S, stream=True) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"in-stream error: {chunk['error']}")
            text = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
            if text and first is None:
                first = time.perf_counter() - started
            pieces.append(text)
            tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
    return Answer(time.perf_counter() - started, tokens, "".join(pieces), first_token_s=first)


class Target(Protocol):
    """Something that answers a chat prompt."""

    name: str

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False, stream: bool = False) -> Answer:
        ...


class DirectEngine:
    """The tier's engine, called exactly as a generation task calls it, in a child process of its own.

    A child per tier: two engines in one process slowed each other (one stream ran at 30 tok/s instead of
    55 once the other engine had run), and the benchmark's client threads would share its interpreter.
    """

    def __init__(self, tier: str) -> None:
        self.name = "engine alone"
        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold engine threads
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_engine, args=(tier, child), name=f"bench-engine-{tier}",
                                        daemon=True)
        self._process.start()
        child.close()  # the child's end lives in the child only: its exit is then an EOF here
        self._lock = threading.Lock()
        self._waiting: dict[int, Future] = {}
        self._ids = itertools.count()
        threading.Thread(target=self._read, name="bench-engine-answers", daemon=True).start()
        self._call("ready")

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False, stream: bool = False) -> Answer:
        return Answer(**self._call("ask", prompt, max_tokens))

    def stats(self) -> dict:
        """The engine's decode steps and tokens so far."""
        return self._call("stats")

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):  # a child that already died has no pipe to read
            self._conn.send(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()

    def _call(self, *message):
        future: Future = Future()
        with self._lock:
            call_id = next(self._ids)
            self._waiting[call_id] = future
            self._conn.send((call_id, *message))
        return future.result(timeout=HTTP_TIMEOUT_S)

    def _read(self) -> None:
        while True:
            try:
                call_id, ok, value = self._conn.recv()
            except (EOFError, OSError):
                with self._lock:
                    waiting, self._waiting = self._waiting, {}
                for future in waiting.values():
                    future.set_exception(RuntimeError("the engine process ended"))
                return
            with self._lock:
                future = self._waiting.pop(call_id)
            future.set_result(value) if ok else future.set_exception(RuntimeError(value))


def _serve_engine(tier: str, conn) -> None:
    """The child's loop: one thread per request, as a worker's task threads call the engine."""
    from engines.base import GenerationRequest
    from engines.provider import get_engine
    from heap import freeze_start_up_objects

    engine = get_engine(tier)
    freeze_start_up_objects()  # as a worker does once its engine is loaded (tasks.lifecycle)
    lock = threading.Lock()

    def reply(call_id: int, ok: bool, value) -> None:
        with lock:
            conn.send((call_id, ok, value))

    def ask(call_id: int, prompt: str, max_tokens: int) -> None:
        try:
            started = time.perf_counter()
            pieces, tokens, first = [], 0, None
            for chunk in engine.generate(GenerationRequest([{"role": "user", "content": prompt}], max_tokens)):
                if chunk.text and first is None:
                    first = time.perf_counter() - started
                pieces.append(chunk.text)
                tokens += chunk.token is not None and chunk.finish_reason != "stop"
            reply(call_id, True, {"latency_s": time.perf_counter() - started, "tokens": tokens,
                                  "text": "".join(pieces), "first_token_s": first})
        except Exception as exc:
            reply(call_id, False, f"{type(exc).__name__}: {exc}")

    while (message := conn.recv()) is not None:
        call_id, kind, *args = message
        if kind == "ask":
            threading.Thread(target=ask, args=(call_id, *args), daemon=True).start()
        else:
            reply(call_id, True, {"decode_steps": engine.stats.decode_steps, "tokens": engine.stats.tokens}
                  if kind == "stats" else None)


class OpenAIServer:
    """A peer's own OpenAI-compatible server, which batches concurrent requests: `mlx_lm.server`, or
    llama.cpp's `llama-server`."""

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.url = f"{base_url}/v1/chat/completions"

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False, stream: bool = False) -> Answer:
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0}
        if stream:
            return stream_chat(self.url, body)
        started = time.perf_counter()
        body, retries = post_json(self.url, body)
        return Answer(time.perf_counter() - started, body["usage"]["completion_tokens"],
                      body["choices"][0]["message"]["content"], retries=retries)


class Platform:
    """This platform's synchronous endpoint, with the tier forced so every target runs the same model."""

    def __init__(self, base_url: str, tier: str, name: str = "platform /generate") -> None:
        self.name = name
        self.url = f"{base_url}/generate"
        self.chat_url = f"{base_url}/v1/chat/completions"
        self.tier = tier

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False, stream: bool = False) -> Answer:
        # Cache-Control is how a request skips the response cache (ignored where there is none).
        headers = {} if use_cache else {"Cache-Control": "no-cache"}
        if stream:  # the OpenAI route streams; its model name "small" or "large" forces the tier
            return stream_chat(self.chat_url, {"model": self.tier, "messages": [{"role": "user", "content": prompt}],
                                               "max_tokens": max_tokens, "temperature": 0.0}, headers)
        started = time.perf_counter()
        body, retries = post_json(self.url, {"prompt": prompt, "max_tokens": max_tokens, "tier": self.tier}, headers)
        return Answer(time.perf_counter() - started, body["tokens"], body["response"], body.get("cached", False),
                      retries=retries)
