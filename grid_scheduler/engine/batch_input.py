"""The batch optimiser's compact input: jobs whose specs are equal but for the name, as one group.

A million pending jobs as ``(job_id, JobSpec)`` pairs cost ~3.5 KB and tens of microseconds of
validation each; most of them repeat a few thousand specs. A ``JobGroup`` carries the spec once
and the ids of every job that has it. ``solve_batch`` takes either form; the queue order of a
list of groups is its flattening (group after group, ids in order), and on that order the two
forms give the same plan (tests/test_batch_compact.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, cast

from grid_scheduler.model import JobSpec

Jobs = Sequence[tuple[str, JobSpec]]


class JobGroup(NamedTuple):
    """Jobs with one spec (its ``name`` is not read: each job is known by its id)."""

    spec: JobSpec
    job_ids: Sequence[str]


def as_groups(jobs: Jobs | Sequence[JobGroup]) -> list[JobGroup]:
    """Groups as given, or one group per ``(job_id, spec)`` pair (same queue order)."""
    if not jobs:
        return []
    if isinstance(jobs[0], JobGroup):
        return list(cast(Sequence[JobGroup], jobs))
    return [JobGroup(spec, (job_id,)) for job_id, spec in cast(Jobs, jobs)]


def flatten(groups: Sequence[JobGroup]) -> Iterator[tuple[str, JobSpec]]:
    """The ``(job_id, spec)`` pairs of ``groups`` in queue order."""
    for spec, job_ids in groups:
        for job_id in job_ids:
            yield job_id, spec


def group_jobs(jobs: Jobs) -> list[JobGroup]:
    """Jobs with equal specs but for the name in one group, groups in order of first appearance."""
    out: dict[str, tuple[JobSpec, list[str]]] = {}
    for job_id, spec in jobs:
        key = spec.model_copy(update={"name": "-"}).model_dump_json()
        entry = out.setdefault(key, (spec, []))
        entry[1].append(job_id)
    return [JobGroup(spec, ids) for spec, ids in out.values()]


def job_count(groups: Sequence[JobGroup]) -> int:
    return sum(len(g.job_ids) for g in groups)
