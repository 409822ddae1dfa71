"""`GET /`: the playground page (plain HTML, CSS and JavaScript; no build step).

The page and its static files load without an API key (a browser cannot send one when it opens a
page; `webapp/apikeys.py` lists them as public). With keys on, the page asks for a key and sends
it with every API call it makes.
"""
from __future__ import annotations

from flask import Blueprint, render_template

from webapp.context import web

bp = Blueprint("playground", __name__)


@bp.get("/")
def playground():
    context = web()
    return render_template("playground.html", flower_url=context.settings.flower_url,
                           metrics_url=context.settings.metrics_url, models=context.models,
                           keys_required=context.settings.api_keys_required)
