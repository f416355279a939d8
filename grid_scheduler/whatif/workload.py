"""The work a scenario replays: a real trace mapped by stated rules, generated streams, scaling.

- **Trace** (e.g. the Alibaba GPU trace): every row is a task with an arrival time, a
  duration and a GPU count. Rules in the scenario, first match wins, say what each row
  becomes on this grid: training or inference, tenant, residency, endpoints, how many
  grid GPUs per trace GPU (``gpu_scale``; a fractional GPU share rounds up to one GPU).
  Rows no rule matches, and CPU-only rows, are dropped and counted. Nothing is implicit.
- **Generated** streams: Poisson arrivals at a rate per day; training jobs whose size is
  drawn over powers of two (e.g. 8 to 16,384 GPUs) and whose duration is log-uniform;
  inference deployments whose arrivals follow each endpoint's local day (a diurnal
  cycle: the rate peaks at ``peak_hour_local`` and is ``1 ± diurnal_amplitude`` of the mean).
- **Scaling** ("x 3 inference at UK endpoints"): every arrival that matches a rule is
  repeated ``factor`` times (the fraction by a seeded coin); a factor below 1 thins.

The same workload, grid and seed always give the same arrivals. Job specs are named after
their rule or stream; equal specs are one shared object. A job's duration is the
simulator's business and is not in its spec (the scheduler does not read it).
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from grid_scheduler.model import Grid, JobKind, JobSpec, ResidencyRule
from grid_scheduler.model.grid import Id
from grid_scheduler.model.job import MAX_GPUS, MAX_REPLICAS
from grid_scheduler.whatif.paths import FileRoots, PathRefused

DAY_S = 86_400.0
HOUR_S = 3_600.0

Weights = Annotated[dict[Annotated[str, Field(min_length=1)], Annotated[float, Field(gt=0)]], Field(min_length=1)]
Loc = tuple[str | int, ...]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class GpuRange(_Frozen):
    """GPUs drawn over the powers of two in [min, max]; ``decay`` < 1 favours the small ones."""

    min: int = Field(ge=1, le=MAX_GPUS)
    max: int = Field(ge=1, le=MAX_GPUS)
    decay: float = Field(default=1.0, gt=0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> GpuRange:
        if self.min > self.max:
            raise PydanticCustomError("range", "min {a} > max {b}", {"a": self.min, "b": self.max})
        return self

    def choices(self) -> tuple[list[int], list[float]]:
        sizes = sorted({self.min, self.max} | {2**k for k in range(21) if self.min <= 2**k <= self.max})
        return sizes, [self.decay**k for k in range(len(sizes))]


class CountRange(_Frozen):
    min: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    max: int = Field(default=1, ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _ordered(self) -> CountRange:
        if self.min > self.max:
            raise PydanticCustomError("range", "min {a} > max {b}", {"a": self.min, "b": self.max})
        return self


class HoursRange(_Frozen):
    """Log-uniform in [min, max] hours."""

    min: float = Field(gt=0)
    max: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> HoursRange:
        if self.min > self.max:
            raise PydanticCustomError("range", "min {a} > max {b}", {"a": self.min, "b": self.max})
        return self


class JobShape(_Frozen):
    """What a rule or stream makes: everything of a job spec but its size and duration."""

    name: Id
    kind: JobKind
    tenants: Weights = Field(description="tenant -> weight; each job draws one")
    gpu_types: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    min_memory_gib: float = Field(default=0.0, ge=0)
    gang: bool = True
    priority: int = Field(default=0, ge=0, le=1000)
    preemptible: bool = False
    residency: ResidencyRule = Field(default_factory=ResidencyRule)
    datasets: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    endpoints: dict[Annotated[str, Field(min_length=1)], Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="inference: demand endpoint -> weight; each job draws endpoints_per_job"
    )
    endpoints_per_job: int = Field(default=1, ge=1, le=100)
    latency_slo_ms: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _kind_fields(self) -> JobShape:
        if self.kind is JobKind.INFERENCE:
            if not self.endpoints:
                raise PydanticCustomError("inference", "an inference rule needs endpoints (endpoint: weight)")
            if self.latency_slo_ms is None:
                raise PydanticCustomError("inference", "an inference rule needs latency_slo_ms")
            if self.datasets:
                raise PydanticCustomError("inference", "datasets are for training jobs")
            if self.endpoints_per_job > len(self.endpoints):
                raise PydanticCustomError("inference", "endpoints_per_job is more than the endpoints listed")
        return self


class TraceMatch(_Frozen):
    """Which trace rows a rule takes: QoS classes (empty: any) and a range of trace GPUs."""

    qos: list[str] = Field(default_factory=list)
    min_gpus: float = Field(default=0.0, ge=0)
    max_gpus: float | None = Field(default=None, ge=0)

    def admits(self, row: TraceRow) -> bool:
        if self.qos and row.qos not in self.qos:
            return False
        return row.gpus >= self.min_gpus and (self.max_gpus is None or row.gpus <= self.max_gpus)


class TraceRule(JobShape):
    match: TraceMatch = Field(default_factory=TraceMatch)
    gpu_scale: float = Field(default=1.0, gt=0, le=100_000, description="grid GPUs per trace GPU")
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS, description="inference: replicas of gpu_scale x trace GPUs")


class TraceSpec(_Frozen):
    """Trace time ``origin_days`` becomes simulated time ``start_days``. A task that arrived before
    the origin and is still alive then starts at the origin with what remains of its duration."""

    path: str = Field(min_length=1, description="CSV; relative to the scenario file")
    origin_days: float = Field(default=0.0, ge=0, description="the trace day replayed from")
    time_scale: float = Field(default=1.0, gt=0, description="simulated seconds per trace second (arrivals)")
    duration_scale: float = Field(default=1.0, gt=0, description="simulated seconds per trace second (durations)")
    min_duration_s: float = Field(default=60.0, ge=1)
    max_duration_days: float | None = Field(default=None, gt=0)
    start_days: float = Field(default=0.0, ge=0)
    repeat: int = Field(default=1, ge=1, le=1000, description="replay the trace this many times, one after another")
    max_jobs: int | None = Field(default=None, ge=1)
    rules: list[TraceRule] = Field(min_length=1)


class Stream(JobShape):
    arrivals_per_day: float = Field(gt=0, le=10_000_000)
    start_days: float = Field(default=0.0, ge=0)
    end_days: float | None = Field(default=None, gt=0)
    max_jobs: int | None = Field(default=None, ge=1)
    gpus: GpuRange = Field(description="training: GPUs per job; inference: GPUs per replica")
    replicas: CountRange = Field(default_factory=CountRange)
    duration_hours: HoursRange
    diurnal_amplitude: float = Field(default=0.0, ge=0, le=1)
    peak_hour_local: float = Field(default=14.0, ge=0, lt=24)


class Scaling(_Frozen):
    """Repeat every matching arrival ``factor`` times. Empty filters match everything.

    ``residency``, if given, replaces the matching jobs' own rule ("x 3 under UK-only residency").
    """

    factor: float = Field(default=1.0, ge=0, le=1000)
    residency: ResidencyRule | None = None
    kind: JobKind | None = None
    tenants: list[str] = Field(default_factory=list)
    endpoints: list[str] = Field(default_factory=list, description="a job matches if any demand endpoint is listed")
    sources: list[str] = Field(default_factory=list, description="trace rule or stream names")

    def admits(self, spec: JobSpec, source: str) -> bool:
        if self.kind is not None and spec.kind is not self.kind:
            return False
        if self.tenants and spec.tenant not in self.tenants:
            return False
        if self.sources and source not in self.sources:
            return False
        if self.endpoints:
            demand = [d.endpoint for d in spec.inference.demand] if spec.inference else []
            return any(e in self.endpoints for e in demand)
        return True


class WorkloadSpec(_Frozen):
    trace: TraceSpec | None = None
    generated: list[Stream] = Field(default_factory=list)
    scale: list[Scaling] = Field(default_factory=list)
    max_jobs: int | None = Field(default=None, ge=1, description="keep only the first arrivals")

    @model_validator(mode="after")
    def _some_work(self) -> WorkloadSpec:
        if self.trace is None and not self.generated:
            raise PydanticCustomError("workload", "give a trace, generated streams, or both")
        names = [r.name for r in self.trace.rules] if self.trace else []
        names += [s.name for s in self.generated]
        dup = next((n for n, c in Counter(names).items() if c > 1), None)
        if dup is not None:
            raise PydanticCustomError("workload", "rule and stream names must be unique: {n} is used twice", {"n": dup})
        return self


# --- the result ------------------------------------------------------------------------
@dataclass(frozen=True)
class Arrival:
    time_s: float
    spec: JobSpec
    duration_s: float
    source: str  # rule or stream name


@dataclass
class WorkloadStats:
    """What became of the input: rows read, mapped per rule, dropped and why, scaled."""

    trace_rows: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    scaled_extra: int = 0
    scaled_away: int = 0


@dataclass(frozen=True)
class TraceRow:
    arrival_s: float
    duration_s: float
    gpus: float
    qos: str


# --- checking against a grid ------------------------------------------------------------
def references(
    workload: WorkloadSpec, grid: Grid, base_dir: Path, files: FileRoots = FileRoots.UNCONFINED
) -> list[tuple[Loc, str]]:
    """Names the grid does not know, and a trace file that cannot be read (or, confined, may not be)."""
    problems: list[tuple[Loc, str]] = []
    shapes: list[tuple[Loc, JobShape]] = []
    if workload.trace is not None:
        shapes += [(("workload", "trace", "rules", i), r) for i, r in enumerate(workload.trace.rules)]
        try:
            path = files.resolve(workload.trace.path, base_dir)
        except PathRefused as e:
            problems.append((("workload", "trace", "path"), str(e)))
        else:
            try:
                read_trace(str(path))
            except (OSError, ValueError) as e:
                problems.append((("workload", "trace", "path"), f"cannot read trace {path}: {e}"))
    shapes += [(("workload", "generated", i), s) for i, s in enumerate(workload.generated)]
    for loc, shape in shapes:
        for j, name in enumerate(shape.gpu_types):
            if name not in grid.gpu_type_by_name:
                problems.append(((*loc, "gpu_types", j), f"unknown GPU type {name!r}"))
        for endpoint in shape.endpoints:
            if endpoint not in grid.endpoint_by_id:
                problems.append(((*loc, "endpoints", endpoint), f"unknown endpoint {endpoint!r}"))
        for j, dataset in enumerate(shape.datasets):
            if dataset not in grid.dataset_by_id:
                problems.append(((*loc, "datasets", j), f"unknown dataset {dataset!r}"))
    sources = {shape.name for _, shape in shapes}
    for i, scaling in enumerate(workload.scale):
        for j, endpoint in enumerate(scaling.endpoints):
            if endpoint not in grid.endpoint_by_id:
                problems.append((("workload", "scale", i, "endpoints", j), f"unknown endpoint {endpoint!r}"))
        for j, source in enumerate(scaling.sources):
            if source not in sources:
                problems.append((("workload", "scale", i, "sources", j), f"no trace rule or stream named {source!r}"))
    return problems


def resolve(path: str, base_dir: Path) -> Path:
    """A trace's file, unconfined; a confined run checked the same resolved path when it loaded."""
    return FileRoots.UNCONFINED.resolve(path, base_dir)


