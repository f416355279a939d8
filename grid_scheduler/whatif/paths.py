"""Where a scenario's file fields may point: the one rule, used by every loader.

A scenario names files (``grid``, ``policy_file``, ``workload.trace.path``) relative to the
scenario file. On the command line those are the user's own files, and any path goes
(``FileRoots.UNCONFINED``, the default of every loader). A server that loads scenarios for
remote callers confines them (``FileRoots.confined(folder, ...)``): a name resolves only to a
regular file under one of its folders, so the service is neither a file reader nor an oracle.

The confined rule, in order:

1. no absolute path, no ``~`` (home) path, no NUL: a caller cannot name server paths at all;
2. joined to the scenario's folder, with ``..`` applied to the text alone, it must lie under
   one of the folders: ``../grids/x.yaml`` from a scenario folder beside ``grids/`` is fine,
   ``../../etc/passwd`` is refused without the file system being asked anything;
3. resolved (``Path.resolve``: every symlink followed), it must still lie under one of the
   folders (themselves resolved), so a symlink inside a folder that points outside is outside;
4. it must be a regular file (not a directory, a FIFO, a device).

A name refused by 1-3 gets one fixed message (``OUTSIDE``), whatever the target is or whether
it exists: the message depends only on the name's text and on what lies inside the folders.
Only a name that resolves inside the folders can hear that it is missing or not a regular file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from grid_scheduler.config import ConfigError

__all__ = ["OUTSIDE", "FileRoots", "PathRefused"]

OUTSIDE = "must be a relative path to a regular file under the server's scenario or data folders"
NOT_A_FILE = "names no regular file under the server's scenario or data folders"


class PathRefused(ConfigError):
    """A file name a confined scenario may not use. The message never describes the target."""


@dataclass(frozen=True)
class FileRoots:
    """The folders a scenario's files may be in; ``roots=None`` is unconfined (the CLI).

    Picklable, so a spawned run confines its own loading the same way as the server did.
    """

    roots: tuple[Path, ...] | None = None

    UNCONFINED: ClassVar[FileRoots]

    @classmethod
    def confined(cls, *folders: Path) -> FileRoots:
        return cls(tuple(dict.fromkeys(Path(f).resolve() for f in folders)))

    @property
    def is_confined(self) -> bool:
        return self.roots is not None

    def resolve(self, name: str, base_dir: Path) -> Path:
        """The file ``name`` (from a scenario in ``base_dir``) means; PathRefused if confined and not allowed."""
        if self.roots is None:
            p = Path(name).expanduser()
            return p if p.is_absolute() else (base_dir / p).resolve()
        if not name or "\0" in name or name.startswith("~") or Path(name).is_absolute():
            raise PathRefused(OUTSIDE)
        base = Path(base_dir).resolve()  # the server's own folder: resolving it asks nothing of the name
        if not self._inside(Path(os.path.normpath(base / name))):
            raise PathRefused(OUTSIDE)
        try:
            path = (base / name).resolve()
        except (OSError, RuntimeError):  # a symlink loop, say: refused like any other
            raise PathRefused(OUTSIDE) from None
        if not self._inside(path):
            raise PathRefused(OUTSIDE)
        try:
            regular = path.is_file()
        except OSError:
            regular = False
        if not regular:
            raise PathRefused(NOT_A_FILE)
        return path

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots or ())


FileRoots.UNCONFINED = FileRoots()
