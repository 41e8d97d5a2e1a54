"""``--plot FILE.png``: latency distributions and throughput, one figure, drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duh.bench._report import BenchReport
from duh.errors import ConfigError, MissingDependencyError

__all__ = ["plot_report"]


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """Write a PNG: per subject and configuration, a box plot of latencies (whiskers at p1/p99)
    and a bar chart of samples per second; find-peak results add their QPS trials."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "bench", "--plot") from None
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"--plot {path}: give a .png, .svg or .pdf file name")
    rows = [m for m in report.measurements if m.samples_ms.size]
    panels = 2 + (1 if report.peaks else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.0), squeeze=False)
    lat_ax, tput_ax = axes[0][0], axes[0][1]
    labels = [f"{m.subject}\n{m.scenario} {m.config}" for m in rows]
    if rows:
        lat_ax.boxplot([m.samples_ms for m in rows], whis=(1, 99), showfliers=False, vert=False)
        lat_ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=7)
        for i, m in enumerate(rows, start=1):
            lat_ax.plot([m.latency.p50_ms], [i], "k|", markersize=14)
    lat_ax.set_xlabel("latency (ms), box p25-p75, whiskers p1-p99")
    lat_ax.set_title("latency distribution")
    positions = np.arange(len(rows))
    tput_ax.barh(positions, [m.samples_per_s for m in rows], color="tab:blue")
    tput_ax.set_yticks(positions, labels, fontsize=7)
    tput_ax.invert_yaxis()
    tput_ax.set_xlabel("samples / s")
    tput_ax.set_title("throughput")
    if report.peaks:
        peak_ax = axes[0][2]
        for peak in report.peaks:
            trials = sorted(peak.trials)
            peak_ax.plot([q for q, _, _ in trials], [p for _, p, _ in trials], "o-",
                         label=f"{peak.subject} (peak {peak.peak_qps:.1f} QPS)")
            peak_ax.axhline(peak.latency_bound_ms, color="grey", linestyle="--")
        peak_ax.set_xlabel("Poisson arrival rate (QPS)")
        peak_ax.set_ylabel("p99 latency (ms)")
        peak_ax.set_title("server: find-peak trials")
        peak_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
