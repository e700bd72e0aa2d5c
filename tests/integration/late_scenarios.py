"""Scenarios of test_late_waiters.py, run INSIDE `unshare --ipc --pid --fork --mount-proc`.

A waiter that arrives while a long sweep is under way: the kernel records nothing of a task
blocked in msgrcv, so only a fresh look at the tasks before each batch of removals sees it.
"""

from __future__ import annotations

import ctypes
from typing import Any

from tests.integration import scenarios, sysv
from tests.integration.scenarios import ipcs_keys, janitor, scenario, verdicts

QUEUES = 8000
FIRST_KEY = 0x30010000
IPC_STAT = 2


def _gone(msqid: int) -> bool:
    buf = ctypes.create_string_buffer(256)  # struct msqid_ds is 120 bytes on x86_64
    return int(sysv.libc.msgctl(msqid, IPC_STAT, buf)) == -1


@scenario
def late_queue_waiter() -> dict[str, Any]:
    """QUEUES stale queues; a consumer starts waiting on the last one only once the sweep has
    removed the first (so after any look at the tasks taken before the sweep began)."""

    def make() -> None:
        for i in range(QUEUES):
            q = sysv.msgget(FIRST_KEY + i)
            sysv.msgsnd(q)
            sysv.msgrcv(q)

    sysv.kill9(sysv.spawn(make))
    first, last = sysv.msgget(FIRST_KEY), sysv.msgget(FIRST_KEY + QUEUES - 1)

    def consume_once_the_sweep_began() -> None:
        while not _gone(first):
            pass
        sysv.msgrcv(last)  # blocks: nothing is ever sent; EIDRM ends the process

    consumer = sysv.spawn(consume_once_the_sweep_began, block=True)
    run = janitor("clean", "--json")
    waiting = sysv.blocked_in(consumer, sysv.MSGRCV_NR)
    sysv.kill9(consumer)
    left = ipcs_keys()
    return {
        "rc": run["rc"],
        "stderr": run["stderr"][-2000:],
        "last": verdicts(run).get(f"0x{FIRST_KEY + QUEUES - 1:08x}"),
        "removed": sum(v == "removed" for v, _ in verdicts(run).values()),
        "still_waiting": waiting,
        "left": left,
        "consumer": consumer,
    }


if __name__ == "__main__":
    scenarios.main()
