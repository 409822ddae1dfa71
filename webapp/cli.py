"""Operators' commands (run with `flask --app wsgi`): `flask keys create|list|revoke`, `flask usage`,
`flask audit` and `flask feedback prune`. Each brings the database to the newest schema first."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from jobs import control
from jobs.owners import in_flight_ids
from tenants.audit import record_audit
from tenants.database import upgrade
from tenants.feedback import FeedbackStore
from tenants.meter import usage_month
from tenants.schema import COUNTERS
from webapp.apikeys import key_store
from webapp.context import web

keys = AppGroup("keys", help="Manage API keys (kept hashed in the SQL database).")


def _stamp(epoch: Optional[float]) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if epoch else "-"


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--rate-limit", default=None, help='This key\'s own limit, e.g. "10/minute" (default RATE_LIMIT).')
@click.option("--admin", is_flag=True, help="The key may see and cancel every job (others: only their own).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None,
              help="Most of this key's jobs that may be unfinished at once (past it: 429).")
@click.option("--max-priority", type=click.IntRange(0, 9), default=None,
              help="This key's priority ceiling: its jobs run at this priority at most.")
@click.option("--monthly-token-budget", type=click.IntRange(min=1), default=None,
              help="Tokens (prompt and completion) per calendar month, UTC (past it: 429 budget_exceeded).")
def create_key(name: str, rate_limit: Optional[str], admin: bool, max_in_flight: Optional[int],
               max_priority: Optional[int], monthly_token_budget: Optional[int]) -> None:
    """Create a key and print it once; only its hash is kept."""
    if rate_limit:
        from limits import parse_many

        try:
            parse_many(rate_limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate-limit") from exc
    upgrade(web().settings.database())
    key, record = key_store().create(name, rate_limit, admin, max_in_flight, max_priority, monthly_token_budget)
    role = "admin key" if admin else "key"
    click.echo(f"created {role} {record['id']} ({name}); store it now, it is not shown again:")
    click.echo(key)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Revoked keys too.")
def list_keys(include_revoked: bool) -> None:
    """List keys: id, creation (and revocation) time, own limits and role (never the key)."""
    upgrade(web().settings.database())
    for record in key_store().list(include_revoked):
        role = "admin" if record.get("admin") else "-"
        budget = record.get("monthly_token_budget") or "-"
        revoked = f"  revoked {_stamp(record['revoked_at'])}" if record.get("revoked_at") else ""
        click.echo(f"{record['id']}  {_stamp(record['created_at'])}  {record.get('rate_limit') or '-':<12}  "
                   f"{role:<5}  budget {budget!s:<10}  {record['name']}{revoked}")


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke the key with id KEY_ID: it is refused from its next request on, and its unfinished jobs are
    cancelled. Running it again for a revoked key repeats both (after a revocation that failed half way)."""
    upgrade(web().settings.database())
    if not key_store().revoke(key_id):
        raise click.ClickException(f"no key with id {key_id}")
    cancelled = cancel_jobs_of(key_id)
    web().tenants.ledger.flush()  # the cancels' audit entries reach SQL before this process ends
    click.echo(f"revoked key {key_id}; cancelled {cancelled} unfinished job(s)")


def cancel_jobs_of(key_id: str) -> int:
    """Cancel every unfinished job of `key_id` (a revoked key's work stops with it); how many."""
    store = web().store
    cancelled = 0
    for job_id in in_flight_ids(store, key_id):
        record = store.get(job_id)
        if record and control.cancel_job(store, record)["status"] == "cancelled":
            record_audit(store.redis, "operator", "job_cancelled", job_id, {"owner": key_id, "why": "key revoked"})
            cancelled += 1
    return cancelled


@click.command("usage")
@with_appcontext
@click.option("--key", "key_id", default=None, help="One key's id (default: every key).")
@click.option("--days", type=click.IntRange(1, 366), default=7, help="How many days back, today included.")
def usage(key_id: Optional[str], days: int) -> None:
    """Usage per key and day (UTC): requests, tokens, cache hits and jobs per tier, and the month's tokens."""
    upgrade(web().settings.database())
    ledger = web().tenants.ledger
    ledger.flush()
    since = (datetime.now(timezone.utc) - timedelta(days=days - 1)).date()
    owners = [key_id] if key_id else sorted(set(ledger.owners()) | {record["id"] for record in key_store().list()})
    click.echo(f"{'key':<10}{'day':<12}" + "".join(f"{counter:>19}" for counter in COUNTERS))
    for owner in owners:
        for day in ledger.usage(owner, since):
            click.echo(f"{owner:<10}{day['day']:<12}" + "".join(f"{day[counter]:>19}" for counter in COUNTERS))
    month = usage_month()
    for owner in owners:
        click.echo(f"{owner}: {ledger.month_tokens(owner, month)} tokens in {month}")


@click.command("audit")
@with_appcontext
@click.option("--limit", type=click.IntRange(1, 10000), default=50)
def audit(limit: int) -> None:
    """The newest audit entries: keys created and revoked, jobs cancelled and by whom."""
    upgrade(web().settings.database())
    ledger = web().tenants.ledger
    ledger.flush()
    for entry in ledger.audit_entries(limit):
        detail = f"  {entry['detail']}" if entry["detail"] else ""
        click.echo(f"{_stamp(entry['at'])}  {entry['actor']:<10}  {entry['action']:<14}  {entry['subject']}{detail}")


feedback = AppGroup("feedback", help="Answer feedback kept for routing calibration (prompts included).")


@feedback.command("prune")
@click.option("--older-than-days", type=click.IntRange(min=1), required=True,
              help="Delete feedback last updated more than this many days ago.")
def prune_feedback(older_than_days: int) -> None:
    """Delete old feedback rows, with the prompts and comments they keep."""
    upgrade(web().settings.database())
    cutoff = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    deleted = FeedbackStore(web().tenants.ledger.engine).delete_before(cutoff)
    record_audit(web().store.redis, "operator", "feedback_pruned", f"before {cutoff:%Y-%m-%d %H:%M}Z", {"rows": deleted})
    web().tenants.ledger.flush()
    click.echo(f"deleted {deleted} feedback rows last updated before {cutoff:%Y-%m-%d %H:%M}Z")


def init_app(app: Flask) -> None:
    for command in (keys, usage, audit, feedback):
        app.cli.add_command(command)
