"""Jurisdiction tags derived from a site's country.

Residency rules are written against tags (``EU``, ``EEA``, ``UK``, ``PT`` …). Deriving
the bloc tags from the ISO country code means a grid file cannot, by a slip, tag
Norway as EU: Norway is in the EEA but not in the EU, and the UK is in neither.
"""

from __future__ import annotations

EU_MEMBERS: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    }
)
# EEA = EU + Iceland, Liechtenstein, Norway.
EEA_ONLY: frozenset[str] = frozenset({"IS", "LI", "NO"})
BLOC_TAGS: frozenset[str] = frozenset({"EU", "EEA", "UK"})


def derived_tags(country: str) -> frozenset[str]:
    """The tags a site in ``country`` carries by law, before any extra tags of its own."""
    tags = {country}
    if country in EU_MEMBERS:
        tags |= {"EU", "EEA"}
    elif country in EEA_ONLY:
        tags.add("EEA")
    if country == "GB":
        tags.add("UK")
    return frozenset(tags)


def contradicting_tag(country: str, extra_tags: list[str]) -> str | None:
    """A bloc tag in ``extra_tags`` that the country does not belong to, if any."""
    derived = derived_tags(country)
    for tag in extra_tags:
        if tag in BLOC_TAGS and tag not in derived:
            return tag
    return None
