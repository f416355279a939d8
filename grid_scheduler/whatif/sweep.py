"""A grid of scenario variants run in parallel, tabulated side by side.

``--param PATH=V1,V2,...`` names a field of the scenario file (``changes[1].lose_mw``,
``workload.scale[0].factor``, ``seed``) and the values it takes; several ``--param`` make
the cartesian product. Every variant is validated before any runs, with the same errors
(field and line) as a scenario file.

Variants run through a ``Backend``: anything that maps a picklable function over picklable
items and yields results as they finish. ``ProcessBackend`` uses a local process pool (spawn,
so workers start clean); ``RayBackend`` (whatif/ray_backend.py) runs each variant as a Ray
task. Results are sorted by variant index, so the outputs do not depend on the backend or on
the order variants finish in.

A variant that fails is a row with its error, not the end of the sweep: the exception is caught
in the worker (``run_cell``), so every backend reports it in the same words; a backend that can
lose a worker (Ray) reports that through ``lost``.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import multiprocessing
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from grid_scheduler.config import ConfigError
from grid_scheduler.whatif import html, plots
from grid_scheduler.whatif.report import flatten, headline, write_run_report
from grid_scheduler.whatif.scenario import LoadedScenario, load_scenario_data
from grid_scheduler.whatif.simulator import quiet_logs, simulate

T = TypeVar("T")
R = TypeVar("R")


class Backend(Protocol):
    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], lost: Callable[[T, BaseException], R] | None = None
    ) -> Iterator[R]:
        """``fn`` over ``items``, results as they finish. ``lost(item, error)`` stands in for the
        result of an item whose worker died (where the backend can tell); without it that raises."""
        ...


class SerialBackend:
    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], lost: Callable[[T, BaseException], R] | None = None
    ) -> Iterator[R]:
        for item in items:
            yield fn(item)


class ProcessBackend:
    def __init__(self, workers: int) -> None:
        self.workers = max(workers, 1)

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], lost: Callable[[T, BaseException], R] | None = None
    ) -> Iterator[R]:
        # `lost` is unused: multiprocessing.Pool cannot tell which item a dead worker held.
        if self.workers == 1 or len(items) <= 1:
            yield from SerialBackend().map_unordered(fn, items)
            return
        with multiprocessing.get_context("spawn").Pool(min(self.workers, len(items))) as pool:
            yield from pool.imap_unordered(fn, items)


# --- parameters --------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    path: str
    parts: tuple[str | int, ...]
    values: tuple[Any, ...]


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_param(text: str) -> Param:
    path, sep, values = text.partition("=")
    path = path.strip()
    if not sep or not path or not values.strip():
        raise ConfigError(f"--param {text!r}: expected PATH=VALUE[,VALUE...], e.g. changes[0].lose_mw=250,500")
    parts: list[str | int] = []
    pos = 0
    for m in _PART.finditer(path):
        if m.start() != pos and path[pos:m.start()] != ".":
            raise ConfigError(f"--param {text!r}: cannot read path {path!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if pos != len(path):
        raise ConfigError(f"--param {text!r}: cannot read path {path!r}")
    return Param(path, tuple(parts), tuple(yaml.safe_load(v.strip()) for v in values.split(",")))


def set_path(data: Any, parts: tuple[str | int, ...], value: Any, path: str) -> None:
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"--param {path}: the scenario has no item [{part}] there")
        elif not isinstance(node, dict):
            raise ConfigError(f"--param {path}: {part!r} is not inside a mapping")
        elif not last and part not in node:
            raise ConfigError(f"--param {path}: the scenario has no field {part!r} there")
        if last:
            node[part] = value
        else:
            node = node[part]


@dataclass(frozen=True)
class Variant:
    index: int
    label: str
    params: dict[str, Any]
    data: Any
    source: str
    base_dir: Path
    report_dir: Path | None


def variants(loaded: LoadedScenario, params: list[Param], report_root: Path | None) -> list[Variant]:
    """Every combination, each validated now (a bad value fails before anything runs)."""
    out = []
    for i, combo in enumerate(itertools.product(*(p.values for p in params))):
        data = copy.deepcopy(loaded.data)
        chosen = {}
        for param, value in zip(params, combo, strict=True):
            set_path(data, param.parts, value, param.path)
            chosen[param.path] = value
        label = f"{i:02d}-" + ",".join(f"{p.split('.')[-1]}={v}" for p, v in chosen.items())
        label = re.sub(r"[^A-Za-z0-9_.,=-]+", "_", label)[:100]
        data["name"] = f"{loaded.scenario.name}-{i:02d}"
        load_scenario_data(data, f"{loaded.source} [{label}]", loaded.base_dir)
        out.append(Variant(i, label, chosen, data, loaded.source, loaded.base_dir,
                           report_root / label if report_root is not None else None))
    return out


@dataclass(frozen=True)
class VariantResult:
    index: int
    label: str
    params: dict[str, Any]
    summary: dict[str, Any]
    perf: dict[str, float]
    error: str | None = None  # set when the variant failed; summary and perf are then empty

    @property
    def failed(self) -> bool:
        return self.error is not None


def run_variant(variant: Variant) -> VariantResult:
    """Top-level (picklable): what a worker process runs."""
    quiet_logs(cache=True)
    loaded = load_scenario_data(variant.data, f"{variant.source} [{variant.label}]", variant.base_dir)
    result = simulate(loaded)
    if variant.report_dir is not None:
        write_run_report(result, loaded, variant.report_dir)
    return VariantResult(variant.index, variant.label, variant.params, result.summary, result.perf)


def failed_variant(variant: Variant, error: BaseException) -> VariantResult:
    # The first line only: a Ray error carries the remote traceback after it, with worker paths.
    first_line = (str(error).strip().splitlines() or [""])[0]
    return VariantResult(variant.index, variant.label, variant.params, {}, {},
                         f"{type(error).__name__}: {first_line}".rstrip(": "))


def run_cell(variant: Variant) -> VariantResult:
    """Top-level (picklable): ``run_variant``, with a failure as a result instead of an exception."""
    try:
        return run_variant(variant)
    except Exception as e:
        return failed_variant(variant, e)


def run_sweep(
    items: list[Variant], backend: Backend, on_done: Callable[[VariantResult], None] | None = None
) -> list[VariantResult]:
    results = []
    for result in backend.map_unordered(run_cell, items, lost=failed_variant):
        results.append(result)
        if on_done is not None:
            on_done(result)
    return sorted(results, key=lambda r: r.index)


# --- the table ---------------------------------------------------------------------------
def write_sweep(results: list[VariantResult], params: list[Param], out: Path) -> list[Path]:
    """sweep.csv (headline per variant, ``error`` set on a failed one), sweep_metrics.csv, sweep.json, sweep.html."""
    out.mkdir(parents=True, exist_ok=True)
    ok = [r for r in results if not r.failed]
    keys = [k for k, _ in headline(ok[0].summary)] if ok else []
    header = ["variant", *(p.path for p in params), *keys, "wall_s", "error"]
    rows: list[list[Any]] = []
    for r in results:
        chosen = [r.params[p.path] for p in params]
        if r.failed:  # None: an empty CSV cell, "-" in the HTML
            rows.append([r.label, *chosen, *(None for _ in keys), None, r.error])
        else:
            values = dict(headline(r.summary))
            rows.append([r.label, *chosen, *(values[k] for k in keys), round(r.perf.get("wall_s", 0.0), 3), None])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    (out / "sweep.csv").write_text(buf.getvalue())
    full = io.StringIO()
    writer = csv.writer(full, lineterminator="\n")
    writer.writerow(["variant", "metric", "value"])
    for r in ok:
        writer.writerows([r.label, k, v] for k, v in flatten(r.summary))
    (out / "sweep_metrics.csv").write_text(full.getvalue())
    (out / "sweep.json").write_text(json.dumps(
        [{"variant": r.label, "params": r.params, "summary": None if r.failed else r.summary, "error": r.error}
         for r in results], indent=1) + "\n")
    labels = [r.label for r in ok]
    charts = [html.image(plots.bars(labels, [float(dict(headline(r.summary))[k]) for r in ok], k, k), k)
              for k in ("fleet utilisation", "queue delay p95 (h)", "never placed", "SLO attainment", "energy (MWh)")
              if ok]
    failed = [r for r in results if r.failed]
    failures = [html.paragraph(f"{len(failed)} of {len(results)} variants failed: "
                               + "; ".join(f"{r.label}: {r.error}" for r in failed), "bad")] if failed else []
    page = html.page(
        "What-if sweep",
        html.paragraph("Parameters: " + "; ".join(f"{p.path} in {list(p.values)}" for p in params), "muted"),
        *failures, html.table(header, rows), *charts,
    )
    (out / "sweep.html").write_text(page)
    return [out / "sweep.csv", out / "sweep_metrics.csv", out / "sweep.json", out / "sweep.html"]
