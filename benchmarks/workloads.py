"""Workloads and quality metrics shared by the batch benchmarks.

- ``trace_jobs``: the Alibaba GPU trace (openb, USENIX ATC'23; see ../shared/data/SOURCES.md)
  mapped onto a grid by an explicit rule (``TraceMapping``, printed by the benchmarks).
- ``generated_jobs``: ``grid_scheduler.synthetic.job_stream`` with a chosen inference share.
- ``preload``: a grid already partly busy, so a batch competes for what is left.
- ``quality``: the figures batch_quality.py prints for every method.
"""

from __future__ import annotations

import csv
import statistics
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grid_scheduler.engine.batch import as_modelled
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.verify import check_solution
from grid_scheduler.model import Grid, JobKind, JobSpec, Placement, Policy
from grid_scheduler.synthetic import job_stream

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "examples" / "data" / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"  # copy of ../shared/data

Jobs = list[tuple[str, JobSpec]]


@dataclass(frozen=True)
class TraceMapping:
    """How a pod of the trace becomes a job on the grid. Every number is a knob."""

    train_gpus_per_pod_gpu: int = 128  # BE/Burstable/Guaranteed pod: num_gpu x this, one gang
    infer_gpus_per_pod_gpu: int = 8  # LS pod: one replica of num_gpu x this GPUs (HGX servers)
    latency_slo_ms: float = 10.0
    priority_ls: int = 500
    priority_guaranteed: int = 900
    priority_burstable: int = 100
    priority_be: int = 0
    # Residency by a hash of the pod name, per 20: [0, eu) EU, [eu, eu+uk) UK, next us: US, rest none.
    eu_in_20: int = 5
    uk_in_20: int = 2
    us_in_20: int = 1

    def describe(self, endpoints: Sequence[str]) -> list[str]:
        return [
            "pods with num_gpu = 0 (CPU only) are skipped",
            f"qos LS -> inference deployment: 1 replica of num_gpu x {self.infer_gpus_per_pod_gpu} GPUs, "
            f"priority {self.priority_ls}, demand at endpoint crc32(name) mod {len(endpoints)} "
            f"of [{', '.join(endpoints)}], SLO {self.latency_slo_ms:g} ms",
            f"qos BE / Burstable / Guaranteed -> training gang of num_gpu x {self.train_gpus_per_pod_gpu} GPUs, "
            f"priority {self.priority_be} / {self.priority_burstable} / {self.priority_guaranteed}, "
            "BE preemptible",
            f"residency by crc32(name) mod 20: <{self.eu_in_20} EU, <{self.eu_in_20 + self.uk_in_20} UK, "
            f"<{self.eu_in_20 + self.uk_in_20 + self.us_in_20} US, else none",
            "gpu_spec (empty in this file) -> any GPU type; duration = (deletion - scheduled) s / 3600, "
            "at least 1 minute (GPU-hours weight the quality metric, not the objective)",
            "all mapped pods are pending at once: one batch",
        ]

    def residency(self, h: int) -> list[str]:
        bucket = h % 20
        if bucket < self.eu_in_20:
            return ["EU"]
        if bucket < self.eu_in_20 + self.uk_in_20:
            return ["UK"]
        if bucket < self.eu_in_20 + self.uk_in_20 + self.us_in_20:
            return ["US"]
        return []


