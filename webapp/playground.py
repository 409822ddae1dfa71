"""`GET /`: the playground page (plain HTML, CSS and JavaScript; no build step)."""
from __future__ import annotations

import os

from flask import Blueprint, current_app, render_template

from engines.provider import served_models

bp = Blueprint("playground", __name__)


@bp.record_once
def _config_defaults(state) -> None:
    """Settings from the environment unless the app's test config set them."""
    state.app.config.setdefault("FLOWER_URL", os.environ.get("FLOWER_URL", "http://127.0.0.1:5555"))
    state.app.config.setdefault("METRICS_URL", os.environ.get("METRICS_URL", ""))


@bp.get("/")
def playground():
    config = current_app.config
    return render_template("playground.html", flower_url=config["FLOWER_URL"], metrics_url=config["METRICS_URL"],
                           models=served_models())
