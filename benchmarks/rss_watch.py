"""Resident memory of this process and its children, sampled in a thread; a ceiling that stops the run.

The batch benchmark forks worker processes whose copy-on-write pages become their own as they are
written, so the peak of parent + workers is what the machine feels (``ru_maxrss`` gives only the
largest single process). RSS counts a page shared by two processes twice (an upper bound); PSS
(``/proc/PID/smaps_rollup``) splits it between them (what they cost together).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    """Bytes resident, and proportional (0 if unreadable)."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


class RssWatch:
    """Peak summed RSS and PSS of this process and its children; when the memory they hold together
    (PSS: a page shared by the forked workers counted once) exceeds ``limit_bytes``, it kills the
    children and this process (SIGKILL: a run that would starve the shared machine)."""

    def __init__(self, limit_bytes: int, interval_s: float = 0.5) -> None:
        self.limit, self.interval = limit_bytes, interval_s
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval):
            pids = [me, *_children(me)]
            sizes = [_rss_pss(p) for p in pids]
            rss, pss = sum(r for r, _ in sizes), sum(p for _, p in sizes)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            if (pss or rss) > self.limit:
                print(f"\nPSS {pss / 2**30:.1f} GiB over the {self.limit / 2**30:.1f} GiB ceiling: stopping",
                      flush=True)
                for pid in pids[1:]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                os.kill(me, signal.SIGKILL)
