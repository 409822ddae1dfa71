"""`GET /v1/usage`: what the caller's key used per day, and its month against its budget."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Blueprint, g, jsonify, request
from marshmallow import EXCLUDE, Schema, fields, validate

from tenants.meter import NO_KEY, usage_month
from webapp.apikeys import caller_id, key_store
from webapp.context import web
from webapp.errors import APIError

bp = Blueprint("usage", __name__)


class UsageQuery(Schema):
    """Query string of `GET /v1/usage`."""

    class Meta:
        unknown = EXCLUDE

    days = fields.Integer(load_default=31, validate=validate.Range(1, 366))
    # admin keys only; a key id is hex (tenants.keys), or "-" for requests made without a key
    key_id = fields.String(load_default=None, validate=validate.Regexp(r"^([0-9a-f]{1,16}|-)$"))


def _owner(asked: str | None) -> str:
    """Whose usage: the caller's own; an admin key may name another key."""
    own = caller_id() or NO_KEY
    if asked is None or asked == own:
        return own
    if not (g.get("api_key") or {}).get("admin"):
        raise APIError(403, "forbidden", "only an admin key may read another key's usage")
    if key_store().get(asked) is None:
        raise APIError(404, "not_found", f"no key {asked}")
    return asked


@bp.get("/v1/usage")
def get_usage():
    query = UsageQuery().load(request.args)
    owner = _owner(query["key_id"])
    since = (datetime.now(timezone.utc) - timedelta(days=query["days"] - 1)).date()
    ledger, month = web().tenants.ledger, usage_month()
    key = g.get("api_key") if owner == caller_id() else key_store().get(owner)
    budget = (key or {}).get("monthly_token_budget")
    used = ledger.month_tokens(owner, month)
    return jsonify({
        "key_id": owner,
        "month": {"month": month, "tokens": used, "budget": budget,
                  "remaining": max(0, budget - used) if budget else None},
        "days": ledger.usage(owner, since),
    })
