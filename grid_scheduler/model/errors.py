"""Turning pydantic errors into (field path, message) pairs a person can act on."""

from __future__ import annotations

from pydantic import ValidationError


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('sites', 3, 'pools', 0, 'gpus_per_node')`` -> ``sites[3].pools[0].gpus_per_node``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def violations(error: ValidationError) -> list[tuple[str, str]]:
    result = []
    for e in error.errors(include_url=False):
        # Validators on a model report their location one level up; pydantic adds no
        # entry for the model itself, so an empty path means "the whole document".
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = e["msg"].removeprefix("Value error, ")
        if message.startswith("Input should be greater than "):
            message = "must be > " + message.removeprefix("Input should be greater than ")
        result.append((field_path(loc) or "(document)", message))
    return result


def describe(error: ValidationError) -> str:
    return "\n".join(f"{path}: {message}" for path, message in violations(error))
