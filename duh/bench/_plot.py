"""``--plot FILE.png``: latency distributions and throughput, one figure, drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from duh.bench._report import BenchReport
from duh.errors import ConfigError, MissingDependencyError

__all__ = ["plot_report"]


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """Write a chart: per subject and configuration, the latency distribution (p1 to p99, the
    quartiles, p50 and p90) and samples per second; find-peak results add their QPS trials."""
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
    for i, m in enumerate(rows):
        p1, p25, p50, p75, p99 = np.percentile(m.samples_ms, [1, 25, 50, 75, 99])
        lat_ax.hlines(i, p1, p99, color="tab:blue", linewidth=1)
        lat_ax.hlines(i, p25, p75, color="tab:blue", linewidth=7)
        lat_ax.plot([p50], [i], "k|", markersize=14)
        lat_ax.plot([m.latency.p90_ms], [i], "r|", markersize=10)
    if rows:
        lat_ax.set_xscale("log")  # tails span orders of magnitude on a busy machine
    lat_ax.set_yticks(range(len(rows)), labels, fontsize=7)
    lat_ax.invert_yaxis()
    lat_ax.set_xlabel("latency (ms): thin p1-p99, thick p25-p75, black p50, red p90")
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
            peak_ax.plot(
                [q for q, _, _ in trials],
                [p for _, p, _ in trials],
                "o-",
                label=f"{peak.subject} (peak {peak.peak_qps:.1f} QPS)",
            )
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
