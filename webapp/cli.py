"""`flask keys create|list|revoke`: manage API keys (run with `FLASK_APP=wsgi` or `flask --app wsgi`)."""
from __future__ import annotations

from datetime import datetime, timezone

import click
from flask import Flask
from flask.cli import AppGroup

from webapp.apikeys import key_store

keys = AppGroup("keys", help="Manage API keys (stored hashed in Redis).")


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--rate-limit", default=None, help='This key\'s own limit, e.g. "10/minute" (default RATE_LIMIT).')
@click.option("--admin", is_flag=True, help="The key may see and cancel every job (others: only their own).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=None,
              help="Most of this key's jobs that may be unfinished at once (past it: 429).")
@click.option("--max-priority", type=click.IntRange(0, 9), default=None,
              help="This key's priority ceiling: its jobs run at this priority at most.")
def create_key(name: str, rate_limit: str | None, admin: bool, max_in_flight: int | None,
               max_priority: int | None) -> None:
    """Create a key and print it once; only its hash is kept."""
    if rate_limit:
        from limits import parse_many

        try:
            parse_many(rate_limit)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate-limit") from exc
    key, record = key_store().create(name, rate_limit, admin, max_in_flight, max_priority)
    role = "admin key" if admin else "key"
    click.echo(f"created {role} {record['id']} ({name}); store it now, it is not shown again:")
    click.echo(key)


@keys.command("list")
def list_keys() -> None:
    """List keys: id, name, creation time and own rate limit (never the key)."""
    for record in key_store().list():
        created = datetime.fromtimestamp(record["created_at"], timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        role = "admin" if record.get("admin") else "-"
        click.echo(f"{record['id']}  {created}  {record.get('rate_limit') or '-':<12}  {role:<5}  {record['name']}")


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke the key with id KEY_ID; it stops working at once."""
    if not key_store().revoke(key_id):
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(f"revoked key {key_id}")


def init_app(app: Flask) -> None:
    app.cli.add_command(keys)
