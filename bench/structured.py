"""Structured output: what grammar sampling costs, and whether JSON-schema answers always validate.

    python -m bench.structured grammar --tier small --rounds 3
    python -m bench.structured validity --requests 50

`grammar` loads the tier's llama.cpp engine in this process and generates the same prompts with no
grammar, with the JSON-object grammar and with a JSON-schema grammar, one request at a time and 8
side by side, alternating the three in each round: aggregate tokens/s per mode (after each answer's
first token, so prefill is left out), the mean answer length, and the ratio to no grammar. `validity` starts the stack as `make run` does (BENCH_PORT, BENCH_REDIS_URL) and sends
`--requests` JSON-schema chat requests across five schemas (sampled at temperature 0.9, a seed each)
through the official `openai` client, 8 at a time; every answer is parsed and validated with
`jsonschema`. Results go to reports/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from bench import stack

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PROMPTS = {"city": "Name a famous city and its country.", "sentiment": "Classify: 'I loved this film!'",
                  "person": "Invent a person with an address.", "shopping": "List things to buy for a picnic.",
                  "measure": "How long is a football pitch?"}
# Prompts that ask for JSON, so that answers run about as long with and without a grammar (a
# model held to JSON where it wanted prose may close the object at once, and tokens/s would then
# measure prefill instead of decoding).
GRAMMAR_PROMPTS = [f"Describe {thing} as a JSON object with several fields." for thing in (
    "a cat", "Paris", "a person with an address", "a picnic shopping list", "France", "your ideal house",
    "the planets", "a car")]


def schemas() -> dict:
    """The five schemas of the structured-output tests (tests/test_openai_params.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_openai_params import SCHEMAS

    return SCHEMAS


def bench_grammar(tier: str, rounds: int, max_tokens: int) -> dict:
    from engines.base import GenerationRequest
    from engines.provider import create_engine
    from webapp.grammar import grammar_for

    engine = create_engine(tier)
    person = {"type": "json_schema", "json_schema": {"name": "person", "schema": schemas()["person"]}}
    modes = {"none": None, "json_object": grammar_for({"type": "json_object"}), "json_schema": grammar_for(person)}

    def one(prompt: str, grammar: Optional[str]) -> tuple[int, float, float]:
        """Tokens after the first, and when the first and the last came."""
        request = GenerationRequest([{"role": "user", "content": prompt}], max_tokens, temperature=0.7, seed=1,
                                    grammar=grammar)
        tokens, first = 0, None
        for chunk in engine.generate(request):
            first = first or time.perf_counter()
            tokens += chunk.token is not None and chunk.finish_reason != "stop"
        return tokens, first, time.perf_counter()

    def run(grammar: Optional[str], width: int) -> tuple[float, float]:
        """Decode tokens/s over the run (from the first answer's first token to the last answer's end)
        and the mean answer length."""
        with ThreadPoolExecutor(width) as pool:
            answers = list(pool.map(lambda p: one(p, grammar), GRAMMAR_PROMPTS[:max(width, 2)]))
        decoded = sum(tokens - 1 for tokens, _, _ in answers)
        span = max(end for _, _, end in answers) - min(first for _, first, _ in answers)
        return decoded / span, statistics.mean(tokens for tokens, _, _ in answers)

    run(None, 1)  # warm-up
    report: dict = {"tier": tier, "model": engine.model_id, "max_tokens": max_tokens}
    for width in (1, 8):
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        lengths: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, grammar in modes.items():
                rate, length = run(grammar, width)
                rates[mode].append(rate)
                lengths[mode].append(length)
        medians = {mode: round(statistics.median(values), 1) for mode, values in rates.items()}
        report[f"{width}_at_a_time"] = {
            "decode_tokens_per_s": medians,
            "ratio_to_none": {mode: round(medians[mode] / medians["none"], 2) for mode in modes},
            "mean_answer_tokens": {mode: round(statistics.mean(values), 1) for mode, values in lengths.items()}}
        print(json.dumps({f"{width}_at_a_time": report[f"{width}_at_a_time"]}), flush=True)
    return report


def bench_validity(args: argparse.Namespace) -> dict:
    import jsonschema
    import openai


    all_schemas = schemas()
    log = Path(args.out) / "bench-structured.log"
    with stack.platform(args.port, args.redis_url, 8, log) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)

        def ask(i: int) -> dict:
            name = list(all_schemas)[i % len(all_schemas)]
            started = time.perf_counter()
            completion = client.chat.completions.create(
                model=args.model, messages=[{"role": "user", "content": SCHEMA_PROMPTS[name]}], max_tokens=128,
                temperature=0.9, seed=i, extra_headers={"Cache-Control": "no-cache"},
                response_format={"type": "json_schema", "json_schema": {"name": name, "schema": all_schemas[name]}})
            choice = completion.choices[0]
            try:
                jsonschema.validate(json.loads(choice.message.content), all_schemas[name])
                error = None
            except (ValueError, jsonschema.ValidationError) as exc:
                error = str(exc)[:200]
            return {"schema": name, "finish_reason": choice.finish_reason, "error": error,
                    "tokens": completion.usage.completion_tokens, "seconds": time.perf_counter() - started,
                    "answer": choice.message.content}

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(args.requests)))
    invalid = [a for a in answers if a["error"]]
    return {"requests": len(answers), "schemas": len(all_schemas), "invalid": len(invalid),
            "finish_reasons": {r: sum(a["finish_reason"] == r for a in answers) for r in ("stop", "length")},
            "mean_tokens": round(statistics.mean(a["tokens"] for a in answers), 1),
            "invalid_answers": invalid, "examples": {a["schema"]: a["answer"] for a in answers}}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.structured", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grammar = commands.add_parser("grammar")
    grammar.add_argument("--tier", default="small")
    grammar.add_argument("--rounds", type=int, default=3)
    grammar.add_argument("--max-tokens", type=int, default=64)
    validity = commands.add_parser("validity")
    validity.add_argument("--requests", type=int, default=50)
    validity.add_argument("--model", default="small")
    stack.add_platform_arguments(validity)
    for command in (grammar, validity):
        command.add_argument("--out", default=str(ROOT / "reports"))
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = (bench_grammar(args.tier, args.rounds, args.max_tokens) if args.command == "grammar"
              else bench_validity(args))
    path = Path(args.out) / f"structured-{args.command}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("invalid_answers", "examples")}))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
