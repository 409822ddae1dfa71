"""`GET /`: the playground page (plain HTML, CSS and JavaScript; no build step)."""
from __future__ import annotations

from flask import Blueprint, render_template

from webapp.context import web

bp = Blueprint("playground", __name__)


@bp.get("/")
def playground():
    context = web()
    return render_template("playground.html", flower_url=context.settings.flower_url,
                           metrics_url=context.settings.metrics_url, models=context.models)
