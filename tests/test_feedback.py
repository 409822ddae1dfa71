"""Feedback on jobs: `POST /v1/jobs/<id>/feedback` (validation, scoping, 409s, storage in SQL), and the
calibration experiment: `down` feedback asking for `large` on function-writing prompts that the shipped
router sends to `small`, refitted with `python -m routing.calibrate --feedback`, moves a held-out slice of
the same kind, and routing/data/test.jsonl is no worse."""
from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from helpers import app_with, job_store, new_api_key, tenants
from jobs.recent import PROMPT_PREVIEW_CHARS
from tenants.database import database_engine, upgrade
from tenants.feedback import FeedbackStore, routing_fields
from tenants.schema import job_feedback

ROUTING = {"intent": "factual", "tier": "small", "score": 0.8696, "threshold": 0.3428, "rule": "matched",
           "top": [["factual", 0.8696], ["deep_explanation", 0.035]]}


def _job(status: str = "succeeded", prompt: str = "what is the capital of peru?", key_id: str | None = None,
         routing: dict | None = ROUTING, request: dict | None = None, **fields) -> str:
    """A job record in the test Redis, as the workers would have left it (no worker runs)."""
    job_id = uuid.uuid4().hex
    record = {"status": status, **({"routing": routing} if routing else {}), **fields}
    if status == "succeeded":
        tier = (routing or {}).get("tier", "small")
        record.setdefault("result", {"response": "Lima.", "tier": tier, "tokens": 3, "routing": routing})
        record.setdefault("finished_at", time.time())
    job_store().create(job_id, request or {"prompt": prompt, "key_id": key_id, "max_tokens": 32}, **record)
    return job_id


def _feedback(job_id: str) -> dict | None:
    return feedback_store().get(job_id)


def feedback_store() -> FeedbackStore:
    return FeedbackStore(tenants().ledger.engine)


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    return error


# ---------------------------------------------------------------- the endpoint


def test_feedback_is_stored_with_the_prompt_and_the_routing_decision(client):
    job_id = _job(prompt="what is the capital of peru?")
    response = client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "down", "tier": "large",
                                                                "comment": "too short"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["job_id"] == job_id and body["rating"] == "down" and body["tier_wanted"] == "large"
    assert body["replaced"] is False and "prompt" not in body, "the prompt is kept, not echoed"
    row = _feedback(job_id)
    assert row["prompt"] == "what is the capital of peru?" and row["key_id"] == "-"
    assert row["comment"] == "too short"
    assert (row["routed_tier"], row["routed_intent"], row["routed_rule"], row["answered_tier"]) == \
        ("small", "factual", "matched", "small")
    assert row["routed_score"] == pytest.approx(0.8696)
    assert abs(row["created_at"] - time.time()) < 60


def test_a_second_feedback_replaces_the_first(client):
    job_id = _job()
    first = client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "down", "comment": "meh"}).get_json()
    time.sleep(0.01)
    second = client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"})
    assert second.status_code == 200 and second.get_json()["replaced"] is True
    row = _feedback(job_id)
    assert row["rating"] == "up" and row["comment"] is None and row["tier_wanted"] is None
    assert row["created_at"] == first["created_at"] < row["updated_at"]


@pytest.mark.parametrize("body,field", [
    ({}, "rating"),
    ({"rating": "meh"}, "rating"),
    ({"rating": 1}, "rating"),
    ({"rating": "down", "tier": "medium"}, "tier"),
    ({"rating": "down", "tier": None}, "tier"),
    ({"rating": "up", "tier": "large"}, "tier"),  # an up confirms the tier that answered
    ({"rating": "down", "comment": "x" * 501}, "comment"),
    ({"rating": "down", "comment": 5}, "comment"),
    ({"rating": "down", "comment": "a\u0000b"}, "comment"),
    ({"rating": "down", "stars": 5}, "stars"),
])
def test_bad_feedback_is_a_400_naming_the_field(client, body, field):
    job_id = _job()
    error = _error(client.post(f"/v1/jobs/{job_id}/feedback", json=body), 400, "invalid_request")
    assert field in error["fields"]
    assert _feedback(job_id) is None


