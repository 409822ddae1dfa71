"""The routing worker's in-memory copy of the semantic cache's vectors, searched with numpy.

Redis 7 here has no vector search, so vectors live in a Redis hash and each routing process
mirrors them: new members are fetched by store time on each search. A member whose entry is
gone is dropped when a search finds it; a full resync, when the copy outgrows the index bound
by a tenth, drops the rest. So the copy stays bounded without a resync on every search.
"""
from __future__ import annotations

import threading

import numpy as np

from cache.index import BoundedIndex


class VectorMirror:
    """Unit vectors of the index's members, each tagged with its namespace (member `<ns>:<id>`)."""

    def __init__(self, index: BoundedIndex) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._matrix = np.zeros((0, 1), dtype=np.float32)
        self._namespaces = np.zeros(0, dtype=np.int32)
        self._members: list[str] = []
        self._rows: dict[str, int] = {}
        self._codes: dict[str, int] = {}
        self._last_score = 0.0

    def nearest(self, vector: np.ndarray, namespace: str, k: int = 3) -> list[tuple[str, float]]:
        """Up to k members of `namespace`, most similar first, with their cosine similarity."""
        with self._lock:
            self._refresh()
            code, count = self._codes.get(namespace), len(self._members)
            if code is None or not count:
                return []
            # One product over every row (a view, no copy), then the other namespaces are masked out.
            # einsum, not @: BLAS threads fight the embedding model for the cores (10x slower under load).
            sims = np.einsum("ij,j->i", self._matrix[:count], vector.astype(np.float32))
            sims[self._namespaces[:count] != code] = -np.inf
            best = np.argpartition(-sims, k)[:k] if count > k else np.arange(count)
            best = best[np.argsort(-sims[best])]
            return [(self._members[i], float(sims[i])) for i in best if sims[i] > -np.inf]

    def forget(self, member: str) -> None:
        """Stop matching a member whose entry is gone (expired or evicted) until the next full sync."""
        with self._lock:
            row = self._rows.pop(member, None)
            if row is not None:
                self._namespaces[row] = -1

    def __len__(self) -> int:
        return len(self._rows)

    def _refresh(self) -> None:
        if len(self._members) > self.index.max_entries * 1.1:
            self._full_sync()
        else:
            self._append(self.index.members_after(self._last_score))

    def _full_sync(self) -> None:
        members = self.index.all_members()
        kept = {m: self._matrix[self._rows[m]] for m, _ in members if m in self._rows}
        self._reset()
        self._append(members, known=kept)

    def _append(self, members: list[tuple[str, float]], known: dict | None = None) -> None:
        known = known or {}
        new = [(m, s) for m, s in members if m not in self._rows]
        if not new:
            return
        self._last_score = max(self._last_score, max(s for _, s in new))
        missing = [m for m, _ in new if m not in known]
        fetched = dict(zip(missing, self.index.vectors(missing)))
        vectors, names = [], []
        for member, _ in new:
            vector = known.get(member)
            if vector is None and fetched.get(member):
                vector = np.frombuffer(fetched[member], dtype=np.float32)
            if vector is not None:
                vectors.append(vector)
                names.append(member)
        if vectors:
            self._grow(names, np.stack(vectors))

    def _grow(self, names: list[str], vectors: np.ndarray) -> None:
        start, end = len(self._members), len(self._members) + len(names)
        if self._matrix.shape[0] < end or self._matrix.shape[1] != vectors.shape[1]:
            capacity = max(end, 2 * self._matrix.shape[0], 256)
            matrix = np.zeros((capacity, vectors.shape[1]), dtype=np.float32)
            matrix[:start] = self._matrix[:start]
            namespaces = np.full(capacity, -1, dtype=np.int32)
            namespaces[:start] = self._namespaces[:start]
            self._matrix, self._namespaces = matrix, namespaces
        self._matrix[start:end] = vectors
        for offset, member in enumerate(names):
            namespace = member.split(":", 1)[0]
            self._namespaces[start + offset] = self._codes.setdefault(namespace, len(self._codes))
            self._rows[member] = start + offset
        self._members.extend(names)
