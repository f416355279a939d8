"""convert.job_to_pb and convert.spec_to_pb fill messages in place; what they send must not change.

Held byte for byte (deterministic serialisation) to the conversion as it was
(tests/reference_convert.py) on real records of a real scheduler: placed, waiting, rejected,
cancelled and completed jobs, with and without reasons, an echoed spec and a start estimate,
built apart and into a response's field.
"""

from __future__ import annotations

import itertools

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.config import load_grid, load_job
from grid_scheduler.model import GpuTopology, JobRecord, JobSpec, JobState, Reason, ReasonCode, TopologyMode
from grid_scheduler.scheduler import InvalidJob, Scheduler
from grid_scheduler.service import convert
from grid_scheduler.synthetic import job_stream
from tests.conftest import GRIDS, JOBS
from tests.reference_convert import reference_job_to_pb, reference_spec_to_pb


def wire(message: object) -> bytes:
    data: bytes = message.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
    return data


def example_specs() -> list[JobSpec]:
    specs = [load_job(path) for path in sorted(JOBS.glob("*.yaml"))]
    variants = []
    for spec in specs:  # the optional and nested fields the stream may not exercise
        variants.append(spec.model_copy(update={"max_run_hours": 2.5, "gang": False, "placement_preference": []}))
        variants.append(spec.model_copy(update={"topology": GpuTopology(mode=TopologyMode.SLICES, slice_gpus=8)}))
        variants.append(spec.model_copy(update={"topology": GpuTopology(mode=TopologyMode.WHOLE_DOMAINS)}))
    return specs + variants


def records() -> list[JobRecord]:
    grid = load_grid(GRIDS / "small.yaml")
    scheduler = Scheduler(grid)
    out: list[JobRecord] = []
    stream = list(job_stream(grid, 300, seed=3)) + example_specs()
    for i, spec in enumerate(stream):  # no cancels: the small grid fills up, later jobs wait or are refused
        try:
            outcome = scheduler.submit(spec, request_id=f"r{i}" if i % 2 else "", owner="alice" if i % 3 else "")
        except InvalidJob:  # an example naming what only the nscale grid has (its spec is tested below)
            continue
        out.append(outcome.record)
    running = [r for r in out if r.state is JobState.RUNNING]
    out += [scheduler.cancel(r.id) for r in running[:5]]
    out += [scheduler.complete(r.id) for r in running[5:10]]
    return out


def test_job_to_pb_sends_what_it_sent_before_for_every_kind_of_record() -> None:
    seen = set()
    for record, (reasons, echo, start) in zip(records(), itertools.cycle(
            [(False, False, None), (True, False, None), (False, True, 1.7e9 + 0.25), (True, True, None)]),
            strict=False):
        seen.add(record.state)
        why = waiting_reasons(record) if reasons else None
        spec = reference_spec_to_pb(record.spec) if echo else None
        expected = reference_job_to_pb(record, why, spec, start)
        assert wire(convert.job_to_pb(record, why, spec, start)) == wire(expected)
        response = pb.SubmitJobResponse(created=True)
        convert.job_to_pb(record, why, spec, start, out=response.job)
        assert wire(response) == wire(pb.SubmitJobResponse(job=expected, created=True))
    assert {JobState.RUNNING, JobState.PENDING, JobState.REJECTED, JobState.CANCELLED, JobState.COMPLETED} <= seen


def waiting_reasons(record: JobRecord) -> list[Reason]:
    # Reasons with every field set, one per reason code of the job's wait (none for a placed job).
    return [Reason(code=ReasonCode.CAPACITY, site_id=site, message=f"{n} sites", required=2.0, available=1.0,
                   unit="gpus", used=3.0, nominal=4.0, borrowable=1.0)
            for site, n in sorted(record.waiting.site_counts.items())] if record.waiting else []


def test_spec_to_pb_sends_what_it_sent_before() -> None:
    grid = load_grid(GRIDS / "nscale.yaml")
    for spec in list(job_stream(grid, 300, seed=5)) + example_specs():
        assert wire(convert.spec_to_pb(spec)) == wire(reference_spec_to_pb(spec))
        into = pb.Job()
        convert.spec_to_pb(spec, into.spec)
        assert wire(into.spec) == wire(reference_spec_to_pb(spec))