def trace_jobs(grid: Grid, mapping: TraceMapping, limit: int | None = None) -> tuple[Jobs, dict[str, float]]:
    """Jobs and their durations in hours, in trace order."""
    endpoints = [e.id for e in grid.endpoints]
    jobs: Jobs = []
    hours: dict[str, float] = {}
    with TRACE.open() as f:
        for row in csv.DictReader(f):
            gpus = int(row["num_gpu"])
            if gpus == 0:
                continue
            name = row["name"]
            h = zlib.crc32(name.encode())
            start = int(row["scheduled_time"] or row["creation_time"])
            hours[name] = max((int(row["deletion_time"]) - start) / 3600.0, 1.0 / 60.0)
            common = {"name": name, "tenant": "alibaba", "residency": {"allowed": mapping.residency(h)}}
            if row["qos"] == "LS":
                spec = JobSpec.model_validate({
                    **common, "kind": "inference", "priority": mapping.priority_ls,
                    "gpus": {"count": gpus * mapping.infer_gpus_per_pod_gpu},
                    "inference": {"replicas": 1, "latency_slo_ms": mapping.latency_slo_ms,
                                  "demand": [{"endpoint": endpoints[h % len(endpoints)]}]},
                })
            else:
                priority = {"Guaranteed": mapping.priority_guaranteed, "Burstable": mapping.priority_burstable}.get(
                    row["qos"], mapping.priority_be)
                spec = JobSpec.model_validate({
                    **common, "kind": "training", "priority": priority, "preemptible": row["qos"] == "BE",
                    "gpus": {"count": gpus * mapping.train_gpus_per_pod_gpu},
                    "training": {"duration_hours": hours[name]},
                })
            jobs.append((name, spec))
            if limit is not None and len(jobs) >= limit:
                break
    return jobs, hours


def generated_jobs(grid: Grid, count: int, seed: int, inference_share: float) -> tuple[Jobs, dict[str, float]]:
    specs = job_stream(grid, count, seed=seed, inference_share=inference_share)
    jobs = [(f"{s.name}", s) for s in specs]
    hours = {name: (s.training.duration_hours if s.training else 24.0) for name, s in jobs}
    return jobs, hours


def preload(index: GridIndex, share: float, seed: int) -> Usage:
    """Each pool ``share`` busy on average (uniform 0..2 x share, capped), power counted."""
    rng = np.random.default_rng(seed)
    fill = np.clip(rng.uniform(0.0, 2.0 * share, len(index.pool_ids)), 0.0, 1.0)
    used = np.floor(index.pool_healthy_gpus * fill).astype(np.int64)
    kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    # Never start above a site's envelope: scale the site's pools down if needed.
    over = kw > index.site_envelope_kw
    if over.any():
        scale = np.where(over, index.site_envelope_kw / np.maximum(kw, 1e-9) * 0.98, 1.0)
        used = np.floor(used * scale[index.pool_site]).astype(np.int64)
        kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    return Usage(used, kw.astype(np.float64), np.zeros(len(used), dtype=np.bool_))


def quality(
    index: GridIndex,
    usage: Usage,
    jobs: Jobs,
    hours: Mapping[str, float],
    placements: Mapping[str, Placement],
    policy: Policy,
) -> dict[str, float]:
    spec_of = dict(jobs)
    placed = {j: (spec_of[j], p) for j, p in placements.items()}
    violations = check_solution(index.grid, placed, usage, policy, index.topology, gang_training=True)
    infer = [j for j, s in jobs if s.kind is JobKind.INFERENCE]
    used = usage.pool_used_gpus.copy()
    placed_kw = 0.0
    for placement in placements.values():
        for a in placement.assignments:
            used[index.pool_index[a.pool_id]] += a.gpus
            placed_kw += a.power_kw
    headroom_kw = float(np.maximum(index.site_envelope_kw - usage.site_used_kw, 0).sum())
    # Fragmentation: free GPUs stranded in pools too small for the median waiting job's unit
    # (a gang, or one replica); with nobody waiting, the median job of the batch.
    waiting = [as_modelled(spec_of[j]).gpus.count for j, _ in jobs if j not in placements] or [
        s.gpus.count for _, s in jobs]
    median = statistics.median(waiting) if waiting else 0
    free = np.where(usage.pool_drained, 0, np.maximum(index.pool_healthy_gpus - used, 0))
    stranded = float(free[(free > 0) & (free < median)].sum())
    return {
        "placed_jobs": len(placements),
        "placed_gpus": sum(p.gpus for p in placements.values()),
        "pw_gpu_hours": sum((spec_of[j].priority + 1) * p.gpus * hours[j] for j, p in placements.items()),
        "slo_attainment_pct": 100.0 * sum(j in placements for j in infer) / max(len(infer), 1),
        "power_headroom_used_pct": 100.0 * placed_kw / max(headroom_kw, 1e-9),
        "fragmentation_pct": 100.0 * stranded / max(float(free.sum()), 1.0),
        "violations": len(violations),
    }
