"""What each engine backend honours of a request, and the sampling values every backend shares.

The web app reads this (no model code) to refuse, with a 400 naming the field, what the configured
backend cannot do, instead of queueing a job that would fail on the worker.
"""
from __future__ import annotations

PENALTY_LAST_N = 64  # tokens the penalties look back over, prompt included (llama-server's repeat_last_n)

# The value of each sampling field that changes nothing; a request carries only the others.
NEUTRAL = {"top_p": 1.0, "top_k": 0, "min_p": 0.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
           "repetition_penalty": 1.0}

# What each API field is called on the engine's GenerationRequest, where the name differs.
REQUEST_FIELD = {"response_format": "grammar"}

# Request fields a backend cannot honour, with why.
UNSUPPORTED = {
    "llamacpp": {},
    "mlx": {"seed": "mlx-lm draws from one process-wide random state: a per-request seed cannot be kept",
            "response_format": "mlx-lm has no grammar sampler for structured output"},
}


def unsupported(backend: str) -> dict[str, str]:
    """The fields `backend` refuses, each with the reason."""
    return UNSUPPORTED.get(backend, {})


def unsupported_request_fields(backend: str) -> list[str]:
    """The GenerationRequest fields `backend` cannot honour (`unsupported`, by the engine's names)."""
    return [REQUEST_FIELD.get(name, name) for name in unsupported(backend)]
