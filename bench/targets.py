"""The three things the benchmark compares, behind one call: send a prompt, get the answer and its token count."""
from __future__ import annotations

import time
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


class Target(Protocol):
    """Something that answers a chat prompt."""

    name: str

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False) -> Answer:
        ...


class DirectEngine:
    """The tier's engine called in this process, exactly as a generation task calls it."""

    def __init__(self, tier: str) -> None:
        from engines.provider import get_engine

        self.name = "engine in-process"
        self.engine = get_engine(tier)

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False) -> Answer:
        from engines.base import GenerationRequest

        started = time.perf_counter()
        pieces, tokens = [], 0
        for chunk in self.engine.generate(GenerationRequest([{"role": "user", "content": prompt}], max_tokens)):
            pieces.append(chunk.text)
            tokens += chunk.token is not None and chunk.finish_reason != "stop"
        return Answer(time.perf_counter() - started, tokens, "".join(pieces))


class MLXServer:
    """mlx-lm's own OpenAI-compatible server (`mlx_lm.server`), which batches concurrent requests."""

    def __init__(self, base_url: str) -> None:
        self.name = "mlx_lm.server"
        self.url = f"{base_url}/v1/chat/completions"

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False) -> Answer:
        started = time.perf_counter()
        body, retries = post_json(self.url, {
            "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0})
        return Answer(time.perf_counter() - started, body["usage"]["completion_tokens"],
                      body["choices"][0]["message"]["content"], retries=retries)


class Platform:
    """This platform's synchronous endpoint, with the tier forced so every target runs the same model."""

    def __init__(self, base_url: str, tier: str) -> None:
        self.name = "platform /generate"
        self.url = f"{base_url}/generate"
        self.tier = tier

    def ask(self, prompt: str, max_tokens: int, use_cache: bool = False) -> Answer:
        # Cache-Control is how a request skips the response cache (ignored where there is none).
        headers = {} if use_cache else {"Cache-Control": "no-cache"}
        started = time.perf_counter()
        body, retries = post_json(self.url, {"prompt": prompt, "max_tokens": max_tokens, "tier": self.tier}, headers)
        return Answer(time.perf_counter() - started, body["tokens"], body["response"], body.get("cached", False),
                      retries=retries)