def test_bad_bodies_are_json_errors(client):
    job_id = _job()
    path = f"/v1/jobs/{job_id}/feedback"
    _error(client.post(path, data="rating=up"), 415, "unsupported_media_type")
    _error(client.post(path, data="[1", content_type="application/json"), 400, "invalid_request")
    _error(client.post(path, json=["up"]), 400, "invalid_request")
    lone_surrogate = b'{"rating": "down", "comment": "\\ud800"}'
    _error(client.post(path, data=lone_surrogate, content_type="application/json"), 400, "invalid_request")
    assert client.post(path, json={"rating": "down", "comment": "é" * 500}).status_code == 201


def test_a_body_over_the_cap_is_413():
    client = app_with(max_body_bytes=200).test_client()
    job_id = _job()
    response = client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "down", "comment": "x" * 300})
    _error(response, 413, "payload_too_large")
    assert _feedback(job_id) is None


@pytest.mark.parametrize("status", ["queued", "routing", "generating", "failed", "cancelled"])
def test_only_a_succeeded_job_gets_feedback(client, status):
    job_id = _job(status, routing=None if status in ("queued", "routing") else ROUTING)
    error = _error(client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"}), 409, "conflict")
    assert error["job_status"] == status and "succeeded" in error["message"]
    assert _feedback(job_id) is None


def test_unknown_job_is_404(client):
    _error(client.post(f"/v1/jobs/{uuid.uuid4().hex}/feedback", json={"rating": "up"}), 404, "not_found")
    _error(client.post("/v1/jobs/not-a-job/feedback", json={"rating": "up"}), 404, "not_found")


def test_feedback_is_scoped_to_the_jobs_key():
    app = app_with(api_keys_required=True)
    client = app.test_client()
    (own, own_record), (other, _) = new_api_key("feedback-owner"), new_api_key("feedback-other")
    admin, _ = new_api_key("feedback-admin", admin=True)
    job_id = _job(prompt="a prompt of the owner's", key_id=own_record["id"])
    path = f"/v1/jobs/{job_id}/feedback"
    _error(client.post(path, json={"rating": "up"}), 401, "unauthorized")
    # Another key's job does not exist for it, as for GET /v1/jobs/<id>.
    assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    _error(client.post(path, json={"rating": "up"}, headers={"Authorization": f"Bearer {other}"}), 404, "not_found")
    assert _feedback(job_id) is None
    assert client.post(path, json={"rating": "up"}, headers={"Authorization": f"Bearer {own}"}).status_code == 201
    assert _feedback(job_id)["key_id"] == own_record["id"]
    # An admin key sees every job (as on GET); the feedback stays the job's key's.
    replaced = client.post(path, json={"rating": "down"}, headers={"Authorization": f"Bearer {admin}"})
    assert replaced.status_code == 200 and _feedback(job_id)["key_id"] == own_record["id"]


def test_feedback_shares_the_write_routes_rate_limit():
    client = app_with(api_keys_required=True, rate_limit="2/minute", routing_max_depth=0).test_client()
    key, record = new_api_key("feedback-rate")
    headers = {"Authorization": f"Bearer {key}"}
    job_id = _job(key_id=record["id"])
    assert client.post("/v1/jobs", json={"prompt": "hi"}, headers=headers).status_code == 429  # queue_full
    assert client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"}, headers=headers).status_code == 201
    refused = client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"}, headers=headers)
    _error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) > 0
    # Reading stays on its own budget.
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200


