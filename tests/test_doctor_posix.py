"""doctor's POSIX rows, pure (issue 19.3): /dev/shm's fill with what clean frees, the
queues against queues_max, each user's RLIMIT_MSGQUEUE charge. Real: tests/integration."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ipcjanitor.commands.doctor import Report
from ipcjanitor.commands.doctor_posix import (
    Charge,
    ShmFs,
    mq_charge,
    mq_rows,
    parse_limit,
    shm_rows,
)
from ipcjanitor.model import PosixKind, PosixObject

MIB = 1024 * 1024


def pobj(name: str, kind: PosixKind = PosixKind.SHM, blocks: int = 0, ino: int = 1) -> PosixObject:
    return PosixObject(kind, name, 1, ino, 0, 0, 0o100600, 0, 1, 0, 0, 0, (("", 1, 1),), name,
                       blocks=blocks)  # fmt: skip


def test_a_nearly_full_dev_shm_is_a_sigbus_problem_with_the_bytes_clean_frees() -> None:
    stale = [pobj("psm_a", blocks=1800), pobj("q", PosixKind.MQ, ino=2)]
    rows = shm_rows(ShmFs(MIB, int(0.95 * MIB), 1000, 3), stale)
    data, inodes = rows
    assert (data.used, data.max, data.stale, data.problem) == (int(0.95 * MIB), MIB, 921600, True)
    assert (inodes.used, inodes.stale, inodes.problem) == (3, 1, False)
    text = Report(rows, [], [], []).text()
    assert "PROBLEM: a full tmpfs is a SIGBUS at the next page fault" in text
    assert not Report(rows, [], [], []).healthy
    doc = json.loads(Report(rows, [], [], []).json())
    assert doc["limits"][0]["kind"] == "posix-shm" and doc["limits"][0]["problem"] is True
    assert shm_rows(ShmFs(MIB, MIB // 2, 0, 5), None)[0].stale is None  # policy error
    assert shm_rows(ShmFs(MIB, MIB // 2, 0, 5), None)[1].problem is False  # nr_inodes=0


def test_queues_and_rlimit_charges() -> None:
    queues = [pobj(f"q{i}", PosixKind.MQ, ino=i) for i in range(1, 5)]
    rows = mq_rows(queues, 4, [Charge(1000, 82880, 90000, 0), Charge(0, 10, 0, 0)], queues[:1])
    assert [(r.measure, r.used, r.max, r.stale, r.problem) for r in rows] == [
        ("queues", 4, 4, 1, True),
        ("bytes of uid 1000", 82880, 90000, 0, True),  # uid 0's unlimited: no row
    ]
    assert "EMFILE of this user's next mq_open" in Report(rows, [], [], []).text()
    assert mq_rows([], None, [Charge(5, 1, None, 0)], None) == []


def test_the_kernels_charge_of_a_default_queue() -> None:
    # mq_open(O_CREAT) with attr NULL: 10 messages of 8192 bytes
    assert mq_charge(10, 8192) == 10 * 8192 + 10 * 48 + 10 * 48


@given(st.integers(1, 100_000), st.integers(1, 1 << 20))
def test_property_charge_grows_with_both_and_covers_the_messages(maxmsg: int, size: int) -> None:
    assert mq_charge(maxmsg, size) > maxmsg * size
    assert mq_charge(maxmsg + 1, size) > mq_charge(maxmsg, size) < mq_charge(maxmsg, size + 1)


def test_limits_file() -> None:
    limits = (
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max msgqueue size         819200               819200               bytes\n"
    )
    assert parse_limit(limits) == 819200
    assert parse_limit(limits.replace("819200  ", "unlimited", 1)) == 0
    assert parse_limit("Max open files 1024 1024 files\n") is None
