"""Answer caches in Redis: exact (web process, before queueing) and semantic (routing worker).

They depend on the job layer (`jobs/`) only: the process that uses them builds them once from
its settings and the tiers' model ids (webapp.context, tasks.context).
"""
