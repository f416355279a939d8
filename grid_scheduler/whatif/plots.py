"""PNG plots of a run (and of several runs overlaid), drawn with matplotlib's Agg backend.

Each function returns PNG bytes, so a report can both write the file and embed it.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from grid_scheduler.whatif.metrics import HOUR_S, Sample

DPI = 100
Series = dict[str, list[float]]


def pivot(samples: Sequence[Sample], metric: str) -> tuple[list[float], Series]:
    """Samples of one metric as (times in hours, key -> values aligned to the times; NaN where absent)."""
    times = sorted({s.time_s for s in samples if s.metric == metric})
    at = {t: i for i, t in enumerate(times)}
    out: dict[str, list[float]] = defaultdict(lambda: [math.nan] * len(times))
    for s in samples:
        if s.metric == metric:
            out[s.key][at[s.time_s]] = s.value
    return [t / HOUR_S for t in times], dict(out)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _marks(ax: Axes, change_hours: Sequence[float]) -> None:
    for h in change_hours:
        ax.axvline(h, color="0.4", linestyle=":", linewidth=1)


def utilisation_heatmap(samples: Sequence[Sample], change_hours: Sequence[float], title: str) -> bytes:
    hours, series = pivot(samples, "utilisation_site")
    keys = list(series)
    data = np.array([series[k] for k in keys], dtype=np.float64) if keys else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(11, 0.32 * max(len(keys), 4) + 1.5))
    extent = (hours[0] if hours else 0, hours[-1] if hours else 1, len(keys) - 0.5, -0.5)
    image = ax.imshow(np.ma.masked_invalid(data), aspect="auto", interpolation="nearest", cmap="viridis",
                      vmin=0, vmax=1, extent=extent)
    ax.set_yticks(range(len(keys)), keys, fontsize=8)
    ax.set_xlabel("simulated time (hours)")
    ax.set_title(f"{title}: GPU utilisation by site")
    _marks(ax, change_hours)
    fig.colorbar(image, ax=ax, label="used / healthy GPUs")
    return _png(fig)


def utilisation_lines(samples: Sequence[Sample], change_hours: Sequence[float], title: str) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    for ax, metric, label in ((axes[0], "utilisation_tier", "tier"), (axes[1], "utilisation_gpu_type", "GPU type")):
        hours, fleet = pivot(samples, "utilisation_fleet")
        ax.plot(hours, fleet.get("fleet", []), color="black", linewidth=2, label="fleet")
        hours, series = pivot(samples, metric)
        for key, values in series.items():
            ax.plot(hours, values, label=key, linewidth=1.2)
        _marks(ax, change_hours)
        ax.set_title(f"utilisation by {label}")
        ax.set_xlabel("simulated time (hours)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("used / healthy GPUs")
    fig.suptitle(title)
    return _png(fig)


def delay_cdf(delays: dict[str, list[float]], title: str) -> bytes:
    """Queue delay CDF, one line per group (e.g. job kind)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in delays.items():
        if not values:
            continue
        x = np.sort(np.asarray(values, dtype=np.float64))
        y = np.arange(1, len(x) + 1) / len(x)
        ax.step(np.concatenate([[0.0], x]), np.concatenate([[0.0], y]), where="post", label=f"{label} ({len(x):,})")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("queueing delay (hours, symlog)")
    ax.set_ylabel("share of placed jobs")
    ax.set_ylim(0, 1.01)
    ax.set_title(f"{title}: queueing delay CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def power_vs_envelope(samples: Sequence[Sample], change_hours: Sequence[float], title: str) -> bytes:
    hours, power = pivot(samples, "power_mw")
    _, envelope = pivot(samples, "envelope_mw")
    sites = list(power)
    cols = 4
    rows = max(math.ceil(len(sites) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.2 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45, wspace=0.25, top=1 - 0.35 / rows)
    for ax, site in zip(axes.flat, sites, strict=False):
        ax.plot(hours, power[site], color="tab:blue", linewidth=1.2, label="draw")
        ax.step(hours, envelope.get(site, []), where="post", color="tab:red", linestyle="--", linewidth=1,
                label="envelope")
        _marks(ax, change_hours)
        ax.set_title(site, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(sites):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{title}: facility power draw vs envelope (MW) over simulated hours")
    return _png(fig)


def jobs_over_time(samples: Sequence[Sample], change_hours: Sequence[float], title: str) -> bytes:
    hours, jobs = pivot(samples, "jobs")
    fig, ax = plt.subplots(figsize=(11, 3.5))
    for key in ("running", "pending"):
        ax.plot(hours, jobs.get(key, []), label=key)
    _marks(ax, change_hours)
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel("jobs")
    ax.set_title(f"{title}: running and waiting jobs (dotted lines: timed changes)")
    ax.legend(fontsize=8)
    return _png(fig)


def site_map(sites: dict[str, dict[str, float | str]], title: str) -> bytes:
    """Sites at their longitude/latitude: size by GPUs, colour by utilisation."""
    fig, ax = plt.subplots(figsize=(12, 4.8))
    ids = list(sites)
    lon = [float(sites[s]["lon"]) for s in ids]
    lat = [float(sites[s]["lat"]) for s in ids]
    gpus = np.array([float(sites[s]["gpus"]) for s in ids])
    util = [float(sites[s]["utilisation"]) for s in ids]
    size = 20 + 600 * np.sqrt(gpus / gpus.max()) if len(gpus) and gpus.max() > 0 else 20
    points = ax.scatter(lon, lat, s=size, c=util, cmap="viridis", vmin=0, vmax=1, edgecolors="black", alpha=0.85)
    for s, x, y in zip(ids, lon, lat, strict=True):
        ax.annotate(s, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"{title}: sites (area ~ GPUs, colour = utilisation over the run)")
    ax.grid(alpha=0.3)
    fig.colorbar(points, ax=ax, label="utilisation")
    return _png(fig)


def overlay(runs: dict[str, tuple[list[float], list[float]]], ylabel: str, title: str) -> bytes:
    """One line per run: (hours, values)."""
    fig, ax = plt.subplots(figsize=(11, 3.5))
    for name, (hours, values) in runs.items():
        ax.plot(hours, values, label=name, linewidth=1.3)
    ax.set_xlabel("simulated time (hours)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def bars(labels: list[str], values: list[float], ylabel: str, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels) + 3), 3.8))
    ax.bar(range(len(labels)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
