"""What learn reads of POSIX objects: who maps, holds open or locks which file of /dev/shm
and queue of /dev/mqueue, per process, matched by (st_dev, st_ino) as kernel/holders.py
matches them for a run — but per pid, so that the unit's processes and the others can be
told apart."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from ..kernel.holders import Identity
from ..kernel.procfs import Unread, fd_link, fd_stat, listdir
from ..model import Pid

_NOT_FILES = ("socket:", "pipe:", "anon_inode:", "[")
_MAX_FDS = 4096  # per process and sample, as for the ftok candidates
_LOCKS = {"FLOCK": "locked (flock)", "POSIX": "locked (fcntl)", "OFDLCK": "locked (OFD)"}


def dev_text(dev: int) -> str:
    """st_dev as /proc/PID/maps and /proc/locks print it."""
    return f"{os.major(dev):02x}:{os.minor(dev):02x}"


def mapped(maps: str, devs: Mapping[str, int]) -> set[Identity]:
    """The (dev, ino) of each file on one of `devs` (dev_text -> st_dev) a maps text shows."""
    found: set[Identity] = set()
    if not any(f" {d} " in maps for d in devs):
        return found
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) >= 5 and fields[3] in devs and fields[4].isdigit():
            found.add((devs[fields[3]], int(fields[4])))
    return found


def open_files(procfs: Path, pid: Pid, devs: Collection[int]) -> Iterator[tuple[Identity, str]]:
    """((dev, ino), "fd N") of each fd of the process open on one of `devs` (a process or fd
    gone or hidden meanwhile shows nothing)."""
    fds = listdir(procfs, pid, "fd")
    for fd in [] if isinstance(fds, Unread) else fds[:_MAX_FDS]:
        target = fd_link(procfs, pid, f"fd/{fd}")
        if isinstance(target, Unread) or target.startswith(_NOT_FILES):
            continue
        st = fd_stat(procfs, pid, f"fd/{fd}")
        if not isinstance(st, Unread) and st.st_dev in devs:
            yield (st.st_dev, st.st_ino), f"fd {fd}"


def locks(procfs: Path, devs: Mapping[str, int]) -> dict[int, set[Identity]]:
    """pid -> the (dev, ino) it holds a lock on (/proc/locks; waiters and OFD locks, whose
    pid reads -1, are left out: they name no process)."""
    out: dict[int, set[Identity]] = {}
    try:
        text = (procfs / "locks").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] not in _LOCKS:
            continue
        dev, _, ino = fields[5].rpartition(":")
        if dev in devs and ino.isdigit() and fields[4].isdigit():
            out.setdefault(int(fields[4]), set()).add((devs[dev], int(ino)))
    return out


def holds(
    procfs: Path, pid: Pid, maps: str, devs: Mapping[str, int], locked: Collection[Identity]
) -> Iterator[tuple[Identity, str]]:
    """(identity, how) for everything one process maps, holds open or locks on `devs`."""
    for identity in mapped(maps, devs):
        yield identity, "mapped"
    seen: set[Identity] = set()
    for identity, _ in open_files(procfs, pid, set(devs.values())):
        if identity not in seen:
            seen.add(identity)
            yield identity, "open"
    for identity in locked:
        yield identity, "locked"
