"""The settings object: documented variable by variable, parsed strictly, frozen, read once per process."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import settings
from settings import FALSE_WORDS, OUTSIDE_SETTINGS, TRUE_WORDS, Settings, environment_names, get_settings, load_settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
ROW = re.compile(r"^\|[^|\n]*\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", re.MULTILINE)


def documented_names() -> list[str]:
    return ROW.findall(DOC.read_text())


def test_the_configuration_table_lists_exactly_the_settings():
    documented = documented_names()
    assert len(documented) > 50, "the table's rows were not found; did its format change?"
    expected = environment_names() | OUTSIDE_SETTINGS
    missing, extra = sorted(expected - set(documented)), sorted(set(documented) - expected)
    assert not missing and not extra, (f"not in docs/configuration.md: {missing}; "
                                       f"documented but read by nothing: {extra}")
    repeated = sorted({name for name in documented if documented.count(name) > 1})
    assert not repeated, f"documented twice: {repeated}"


def test_no_setting_is_also_called_outside():
    assert not environment_names() & OUTSIDE_SETTINGS


def test_every_field_is_its_upper_cased_variable():
    names = {field.name for field in dataclasses.fields(Settings)}
    assert environment_names() == {name.upper() for name in names}
    assert "JOB_TTL_S" in environment_names() and "REDIS_URL" in environment_names()


# --- Parsing -------------------------------------------------------------------------------------------------------

def test_unset_values_keep_the_defaults():
    assert load_settings({}) == Settings()


def test_ints_floats_and_strings_are_parsed():
    loaded = load_settings({"JOB_TTL_S": "42", "REDIS_TIMEOUT_S": "1.5", "RATE_LIMIT": "5/second",
                            "SEMANTIC_CACHE_THRESHOLD": " 0.75 ", "ROUTING_MAX_DEPTH": "7"})
    assert loaded.job_ttl_s == 42 and isinstance(loaded.job_ttl_s, int)
    assert loaded.redis_timeout_s == 1.5 and isinstance(loaded.redis_timeout_s, float)
    assert loaded.semantic_cache_threshold == 0.75
    assert loaded.rate_limit == "5/second"
    assert loaded.routing_max_depth == 7 and isinstance(loaded.routing_max_depth, int)


@pytest.mark.parametrize("word", [*TRUE_WORDS, "TRUE", "Yes", " on "])
def test_true_words(word: str):
    assert load_settings({"API_KEYS_REQUIRED": word}).api_keys_required is True
    assert load_settings({"TIER_FALLBACK": word}).tier_fallback is True


@pytest.mark.parametrize("word", [*FALSE_WORDS, "FALSE", "No", " off "])
def test_false_words(word: str):
    assert load_settings({"TIER_FALLBACK": word}).tier_fallback is False
    assert load_settings({"HF_HUB_OFFLINE": word}).hf_hub_offline is False


def test_bool_words_are_the_documented_ones():
    assert set(TRUE_WORDS) == {"1", "true", "yes", "on"}
    assert set(FALSE_WORDS) == {"0", "false", "no", "off"}


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_values_keep_the_defaults(value: str):
    names = ("JOB_TTL_S", "REDIS_TIMEOUT_S", "TIER_FALLBACK", "ROUTING_MAX_DEPTH", "VISIBILITY_TIMEOUT_S",
             "API_KEYS_REQUIRED", "SEMANTIC_CACHE_THRESHOLD", "REDIS_URL", "RATE_LIMIT", "EMBEDDING_BACKEND",
             "ENGINE_BLAS", "STATSD_PREFIX")
    loaded = load_settings(dict.fromkeys(names, value))
    assert loaded == Settings()
    assert loaded.routing_max_depth is None and loaded.visibility_timeout_s is None


@pytest.mark.parametrize("name,value", [
    ("JOB_TTL_S", "abc"),
    ("JOB_TTL_S", "1.5"),
    ("TIER_FALLBACK", "maybe"),
    ("API_KEYS_REQUIRED", "2"),
    ("REDIS_TIMEOUT_S", "fast"),
    ("ROUTING_MAX_DEPTH", "many"),
    ("VISIBILITY_TIMEOUT_S", "1h"),
])
def test_a_bad_value_names_its_variable(name: str, value: str):
    with pytest.raises(ValueError, match=re.escape(name)):
        load_settings({name: value})


@pytest.mark.parametrize("name", ["JOB_TTL_S", "PROMPT_MAX_CHARS", "PROMPT_MAX_TOKENS", "MAX_TOKENS_LIMIT",
                                  "MAX_DELIVERIES", "ENGINE_MAX_BATCH", "RECENT_JOBS_MAX"])
def test_limits_below_one_are_refused(name: str):
    with pytest.raises(ValueError, match=name):
        load_settings({name: "0"})


def test_visibility_timeout_must_exceed_the_longest_time_limit():
    longest = max(Settings().time_limits().values())
    assert Settings().visibility_timeout() == int(longest) + 60
    for value in (str(int(longest)), "10"):
        with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT_S"):
            load_settings({"VISIBILITY_TIMEOUT_S": value})
    assert load_settings({"VISIBILITY_TIMEOUT_S": str(int(longest) + 1)}).visibility_timeout() == int(longest) + 1
    # Raising a time limit past the given visibility timeout is refused too.
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT_S"):
        load_settings({"VISIBILITY_TIMEOUT_S": "700", "SMALL_TIME_LIMIT_S": "900"})
    # Without one, the default follows the longest time limit.
    assert load_settings({"SMALL_TIME_LIMIT_S": "900"}).visibility_timeout() == 960


def test_queue_limits_apply_per_queue_overrides():
    assert Settings().queue_limits() == {"routing": 100, "small-queue": 100, "large-queue": 100}
    loaded = load_settings({"QUEUE_MAX_DEPTH": "7", "SMALL_QUEUE_MAX_DEPTH": "3", "ROUTING_MAX_DEPTH": "0"})
    assert loaded.queue_limits() == {"routing": 0, "small-queue": 3, "large-queue": 7}


def test_queue_limits_name_the_real_queues():
    from jobs.queues import QUEUES

    assert set(Settings().queue_limits()) == set(QUEUES)


def test_settings_are_frozen():
    loaded = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.job_ttl_s = 5
    changed = loaded.replace(job_ttl_s=5)
    assert changed.job_ttl_s == 5 and loaded.job_ttl_s == Settings().job_ttl_s


def test_replace_checks_like_loading():
    with pytest.raises(ValueError, match="PROMPT_MAX_CHARS"):
        Settings().replace(prompt_max_chars=0)


# --- Read once -----------------------------------------------------------------------------------------------------

def test_settings_are_read_once_per_process(monkeypatch):
    first = get_settings()
    assert get_settings() is first
    monkeypatch.setenv("JOB_TTL_S", str(first.job_ttl_s + 1))
    monkeypatch.setenv("PROMPT_MAX_CHARS", "3")
    again = get_settings()
    assert again is first, "a changed environment must not give a process new settings"
    assert again.job_ttl_s == first.job_ttl_s and again.prompt_max_chars == first.prompt_max_chars


def test_the_test_session_settings_come_from_the_environment():
    import os

    assert get_settings().redis_url == os.environ["REDIS_URL"]
    assert get_settings().statsd_port == int(os.environ["STATSD_PORT"])
    assert settings.get_settings() is get_settings()


@pytest.mark.parametrize("name", ["STREAM_HEARTBEAT_S", "CANCEL_POLL_S", "WORKER_HEARTBEAT_S", "ENGINE_STALL_S",
                                  "REDIS_TIMEOUT_S", "WAIT_TIMEOUT_S", "SMALL_TIME_LIMIT_S"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_waits_and_poll_intervals_must_be_above_zero(name: str, value: str):
    """Zero would make a loop spin: keep-alives, cancel polls, presence beats."""
    with pytest.raises(ValueError, match=f"{name} must be above 0"):
        load_settings({name: value})


def test_the_replica_wait_must_end_and_end_before_the_web_gives_up_on_redis():
    assert load_settings({"REDIS_MIN_REPLICAS": "1"}).redis_replica_wait_ms == 200
    for wait in ("0", "500", "2000"):  # 0: WAIT blocks forever; 500 ms and up: REDIS_TIMEOUT_S (0.5 s) ends it first
        with pytest.raises(ValueError, match="REDIS_REPLICA_WAIT_MS"):
            load_settings({"REDIS_MIN_REPLICAS": "1", "REDIS_REPLICA_WAIT_MS": wait})
    assert load_settings({"REDIS_REPLICA_WAIT_MS": "0"}).redis_min_replicas == 0, "no wait, nothing to check"
