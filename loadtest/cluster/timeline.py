"""The run's timeline as a PNG: jobs running on each host over time, with the scenario's events marked."""
from __future__ import annotations

from pathlib import Path


def plot_timeline(samples: list[tuple[float, dict[str, int]]], events: list[tuple[float, str]], start: float,
                  path: Path, title: str) -> Path:
    """Write the timeline of `samples` ((time, {host: running jobs})) and `events` ((time, label)) to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no screen; pyplot picks its backend on import
    import matplotlib.pyplot as plt

    hosts = sorted({host for _, counts in samples for host in counts})
    figure, axes = plt.subplots(figsize=(11, 4.5), dpi=110)
    times = [moment - start for moment, _ in samples]
    for host in hosts:
        axes.step(times, [counts.get(host, 0) for _, counts in samples], where="post", label=host, linewidth=1.6)
    top = max([1, *(count for _, counts in samples for count in counts.values())])
    for moment, label in events:
        axes.axvline(moment - start, color="black", linestyle="--", linewidth=1)
        axes.text(moment - start, top + 0.4, f" {label}", rotation=90, va="bottom", ha="right", fontsize=8)
    axes.set_ylim(0, top + 3.5)
    axes.set_xlabel("seconds since the load began")
    axes.set_ylabel("jobs generating")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", fontsize=8, ncol=len(hosts) or 1)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
