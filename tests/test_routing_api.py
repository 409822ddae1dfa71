"""Every result explains its routing, on the job API and the synchronous endpoint, from real workers."""
from __future__ import annotations

import pytest

from helpers import job_store, semantic_cache, wait_for_job
from jobs.queues import generation_task
from routing.embedder import routing_embedder
from routing.intents import load_route_table, routes_path
from routing.live import load_router
from routing.params import params_path
from routing.router import RULES, UNCLASSIFIED

pytestmark = pytest.mark.usefixtures("workers")

EXPLANATION_FIELDS = {"intent", "tier", "score", "threshold", "rule", "top", "language"}


@pytest.fixture(scope="module")
def local_router():
    """The router the worker should be running: same files, same model."""
    return load_router(routes_path(), params_path(), routing_embedder().encode)


def assert_explains(routing: dict) -> None:
    """The explanation is complete and consistent with the routes file."""
    assert set(routing) == EXPLANATION_FIELDS
    intents = {i.name: i for i in load_route_table().intents}
    assert routing["intent"] in intents
    assert routing["rule"] in ("matched", "fallback", "forced", *RULES)
    assert len(routing["top"]) == 3
    assert all(name in intents and isinstance(score, float) for name, score in routing["top"])
    scores = [score for _, score in routing["top"]]
    assert scores == sorted(scores, reverse=True)
    assert routing["score"] <= scores[0]
    if routing["rule"] == "matched":
        assert routing["score"] >= routing["threshold"]
        assert routing["tier"] == intents[routing["intent"]].tier


@pytest.mark.parametrize("prompt", [
    "hey, how's it going?",
    "write a short poem about a lighthouse in a storm",
    "why does my python service leak memory after a few hours under load?",
])
def test_job_api_explains_the_decision_the_router_makes(client, local_router, prompt):
    response = client.post("/v1/jobs", json={"prompt": prompt, "max_tokens": 2})
    view = wait_for_job(client, response.get_json()["id"])
    assert view["status"] == "succeeded", view
    routing = view["routing"]
    assert_explains(routing)
    assert view["result"]["routing"] == routing
    assert view["tier"] == view["result"]["tier"] == routing["tier"]

    expected, _ = local_router.route(prompt)
    assert (routing["intent"], routing["tier"], routing["rule"]) == (expected.intent, expected.tier, expected.rule)
    assert routing["threshold"] == expected.threshold
    assert routing["score"] == pytest.approx(expected.score, abs=2e-3)
    assert [name for name, _ in routing["top"]] == [name for name, _ in expected.top]


def test_synchronous_endpoint_carries_the_explanation(client, local_router):
    prompt = "what's the capital of portugal?"
    response = client.post("/generate", json={"prompt": prompt, "max_tokens": 2})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_explains(body["routing"])
    assert body["routing"]["rule"] == "matched"
    assert body["tier"] == body["routing"]["tier"] == local_router.route(prompt)[0].tier
    assert body["intent"] == body["routing"]["intent"] and body["score"] == body["routing"]["score"]


def test_forced_tier_is_explained_as_forced_with_the_real_scores(client, local_router):
    prompt = "prove that there are infinitely many primes"
    response = client.post("/generate", json={"prompt": prompt, "max_tokens": 2, "tier": "small"})
    assert response.status_code == 200, response.get_json()
    routing = response.get_json()["routing"]
    assert_explains(routing)
    assert (routing["rule"], routing["tier"]) == ("forced", "small")
    unforced, _ = local_router.route(prompt)
    assert routing["intent"] == unforced.intent and unforced.tier == "large"


def test_a_forced_tier_that_bypasses_the_cache_is_not_embedded(client):
    """Nothing needs the embedding (the tier is chosen, the cache is not read): the web app sends the job
    straight to its tier, and the routing worker never sees it."""
    response = client.post("/generate", json={"prompt": "prove that there are infinitely many primes",
                                              "max_tokens": 2, "tier": "small"}, headers={"Cache-Control": "no-cache"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["routing"] == {"intent": UNCLASSIFIED, "tier": "small", "score": 0.0, "threshold": 0.0,
                               "rule": "forced", "top": [], "language": "en"}
    assert body["tier"] == "small" and body["cached"] is False
    assert job_store().redis.get(semantic_cache()._pending_key(body["id"])) is None, "no embedding was parked"
    assert set(job_store().deliveries(body["id"])) == {generation_task("small")}, "only the tier's task ran"
    assert "routing_started_at" not in job_store().get(body["id"])
