"""PNG plots for ``--plot FILE.png``: throughput over time and the latency distribution.

matplotlib is imported lazily, inside each function, with the non-interactive Agg backend, so
the bench runs (and imports fast) on a machine without matplotlib or a display; only ``--plot``
needs it (``pip install annal[bench]``).

The latency plot is HdrHistogram's percentile plot: the x axis is ``1 / (1 - percentile)`` on a
log scale, so p50, p90, p99, p99.9 and p99.99 are evenly spaced and the tail is visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_run", "plot_ceiling"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("--plot needs matplotlib: pip install 'annal[bench]'") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_run(
    path: str,
    *,
    title: str,
    timeseries: Sequence[Mapping[str, float]],
    latency_distribution: Sequence[tuple[float, float]] = (),
    latency_label: str = "latency",
    latency_count: int | None = None,
) -> None:
    """Throughput per second (records/s and MiB/s) over time; the latency percentile plot beside it.

    ``timeseries`` holds {"t_s", "records", "bytes"} per one-second bucket; the distribution
    holds (percentile, latency_ms) points from ``LatencyHistogram.distribution()``, drawn up to
    the percentile ``1 - 1/latency_count`` (beyond it a percentile says nothing new).
    """
    plt = _pyplot()
    with_latency = bool(latency_distribution)
    fig, axes = plt.subplots(1, 2 if with_latency else 1, figsize=(13 if with_latency else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    ts = [float(p["t_s"]) for p in timeseries]
    recs = [float(p["records"]) for p in timeseries]
    total_records = sum(recs)
    total_bytes = sum(float(p["bytes"]) for p in timeseries)
    ax.plot(ts, recs, color="tab:blue", marker=".")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("records/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if total_records > 0 and total_bytes > 0:
        # MiB/s is proportional to records/s: show it as a second scale, not a second line.
        mib_per_record = total_bytes / total_records / (1024 * 1024)
        sec = ax.secondary_yaxis("right", functions=(lambda r: r * mib_per_record, lambda m: m / mib_per_record))
        sec.set_ylabel("MiB/s")
    ax.set_title("throughput per second")
    if with_latency:
        lax = axes[0][1]
        count = max(2.0, float(latency_count or 0)) if latency_count else None
        xs: list[float] = []
        ys: list[float] = []
        for pct, ms in latency_distribution:
            if pct >= 100.0:
                continue
            x = 1.0 / (1.0 - pct / 100.0)
            if count is not None and x > count:
                break  # beyond 1 - 1/count the percentiles say nothing more
            xs.append(x)
            ys.append(ms)
        lax.plot(xs, ys, color="tab:red")
        lax.set_xscale("log")
        ticks = [2, 10, 100, 1000, 10_000, 100_000, 1_000_000]
        labels = ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        top = max(xs) if xs else 2.0
        keep = [(t, lbl) for t, lbl in zip(ticks, labels) if t <= max(top, 2)]
        lax.set_xlim(1, max(top, 2))
        lax.set_xticks([t for t, _ in keep])
        lax.set_xticklabels([lbl for _, lbl in keep])
        lax.minorticks_off()
        lax.set_xlabel("percentile")
        lax.set_ylabel(f"{latency_label} (ms)")
        lax.set_ylim(bottom=0)
        lax.grid(True, alpha=0.3)
        lax.set_title(f"{latency_label} distribution")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ceiling(path: str, figures: Mapping[str, float]) -> None:
    """Bar chart of the GB/s ceilings (the us and records/s figures go in the title)."""
    plt = _pyplot()
    gb = {k: v for k, v in figures.items() if k.endswith("_gb_s")}
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [k.removesuffix("_gb_s").replace("_", " ") for k in gb]
    ax.barh(names, list(gb.values()), color="tab:blue")
    ax.set_xlabel("GB/s (10^9 bytes/s)")
    extra = []
    if "fdatasync_us" in figures:
        extra.append(f"fdatasync {figures['fdatasync_us']:.0f} us")
    if "python_records_per_s" in figures:
        extra.append(f"Python record floor {figures['python_records_per_s']:,.0f} records/s")
    ax.set_title("machine ceilings" + (" (" + ", ".join(extra) + ")" if extra else ""), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
