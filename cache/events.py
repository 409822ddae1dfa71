"""The caches announce each lookup here; monitoring turns the announcements into metrics."""
from blinker import Namespace

_signals = Namespace()

# sender: "exact" or "semantic"; keyword arguments: outcome ("hit", "miss", "bypass" when the
# client asked to skip the cache, "skip" when the request cannot be cached), tier, and for the
# semantic cache `rejected`: why the guard turned the nearest entry down, if it did.
cache_lookup = _signals.signal("cache-lookup")
