"""A serving process's start-up (`webapp.start_serving`, gunicorn's post_worker_init): the work its first
request would otherwise wait for is done before it."""
from __future__ import annotations

from helpers import app_with
from webapp import start_serving
from webapp.context import EXTENSION
from webapp.tokens import _tokenizers, prompt_tokens


def test_a_serving_process_loads_the_prompt_tokenizers_before_its_first_request():
    app = app_with(usage_flush_s=0)  # no usage flusher thread in the test process
    settings = app.extensions[EXTENSION].settings
    _tokenizers.cache_clear()
    start_serving(app)
    assert _tokenizers.cache_info().misses == 1, "start-up loads the tokenizers"
    prompt_tokens("How many tokens is this?", settings)  # what validating a request's prompt does
    info = _tokenizers.cache_info()
    assert (info.misses, info.hits) == (1, 1), "the first request found them loaded"


def test_a_request_validated_without_start_up_loads_them_itself():
    app = app_with(usage_flush_s=0)
    _tokenizers.cache_clear()
    prompt_tokens("How many tokens is this?", app.extensions[EXTENSION].settings)
    assert _tokenizers.cache_info().misses == 1
