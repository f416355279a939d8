"""An ordered placement preference: where a job should go first, and where it may overflow to.

A preference is a list of entries, tried in order; each entry names sites:

- ``site:ID``            one site;
- ``jurisdiction:TAG``   every site carrying that jurisdiction tag (``EU``, ``UK``, ``PT`` ...);
- ``tier:TIER``          every site of a tier (``ai_factory``, ``regional_hub``, ``edge``);
- ``*``                  every other site.

Placement tries the first entry; if no pool there can take the job now, the job overflows to
the first two entries together, and so on. A list without ``*`` is also a fence: the job never
runs outside the sites it names (Kueue's ordered flavours, SkyPilot's ordered resources). An
empty list means no preference. Hard rules (residency, latency, GPU type) still apply on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field

from grid_scheduler.model.grid import Grid, Tier

MAX_PREFERENCES = 32
ANY = "*"
_KINDS = ("site", "jurisdiction", "tier")


@dataclass(frozen=True)
class Entry:
    kind: str  # "site" | "jurisdiction" | "tier" | "*"
    value: str

    def __str__(self) -> str:
        return ANY if self.kind == ANY else f"{self.kind}:{self.value}"


def parse_entry(text: str) -> Entry:
    """``site:ID`` | ``jurisdiction:TAG`` | ``tier:TIER`` | ``*``; ValueError says what is wrong."""
    if text == ANY:
        return Entry(ANY, "")
    kind, sep, value = text.partition(":")
    if not sep or kind not in _KINDS or not value:
        raise ValueError(f"{text!r} is not site:ID, jurisdiction:TAG, tier:TIER or *")
    if kind == "tier" and value not in {t.value for t in Tier}:
        raise ValueError(f"unknown tier {value!r} (known: {', '.join(t.value for t in Tier)})")
    return Entry(kind, value)


def _valid(text: str) -> str:
    parse_entry(text)
    return text


PreferenceEntry = Annotated[str, Field(min_length=1, max_length=160), AfterValidator(_valid)]
Preference = Annotated[list[PreferenceEntry], Field(max_length=MAX_PREFERENCES)]


def violations_against_grid(entries: list[str], grid: Grid, field: str) -> list[tuple[str, str]]:
    """Entries that name nothing on this grid: a site it lacks, a tag no site carries, an entry twice."""
    problems: list[tuple[str, str]] = []
    if not entries:
        return problems  # the common case, on every submission: no preference, nothing to look up
    tags = {t for site in grid.sites for t in site.tags}
    seen: set[str] = set()
    for i, text in enumerate(entries):
        entry = parse_entry(text)
        if text in seen:
            problems.append((f"{field}[{i}]", f"{text!r} listed twice"))
        seen.add(text)
        if entry.kind == "site" and entry.value not in grid.site_by_id:
            problems.append((f"{field}[{i}]", f"unknown site {entry.value!r}"))
        elif entry.kind == "jurisdiction" and entry.value not in tags:
            problems.append((f"{field}[{i}]", f"no site carries jurisdiction {entry.value!r}"))
    return problems
