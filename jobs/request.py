"""What a job asks for, as the engines and caches read it."""
from __future__ import annotations


def job_messages(job: dict) -> list[dict]:
    """The chat messages of a job; a plain prompt is one user message."""
    return job.get("messages") or [{"role": "user", "content": job["prompt"]}]
