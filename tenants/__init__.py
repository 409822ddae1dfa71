"""Tenants: API keys, their usage and budgets, and the audit log.

SQL (through SQLAlchemy, migrated by Alembic) is where they are kept; Redis is the fast path that
serves them: key lookups are cached there, and usage counters and audit entries are counted there
and written through to SQL in batches (`tenants.ledger`). Knows neither Flask nor Celery.
"""
