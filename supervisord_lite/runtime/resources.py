"""Resident memory and CPU of each service's whole process tree.

A service is often a tree (a shell, a server and its workers), so its cost is the
sum over the tree. ``sample_trees`` reads the process table ONCE for all services
and builds the parent -> children map once: walking ``Process.children()`` per
service would re-read the whole table for each of them.

On Linux the table is read straight from ``/proc/PID/stat`` (parent, CPU times)
and ``/proc/PID/statm`` (RSS, the figure psutil and ``ps`` report): ~12 ms for
600 processes against ~36 ms through ``psutil.process_iter``, whose per-call
machinery costs more than the reads. Elsewhere psutil does it; a test checks
both agree.

Limits, by design: a process that double-forks away from its parent (a classic
daemon) leaves the tree and is not counted; the CPU of exited children counts once
their parent (inside the tree) has reaped them (``cutime``/``cstime``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import psutil

from supervisord_lite.host.proctable import CLK_TCK, parse_stat, read_proc_file

_PROC = "/proc"


@dataclass(frozen=True, slots=True)
class TreeUsage:
    rss_bytes: int  # summed over the tree (shared pages count once per process)
    cpu_seconds: float  # user + system, including reaped children
    pids: int  # processes in the tree


#: One process: (pid, ppid, rss bytes, cpu seconds).
_Row = tuple[int, int, int, float]


def _rows_procfs() -> Iterator[_Row]:
    page = os.sysconf("SC_PAGE_SIZE")
    tick = float(CLK_TCK)
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        stat = read_proc_file(f"{_PROC}/{name}/stat")
        # The RSS in `stat` is the kernel's per-CPU approximation (it lags by
        # ~100 kB on 6.x kernels); `statm` has the exact figure `ps` shows.
        statm = read_proc_file(f"{_PROC}/{name}/statm")
        if stat is None or statm is None:
            continue  # gone since listdir
        fields = parse_stat(stat)
        resident = statm.split()
        if fields is None or len(resident) < 2:
            continue
        yield int(name), fields.ppid, int(resident[1]) * page, fields.cpu_ticks / tick


def _rows_psutil() -> Iterator[_Row]:
    for proc in psutil.process_iter(["pid", "ppid", "memory_info", "cpu_times"], ad_value=None):
        info = proc.info
        mem, times = info["memory_info"], info["cpu_times"]
        if mem is None or times is None:
            continue
        cpu = times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        yield info["pid"], info["ppid"] or 0, mem.rss, cpu


def _rows() -> Iterator[_Row]:
    return _rows_procfs() if os.path.isdir(f"{_PROC}/self") else _rows_psutil()


def sample_trees(roots: Mapping[str, int]) -> dict[str, TreeUsage]:
    """``{service: TreeUsage}`` for each ``{service: root pid}`` whose root is alive.

    A root that has exited (or that we may not read) is left out of the result,
    so the caller can tell "not running" from "using nothing". A pid inside two
    trees (a root under another service's root) counts in both. Blocking (~10 ms):
    call it from a worker thread, not the event loop.
    """
    if not roots:
        return {}
    return _sum_trees(roots, _rows())


def _sum_trees(roots: Mapping[str, int], rows: Iterator[_Row]) -> dict[str, TreeUsage]:
    children: dict[int, list[int]] = {}
    usage: dict[int, tuple[int, float]] = {}
    for pid, ppid, rss, cpu in rows:
        usage[pid] = (rss, cpu)
        if ppid != pid:
            children.setdefault(ppid, []).append(pid)
    result: dict[str, TreeUsage] = {}
    for service, root in roots.items():
        if root not in usage:
            continue
        rss_total, cpu_total, count = 0, 0.0, 0
        stack, seen = [root], set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            rss, cpu = usage[pid]
            rss_total += rss
            cpu_total += cpu
            count += 1
            stack.extend(children.get(pid, ()))
        result[service] = TreeUsage(rss_bytes=rss_total, cpu_seconds=cpu_total, pids=count)
    return result