# --- reading a trace ---------------------------------------------------------------------
@lru_cache(maxsize=8)
def read_trace(path: str) -> tuple[TraceRow, ...]:
    """Rows with num_gpu, creation_time, deletion_time (scheduled_time and qos if present)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        missing = {"num_gpu", "creation_time", "deletion_time"} - columns
        if missing:
            raise ValueError(f"missing column(s) {', '.join(sorted(missing))}")
        rows = []
        for n, row in enumerate(reader, start=2):
            try:
                created = float(row["creation_time"])
                started = float(row["scheduled_time"]) if row.get("scheduled_time") else created
                rows.append(
                    TraceRow(
                        arrival_s=created,
                        duration_s=max(float(row["deletion_time"]) - started, 0.0),
                        gpus=float(row["num_gpu"] or 0),
                        qos=row.get("qos") or "",
                    )
                )
            except ValueError as e:
                raise ValueError(f"line {n}: {e}") from None
    return tuple(sorted(rows, key=lambda r: r.arrival_s))


# --- building the arrivals -----------------------------------------------------------------
class _Specs:
    """Equal specs are one object: cheaper to build, and a queue of equal jobs shares its checks."""

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], JobSpec] = {}

    def get(self, shape: JobShape, tenant: str, gpus: int, replicas: int, endpoints: tuple[str, ...]) -> JobSpec:
        key = (shape.name, tenant, gpus, replicas, endpoints)
        spec = self._cache.get(key)
        if spec is None:
            data: dict[str, object] = {
                "name": shape.name, "tenant": tenant, "kind": shape.kind.value,
                "gpus": {"count": gpus, "types": shape.gpu_types, "min_memory_gib": shape.min_memory_gib},
                "gang": shape.gang, "priority": shape.priority, "preemptible": shape.preemptible,
                "residency": shape.residency.model_dump(),
            }
            if shape.kind is JobKind.INFERENCE:
                data["inference"] = {
                    "replicas": replicas, "latency_slo_ms": shape.latency_slo_ms,
                    "demand": [{"endpoint": e, "weight": shape.endpoints[e]} for e in endpoints],
                }
            elif shape.datasets:
                data["training"] = {"datasets": shape.datasets}
            spec = self._cache[key] = JobSpec.model_validate(data)
        return spec


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return keys[0] if len(keys) == 1 else rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _pick_endpoints(rng: random.Random, shape: JobShape) -> tuple[str, ...]:
    if shape.kind is not JobKind.INFERENCE:
        return ()
    pool = dict(shape.endpoints)
    chosen = []
    for _ in range(shape.endpoints_per_job):
        e = _pick(rng, pool)
        chosen.append(e)
        del pool[e]
    return tuple(sorted(chosen))


def build_arrivals(
    workload: WorkloadSpec, grid: Grid, seed: int, horizon_s: float, base_dir: Path
) -> tuple[list[Arrival], WorkloadStats]:
    stats = WorkloadStats()
    specs = _Specs()
    arrivals: list[Arrival] = []
    if workload.trace is not None:
        arrivals += _trace_arrivals(workload.trace, seed, horizon_s, base_dir, specs, stats)
    for i, stream in enumerate(workload.generated):
        arrivals += _stream_arrivals(stream, grid, random.Random(f"{seed}:stream:{i}"), horizon_s, specs)
    arrivals.sort(key=lambda a: a.time_s)  # stable: trace first, then streams in file order
    if workload.scale:
        arrivals = _scaled(arrivals, workload.scale, random.Random(f"{seed}:scale"), stats)
    if workload.max_jobs is not None:
        arrivals = arrivals[: workload.max_jobs]
    for a in arrivals:
        stats.by_source[a.source] += 1
    return arrivals, stats


def _trace_arrivals(
    trace: TraceSpec, seed: int, horizon_s: float, base_dir: Path, specs: _Specs, stats: WorkloadStats
) -> list[Arrival]:
    rows = read_trace(str(resolve(trace.path, base_dir)))
    rng = random.Random(f"{seed}:trace")
    origin = trace.origin_days * DAY_S
    span = max((rows[-1].arrival_s + 1.0 - origin) if rows else 0.0, 1.0)
    max_duration = trace.max_duration_days * DAY_S if trace.max_duration_days is not None else math.inf
    out: list[Arrival] = []
    for copy in range(trace.repeat):
        for row in rows:
            stats.trace_rows += 1
            arrival, duration = row.arrival_s - origin, row.duration_s
            if arrival < 0:
                if copy > 0 or arrival + duration <= 0:
                    stats.dropped["ended before the trace origin"] += 1
                    continue
                arrival, duration = 0.0, arrival + duration
            t = trace.start_days * DAY_S + (arrival + copy * span) * trace.time_scale
            if t > horizon_s:
                stats.dropped["after the horizon"] += 1
                continue
            if row.gpus <= 0:
                stats.dropped["no GPU (CPU-only task)"] += 1
                continue
            rule = next((r for r in trace.rules if r.match.admits(row)), None)
            if rule is None:
                stats.dropped["no rule matches"] += 1
                continue
            gpus = max(1, math.ceil(row.gpus * rule.gpu_scale - 1e-9))
            tenant = _pick(rng, rule.tenants)
            spec = specs.get(rule, tenant, gpus, rule.replicas, _pick_endpoints(rng, rule))
            duration = min(max(duration * trace.duration_scale, trace.min_duration_s), max_duration)
            out.append(Arrival(t, spec, duration, rule.name))
            if trace.max_jobs is not None and len(out) >= trace.max_jobs:
                return out
    return out


def _stream_arrivals(
    stream: Stream, grid: Grid, rng: random.Random, horizon_s: float, specs: _Specs
) -> list[Arrival]:
    start = stream.start_days * DAY_S
    end = min(horizon_s, stream.end_days * DAY_S if stream.end_days is not None else math.inf)
    rate = stream.arrivals_per_day / DAY_S
    amplitude = stream.diurnal_amplitude if stream.kind is JobKind.INFERENCE else 0.0
    peak_rate = rate * (1.0 + amplitude)  # thinning: candidates at the peak rate, kept by the local hour
    sizes, size_weights = stream.gpus.choices()
    lo, hi = math.log(stream.duration_hours.min), math.log(stream.duration_hours.max)
    out: list[Arrival] = []
    t = start
    while True:
        t += rng.expovariate(peak_rate)
        if t > end or (stream.max_jobs is not None and len(out) >= stream.max_jobs):
            return out
        endpoints = _pick_endpoints(rng, stream)
        if amplitude > 0:
            lon = grid.endpoint_by_id[endpoints[0]].location.lon
            local_hour = (t / HOUR_S + lon / 15.0) % 24.0
            level = 1.0 + amplitude * math.cos(2 * math.pi * (local_hour - stream.peak_hour_local) / 24.0)
            if rng.random() * (1.0 + amplitude) > level:
                continue
        gpus = rng.choices(sizes, weights=size_weights)[0]
        replicas = rng.randint(stream.replicas.min, stream.replicas.max) if stream.kind is JobKind.INFERENCE else 1
        tenant = _pick(rng, stream.tenants)
        duration = math.exp(rng.uniform(lo, hi)) * HOUR_S
        out.append(Arrival(t, specs.get(stream, tenant, gpus, replicas, endpoints), duration, stream.name))


def _scaled(arrivals: list[Arrival], rules: list[Scaling], rng: random.Random, stats: WorkloadStats) -> list[Arrival]:
    out: list[Arrival] = []
    respecced: dict[tuple[int, int], JobSpec] = {}  # (spec object, rule) -> the spec under the rule's residency
    for a in arrivals:
        factor = 1.0
        for i, rule in enumerate(rules):
            if rule.admits(a.spec, a.source):
                factor *= rule.factor
                if rule.residency is not None:
                    key = (id(a.spec), i)
                    if key not in respecced:
                        respecced[key] = a.spec.model_copy(update={"residency": rule.residency})
                    a = Arrival(a.time_s, respecced[key], a.duration_s, a.source)
        if factor == 1.0:
            out.append(a)
            continue
        copies = math.floor(factor) + (1 if rng.random() < factor - math.floor(factor) else 0)
        out.extend([a] * copies)
        if copies > 1:
            stats.scaled_extra += copies - 1
        elif copies == 0:
            stats.scaled_away += 1
    return out
