"""Answer caches in Redis: exact (web process, before queueing) and semantic (routing worker)."""