def test_an_exact_cache_hit_keeps_the_whole_prompt_from_the_cache_entry(client):
    """An exact hit's record keeps only the prompt's start; the feedback needs all of it."""
    prompt = "explain in detail why " + "the sky is blue " * 30
    entry_key = f"test:feedback:entry:{uuid.uuid4().hex}"
    job_store().redis.set(entry_key, json.dumps({"prompt": prompt, "response": "Rayleigh.", "tier": "large"}), ex=600)
    request = {"key_id": None, "prompt": prompt[:PROMPT_PREVIEW_CHARS], "cached": "exact"}
    job_id = _job(request=request, result={"cached": "exact", "routing": ROUTING},
                  result_ref={"key": entry_key, "fields": ["response", "tier"]})
    assert client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"}).status_code == 201
    assert _feedback(job_id)["prompt"] == prompt
    job_store().redis.delete(entry_key)  # the entry expired: only a start of the prompt is left
    error = _error(client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"}), 409, "conflict")
    assert "prompt" in error["message"]


def test_an_operator_prunes_old_feedback_with_its_prompts(client):
    old, recent = _job(prompt="an old prompt"), _job(prompt="a recent prompt")
    for job_id in (old, recent):
        assert client.post(f"/v1/jobs/{job_id}/feedback", json={"rating": "up"}).status_code == 201
    with feedback_store().engine.begin() as connection:
        connection.execute(update(job_feedback).where(job_feedback.c.job_id == old)
                           .values(updated_at=datetime.now(timezone.utc) - timedelta(days=40)))
    result = app_with().test_cli_runner().invoke(args=["feedback", "prune", "--older-than-days", "30"])
    assert result.exit_code == 0, result.output
    assert "deleted 1 feedback rows" in result.output
    assert _feedback(old) is None and _feedback(recent) is not None
    assert app_with().test_cli_runner().invoke(args=["feedback", "prune"]).exit_code != 0, "the age is required"


def test_routing_fields_name_the_routed_tier_before_a_fallback():
    moved = {**ROUTING, "tier": "large", "fallback": {"from": "small", "to": "large", "reason": "timeout"}}
    fields = routing_fields({"routing": moved, "result": {"tier": "large"}})
    assert fields["routed_tier"] == "small" and fields["answered_tier"] == "large"
    assert routing_fields({}) == {"routed_tier": None, "routed_intent": None, "routed_score": None,
                                  "routed_rule": None, "answered_tier": None}


def test_the_migration_and_the_store_work_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    store = FeedbackStore(database_engine(url))
    routing = routing_fields({"routing": ROUTING, "result": {"tier": "small"}})
    row, replaced = store.save("a" * 32, None, "nul\x00prompt", "down", routing, "large", "slow")
    assert not replaced and row["prompt"] == "nul\ufffdprompt" and row["key_id"] == "-"
    time.sleep(0.01)
    row, replaced = store.save("a" * 32, None, "nul\x00prompt", "up", routing)
    assert replaced and row["rating"] == "up" and row["tier_wanted"] is None
    assert [entry["job_id"] for entry in store.entries()] == ["a" * 32]
    assert store.delete_before(datetime.now(timezone.utc) + timedelta(seconds=1)) == 1 and store.entries() == []


def test_the_openapi_document_describes_the_feedback_endpoint(client):
    document = client.get("/openapi.json").get_json()
    post = document["paths"]["/v1/jobs/{job_id}/feedback"]["post"]
    assert {"200", "201", "400", "404", "409", "429"} <= set(post["responses"])
    schema = document["components"]["schemas"]["FeedbackRequest"]
    assert schema["required"] == ["rating"] and schema["additionalProperties"] is False
    assert schema["properties"]["comment"]["maxLength"] == 500


# ---------------------------------------------------------------- feedback as labelled rows


def test_feedback_rows_follow_the_labelling_rules():
    import numpy as np

    from routing.feedback import assign_intents, feedback_rows
    from routing.intents import load_route_table

    table = load_route_table()
    entries = [
        {"prompt": "a", "rating": "down", "tier_wanted": "large", "routed_intent": "code_help",
         "answered_tier": "small"},
        {"prompt": "b", "rating": "down", "tier_wanted": None, "routed_intent": "code_help", "answered_tier": "small"},
        {"prompt": "c", "rating": "up", "routed_intent": "factual", "routed_tier": "small", "answered_tier": "small"},
        {"prompt": "d", "rating": "up", "routed_intent": "factual", "routed_tier": "small", "answered_tier": "large"},
        {"prompt": "e", "rating": "down", "tier_wanted": "small", "routed_intent": "code_help",
         "answered_tier": "large"},  # a fallback: code_help fell under its threshold
    ]
    rows, counts = feedback_rows(entries, table)
    assert [(r["prompt"], r["tier"], r["intent"]) for r in rows] == [
        ("a", "large", None), ("c", "small", "factual"), ("d", "large", None), ("e", "small", "code_help")]
    assert counts["ignored_down_without_tier"] == 1 and counts["rows"] == 4 and counts["entries"] == 5
    # An intent-less row gets its tier's best-scoring intent.
    names = [i.name for i in table.intents]
    scores = np.zeros((4, len(names)))
    scores[0, names.index("code_help")], scores[0, names.index("step_by_step")] = 0.9, 0.05
    scores[2, names.index("creative")] = 0.3
    labelled = assign_intents(rows, table, scores)
    assert [r["intent"] for r in labelled] == ["step_by_step", "factual", "creative", "code_help"]


# ---------------------------------------------------------------- the calibration experiment

# Function-writing prompts: the shipped router takes them for `code_help` (small) with high confidence;
# writing a whole function is the large tier's work. Written for this test (not taken from routing/data,
# its ood/ sets included, nor from the routes file). Even ones are rated, odd ones are held out.
FUNCTION_PROMPTS = [
    'Complete this Python function:\ndef is_palindrome(s: str) -> bool:\n    """Return True if s reads the same '
    'backwards, ignoring case, spaces and punctuation."""',
    'Complete this Python function:\ndef flatten(nested):\n    """Flatten an arbitrarily nested list of lists into '
    'one flat list, keeping the order."""',
    'Complete this Python function:\ndef merge_intervals(intervals):\n    """Merge overlapping [start, end] '
    'intervals and return them sorted by start."""',
    'Complete this Python function:\ndef word_count(text):\n    """Return a dict mapping each lower-cased word to '
    'the number of times it occurs."""',
    'Complete this Python function:\ndef fib(n):\n    """Return the n-th Fibonacci number in O(log n) time using '
    'matrix exponentiation."""',
    'Complete this Python function:\ndef rotate_matrix(m):\n    """Rotate a square matrix 90 degrees clockwise, '
    'in place."""',
    'Complete this Python function:\ndef roman_to_int(s: str) -> int:\n    """Convert a Roman numeral such as '
    '\'MCMXCIV\' to an integer."""',
    'Complete this Python function:\ndef top_k_frequent(nums, k):\n    """Return the k most frequent elements of '
    'nums, most frequent first."""',
    'Complete this Python function:\ndef parse_csv_line(line):\n    """Split one CSV line on commas, honouring '
    'double-quoted fields that contain commas."""',
    'Complete this Python function:\ndef levenshtein(a, b):\n    """Return the edit distance between strings a and '
    'b."""',
    'Complete this Python function:\ndef chunk(iterable, size):\n    """Yield successive lists of at most size items '
    'from iterable."""',
    'Complete this Python function:\ndef dijkstra(graph, start):\n    """Shortest distances from start in a weighted '
    'graph given as {node: {neighbour: weight}}."""',
    'Complete this Python function:\ndef validate_email(address):\n    """Return True when address is a '
    'syntactically valid e-mail address."""',
    'Complete this Python function:\ndef matrix_multiply(a, b):\n    """Multiply two matrices given as lists of '
    'rows; raise ValueError if the shapes do not fit."""',
    'Complete this Python function:\ndef primes_up_to(n):\n    """Return every prime <= n with the sieve of '
    'Eratosthenes."""',
    'Complete this Python function:\ndef camel_to_snake(name):\n    """Convert a CamelCase identifier to '
    'snake_case."""',
    'Complete this Python function:\ndef median(values):\n    """Return the median of a non-empty list of '
    'numbers."""',
    'Complete this Python function:\ndef retry(func, attempts=3, delay=1.0):\n    """Call func, retrying on any '
    'exception with exponential backoff; re-raise the last one."""',
    'Complete this Python function:\ndef transpose(matrix):\n    """Transpose a matrix given as a list of equal-'
    'length rows."""',
    'Complete this Python function:\ndef run_length_encode(s):\n    """\'aaab\' -> [(\'a\', 3), (\'b\', 1)]"""',
    'Complete this Python function:\ndef has_cycle(graph):\n    """Return True if the directed graph {node: '
    '[successors]} contains a cycle."""',
    'Complete this Python function:\ndef moving_average(xs, window):\n    """Return the averages of every window of '
    'consecutive values in xs."""',
    'Complete this Python function:\ndef balanced(brackets: str) -> bool:\n    """True if every (, [ and { in '
    'brackets is closed in the right order."""',
    'Complete this Python function:\ndef two_sum(nums, target):\n    """Return the indices of the two numbers that '
    'add up to target."""',
    'Complete this Python function:\ndef to_base(n: int, base: int) -> str:\n    """Write the non-negative '
    'integer n in the given base (2 to 36)."""',
    'Complete this Python function:\ndef longest_common_prefix(words):\n    """Return the longest prefix shared by '
    'every string in words."""',
    'Complete this Python function:\ndef dedupe(items):\n    """Remove duplicates from items, keeping the first '
    'occurrence of each, in order."""',
    'Complete this Python function:\ndef binary_search(xs, target):\n    """Return the index of target in the '
    'sorted list xs, or -1."""',
    'Complete this JavaScript function:\nfunction debounce(fn, wait) {\n  // return a version of fn that runs only '
    'after wait ms without calls\n}',
    'Complete this JavaScript function:\nfunction deepEqual(a, b) {\n  // true when a and b are structurally equal\n}',
    'Complete this Go function:\nfunc Reverse(s string) string {\n\t// reverse a UTF-8 string rune by rune\n}',
    'Complete this Go function:\nfunc WordFreq(text string) map[string]int {\n\t// count words, ignoring case\n}',
    'Complete this Rust function:\nfn gcd(a: u64, b: u64) -> u64 {\n    todo!()\n}',
    'Complete this Rust function:\nfn is_anagram(a: &str, b: &str) -> bool {\n    todo!()\n}',
    'Complete this Java method:\npublic static String compress(String s) {\n    // "aaabb" -> "a3b2"\n}',
    'Complete this Java method:\npublic static int[] twoSum(int[] nums, int target) {\n    // indices of the two '
    'numbers that add up to target\n}',
    'Complete this C function:\nint count_bits(unsigned int x) {\n    /* the number of bits set in x */\n}',
    'Complete this C function:\nchar *str_reverse(char *s) {\n    /* reverse s in place and return it */\n}',
    'Complete this TypeScript function:\nfunction groupBy<T>(items: T[], key: (t: T) => string): Record<string, '
    'T[]> {\n  // group items by key\n}',
    'Complete this TypeScript function:\nfunction range(start: number, end: number, step = 1): number[] {\n  // '
    'like Python\'s range\n}',
]
RATED, HELD_OUT = FUNCTION_PROMPTS[0::2], FUNCTION_PROMPTS[1::2]
# Feedback of the other kinds on the way (written for this test too): confirmations, and `down` without a tier.
CONFIRMED_SMALL = ["what's the capital of peru", "how many grams in an ounce", "thanks, that worked!",
                   "how do i rename a git branch"]
DOWN_WITHOUT_TIER = ["write a haiku about trains", "who won the 1998 world cup"]


def _tier_accuracy(router, prompts: list[str], tier: str) -> float:
    decisions = [router.decide(v) for v in router.encode(prompts)]
    return round(sum(d.tier == tier for d in decisions) / len(prompts), 4)


@pytest.fixture(scope="module")
def encode():
    from routing.calibrate import _memoised
    from routing.embedder import routing_embedder

    return _memoised(routing_embedder().encode)


def _rate(client, router, prompt: str, body: dict) -> None:
    """A job routed by `router` and answered, then rated through the API. Routed on the embedding alone:
    what calibration fits (text rules, where the router has them, come after it)."""
    decision = router.decide(router.encode([prompt])[0])
    job_id = _job(prompt=prompt, routing=decision.as_dict())
    assert client.post(f"/v1/jobs/{job_id}/feedback", json=body).status_code == 201


def test_feedback_moves_misrouted_function_prompts_to_large(client, tmp_path, encode, capsys):
    from routing import calibrate
    from routing.intents import INTENTS_FILE
    from routing.live import LiveRouter, load_router
    from routing.params import PARAMS_FILE

    assert len(RATED) >= 15 and len(HELD_OUT) >= 15 and not set(RATED) & set(HELD_OUT)
    feedback_store().delete_before(datetime.now(timezone.utc) + timedelta(days=1))  # this session's schema only
    routes, params = tmp_path / "routes.yaml", tmp_path / "params.json"
    shutil.copy(INTENTS_FILE, routes)
    shutil.copy(PARAMS_FILE, params)
    live = LiveRouter(encode, routes, params)  # as the routing worker holds it
    before = live.get()
    # The known misroute: function-writing prompts go small, on both halves.
    assert _tier_accuracy(before, RATED, "large") <= 0.35 and _tier_accuracy(before, HELD_OUT, "large") <= 0.35

    for prompt in RATED:
        _rate(client, before, prompt, {"rating": "down", "tier": "large", "comment": "needed the large model"})
    for prompt in CONFIRMED_SMALL:
        _rate(client, before, prompt, {"rating": "up"})
    for prompt in DOWN_WITHOUT_TIER:
        _rate(client, before, prompt, {"rating": "down"})
    assert len(feedback_store().entries()) == len(RATED) + len(CONFIRMED_SMALL) + len(DOWN_WITHOUT_TIER)

    # Tier labels alone only move the thresholds (to another file: the live router must not see it).
    tiers_only = tmp_path / "tiers-only.json"
    shutil.copy(PARAMS_FILE, tiers_only)
    assert calibrate.main(["--feedback", "--feedback-tiers-only", "--routes", str(routes), "--out", str(tiers_only),
                           "--json"]) == 0
    thresholds_fit = json.loads(capsys.readouterr().out)
    thresholds_router = load_router(routes, tiers_only, encode)

    # The command as documented, writing the parameters file the live router follows.
    assert calibrate.main(["--feedback", "--routes", str(routes), "--out", str(params), "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["data"].endswith("dev.jsonl") and fit["holdout"].endswith("test.jsonl")
    used = fit["feedback"]
    assert used["rows"] == len(RATED) + len(CONFIRMED_SMALL) and used["ignored_down_without_tier"] == 2
    assert used["large"] == len(RATED) and used["intents"] is True
    after = live.get()
    assert after is not before, "the routing worker's router reloads the new parameters file"

    figures = {
        "held_out_before": _tier_accuracy(before, HELD_OUT, "large"),
        "held_out_thresholds_only": _tier_accuracy(thresholds_router, HELD_OUT, "large"),
        "held_out_after": _tier_accuracy(after, HELD_OUT, "large"),
        "test_before": fit["holdout_before"]["accuracy"],
        "test_thresholds_only": thresholds_fit["holdout_after"]["accuracy"],
        "test_after": fit["holdout_after"]["accuracy"],
        "test_large_recall": [fit["holdout_before"]["large_recall"], fit["holdout_after"]["large_recall"]],
        "test_small_recall": [fit["holdout_before"]["small_recall"], fit["holdout_after"]["small_recall"]],
        "chosen": fit["chosen"],
    }
    with capsys.disabled():
        print(f"\ncalibration with feedback: {json.dumps(figures)}")
    assert figures["held_out_after"] >= figures["held_out_before"] + 0.25, figures
    assert figures["test_after"] >= figures["test_before"] - 0.005, figures  # within half a point, or better
    # Thresholds alone move the slice only by sending much small work to large.
    assert figures["test_thresholds_only"] < figures["test_before"] - 0.005, figures
    # The confirmed small prompts stay small.
    assert _tier_accuracy(after, CONFIRMED_SMALL, "small") == 1.0
