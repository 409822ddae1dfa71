"""Closed-loop clients: N threads, each sending its share of the prompts one after another."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from bench.targets import Answer, Target
from monitoring import figures


@dataclass
class Run:
    """What one batch of clients measured against one target."""

    target: str
    clients: int
    answers: list[Answer]
    wall_s: float
    streamed: bool = False

    @classmethod
    def joined(cls, runs: list["Run"]) -> "Run":
        """Rounds of one target at one client count as one run: their answers, their time added up."""
        first = runs[0]
        return cls(first.target, first.clients, [a for run in runs for a in run.answers],
                   sum(run.wall_s for run in runs), first.streamed)

    @property
    def tokens(self) -> int:
        return sum(a.tokens for a in self.answers)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    @property
    def failures(self) -> int:
        return sum(bool(a.error) for a in self.answers)

    @property
    def retries(self) -> int:
        return sum(a.retries for a in self.answers)

    def latency_ms(self, q: float) -> float:
        return percentile([a.latency_s * 1000 for a in self.answers if not a.error], q)

    def first_token_ms(self, q: float) -> float:
        """Time to first token, streamed runs only (0 without any)."""
        return percentile([a.first_token_s * 1000 for a in self.answers
                           if not a.error and a.first_token_s is not None], q)

    def as_dict(self) -> dict:
        figures = {"target": self.target, "clients": self.clients, "requests": len(self.answers),
                   "failures": self.failures, "retries": self.retries,
                   "tokens": self.tokens, "wall_s": round(self.wall_s, 2),
                   "tokens_per_s": round(self.tokens_per_s, 2),
                   "p50_ms": round(self.latency_ms(50), 1), "p99_ms": round(self.latency_ms(99), 1)}
        if self.streamed:
            figures.update(first_token_p50_ms=round(self.first_token_ms(50), 1),
                           first_token_p99_ms=round(self.first_token_ms(99), 1))
        return figures


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation: the dashboard's own (monitoring.figures), 0 without values."""
    return figures.percentile(values, q / 100) or 0.0


def run_clients(target: Target, prompts: list[str], clients: int, max_tokens: int, stream: bool = False) -> Run:
    """Send every prompt once through `clients` concurrent clients; time the whole batch."""

    def ask(prompt: str) -> Answer:
        started = time.perf_counter()
        try:
            return target.ask(prompt, max_tokens, stream=stream)
        except Exception as exc:  # one failed request is a result, not the end of the benchmark
            return Answer(time.perf_counter() - started, 0, "", error=f"{type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="client") as pool:
        answers = list(pool.map(ask, prompts))
    return Run(target.name, clients, answers, time.perf_counter() - started, stream)


def run_together(calls: list[Callable[[], None]]) -> float:
    """Run `calls` on threads of their own, started together; the seconds until the last one ends."""
    threads = [threading.Thread(target=call) for call in calls]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
