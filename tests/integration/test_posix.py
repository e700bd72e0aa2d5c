"""POSIX IPC with real objects of real processes, in private IPC, mount and pid namespaces
with a fresh tmpfs on /dev/shm and a fresh mqueue on /dev/mqueue."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]


def run(scenario: str, tmp: Path, policy: str = "") -> dict:  # type: ignore[type-arg]
    return in_namespace(scenario, policy, tmp, module="posix_scenarios", posix=True)  # type: ignore[no-any-return]


def test_shm_files_semaphores_and_queues_are_listed_by_kind(tmp_path: Path) -> None:
    r = run("listing", tmp_path)
    assert r["objects"] == [
        ["posix-shm", "app/buf0", None, None],
        ["posix-shm", "psm_a", None, None],
        ["posix-sem", "jack_sem.0", None, None],
        ["posix-mq", "q0", 0, None],
        ["posix-mq", "q1", 3, None],
    ]
    assert r["notes"] == []


def test_an_unmounted_mqueue_is_said(tmp_path: Path) -> None:
    r = run("mqueue_unmounted", tmp_path)
    assert r["objects"] == []
    assert r["notes"] == [
        "/dev/mqueue is not mounted (no mqueue filesystem there): POSIX message queues "
        "were not listed (mount -t mqueue mqueue /dev/mqueue)"
    ]


def test_every_way_of_holding_is_seen_and_gone_after_sigkill(tmp_path: Path) -> None:
    r = run("holders_alive_and_killed", tmp_path)
    pid = r["pids"]
    alive = r["alive"]
    assert alive["posix-shm:map_only"] == [f"mapped by pid {pid['mapped']} (python)"]
    assert [h.split(" (")[0] for h in alive["posix-shm:fd_only"]] == [f"fd 3 of pid {pid['fd']}"]
    assert f"LOCK_SH by pid {pid['lock_sh']}" in alive["posix-shm:locked"]
    assert any(h.startswith("OFD read lock by pid -1") for h in alive["posix-shm:ofd_locked"])
    assert any(h.startswith(f"mapped by pid {pid['sem']} ") for h in alive["posix-sem:sem1"])
    assert any(h.startswith(f"fd 3 of pid {pid['mq_reader']} ") for h in alive["posix-mq:reader_q"])
    psm = alive["posix-shm:psm_test"]
    assert any(h.startswith(f"mapped by pid {pid['shared_memory']} ") for h in psm)
    assert r["blind"] == [None, None]
    # outside the host's pid namespace, unless pid_namespace_complete, a holder may hide
    assert "outside the host's pid namespace" in r["blind_unstated"]
    assert all(v == [] for v in r["dead"].values()), r["dead"]
    assert len(r["dead"]) == 7


CLEAN_POLICY = """
min_age = "0s"
pid_namespace_complete = true
[owners.apps]
names = ["psm_*", "map_*", "fd_*", "lock_*", "ofd_*", "sem_*", "q_*"]
[owners.free]
names = ["free_*"]
kinds = ["posix-mq"]
keep_queued_messages = false
"""


def test_clean_removes_the_dead_keeps_the_living_and_explains(tmp_path: Path) -> None:
    r = run("clean_for_real", tmp_path, CLEAN_POLICY)
    first, pids = r["first"], r["pids"]
    assert r["first_rc"] == 0, r["first_stderr"]
    for name in ["posix-shm:psm_dead", "posix-sem:sem_dead", "posix-mq:q_dead",
                 "posix-mq:free_data", "posix-shm:map_dead"]:  # fmt: skip
        assert first[name][0] == "removed", (name, first[name])
    assert first["posix-mq:q_data"] == [
        "holds-data",
        "3 message(s) still queued (keep_queued_messages)",
    ]
    assert first["posix-shm:map_live"] == ["in-use", f"mapped by pid {pids['map_live']} (python)"]
    assert first["posix-shm:fd_live"] == ["in-use", f"fd 3 of pid {pids['fd_live']} (python)"]
    assert first["posix-shm:lock_live"][0] == "in-use"
    assert f"LOCK_SH by pid {pids['lock_live']}" in first["posix-shm:lock_live"][1]
    assert "OFD read lock by pid -1" in first["posix-shm:ofd_live"][1]
    assert first["posix-sem:sem_live"][0] == "in-use"
    assert f"fd 3 of pid {pids['q_reader']} (python)" in first["posix-mq:q_reader"][1]
    assert first["posix-shm:other"] == ["unowned", "no owner's names claim posix-shm 'other'"]
    assert (
        first["posix-shm:psm_hard"][0] == "unknown" and "2 links" in first["posix-shm:psm_hard"][1]
    )
    assert "posix-shm:psm_link" not in first  # a symlink is no object, and never followed
    assert r["secret"] == "root's"
    assert r["scan"]["posix-shm:psm_dead"][0] == "stale"
    assert r["after_first"] == [
        "fd_live", "lock_live", "map_live", "ofd_live", "other", "psm_hard", "psm_hard2",
        "psm_link", "sem.sem_live", "mq:q_data", "mq:q_reader",
    ]  # fmt: skip
    assert "removed" not in r["first_stderr"]  # each removal told once: in the JSON (issue 21.2)
    # the holders SIGKILLed: everything claimed and provably unused is gone
    second = r["second"]
    for name in ["posix-shm:map_live", "posix-shm:fd_live", "posix-shm:lock_live",
                 "posix-shm:ofd_live", "posix-sem:sem_live", "posix-mq:q_reader"]:  # fmt: skip
        assert second[name][0] == "removed", (name, second[name])
    assert r["after_second"] == ["other", "psm_hard", "psm_hard2", "psm_link", "mq:q_data"]
    assert "NAME" in r["table"].splitlines()[0] and "psm_hard" in r["table"]


HOSTILE_POLICY = (
    'min_age = "0s"\npid_namespace_complete = true\n[owners.a]\nnames = ["psm_*", "*/psm_*"]\n'
)


def test_another_filesystem_is_never_entered_and_hostile_names_are_safe(tmp_path: Path) -> None:
    r = run("hostile_names_and_mounts", tmp_path, HOSTILE_POLICY)
    assert sorted(r["scan"]) == [
        "posix-shm:psm_\\x1b[2J", "posix-shm:psm_bad\\xff", "posix-shm:psm_new\\x0aline",
    ]  # fmt: skip
    assert r["notes"] == ["/dev/shm/container is another filesystem: not entered"]
    assert "\x1b" not in r["table"] and "psm_new\\x0aline" in r["table"]
    assert all(v[0] == "removed" for v in r["clean"].values()), r["clean"]
    assert r["inner"] == ["psm_inner"]
    assert r["left"] == ["container", "psm_dev", "psm_fifo", "psm_sock"] and r["dev_still_a_device"]


def test_in_a_child_pid_namespace_nothing_is_proven_unless_complete(tmp_path: Path) -> None:
    policy = HOSTILE_POLICY.replace("pid_namespace_complete = true\n", "")
    r = run("hostile_names_and_mounts", tmp_path, policy)
    assert len(r["clean"]) == 3
    for verdict, reason in r["clean"].values():
        assert verdict == "unknown"
        assert (
            "a holder could be invisible (ipcjanitor runs outside the host's pid namespace"
            in reason
        )
    assert len(r["left"]) == 7  # container, the three and the three non-files, all kept


def test_unreadable_holders_and_hidepid_make_every_object_unknown(tmp_path: Path) -> None:
    policy = 'min_age = "0s"\npid_namespace_complete = true\n[owners.a]\nnames = ["psm_*"]\n'
    r = run("unprivileged_and_hidepid", tmp_path, policy)
    for name in ("posix-shm:psm_root", "posix-shm:psm_dead"):
        verdict, reason = r["eacces"][name]
        assert verdict == "unknown" and "cannot read the maps or fds of pid 1 " in reason, reason
        verdict, reason = r["hidden"][name]
        assert verdict == "unknown" and "hidepid=invisible" in reason, reason
    assert r["as_root"]["posix-shm:psm_root"] == ["in-use", f"mapped by pid {r['pid']} (python)"]
    assert r["as_root"]["posix-shm:psm_dead"][0] == "stale"
    assert r["left"] == ["psm_dead", "psm_root"]


def test_a_name_swapped_as_fast_as_possible_never_costs_another_inode(tmp_path: Path) -> None:
    policy = (
        'min_age = "0s"\npid_namespace_complete = true\n[owners.a]\nnames = ["psm_*"]\nuid = 0\n'
    )
    r = run("swap_race", tmp_path, policy)
    assert r["swaps"] > 100, r  # the race really ran
    assert r["b_alive"] and r["b_content"] == "B"
    assert r["asides"] == []
    assert set(r["verdicts"]) <= {"removed", "changed", "unowned"}
    assert r["verdicts"], r


def test_a_directory_swapped_as_fast_as_possible_never_costs_a_file_outside_it(
    tmp_path: Path,
) -> None:
    policy = (
        'min_age = "0s"\npid_namespace_complete = true\n[owners.a]\nnames = ["user/psm_*"]\n'
        "uid = 0\n"
    )
    r = run("dir_swap_race", tmp_path, policy)
    assert r["swaps"] > 100, r  # the race really ran
    assert r["secret"] == "root's" and r["decoy"] == "decoy"
    assert r["asides"] == []
    assert "removed" in r["verdicts"], r
    assert set(r["verdicts"]) <= {"removed", "changed", "unowned"}, r  # unowned: keep/*
    assert r["real_left"] == [], r


def test_churn_never_costs_a_live_object_and_leaves_no_dead(tmp_path: Path) -> None:
    """Issue 18's churn rig: 30 s of processes creating, mapping, locking, unmapping and
    dying (some SIGKILLed while they hold) under clean after clean."""
    r = run("churn", tmp_path, 'min_age = "0s"\npid_namespace_complete = true\n'
            '[owners.churn]\nnames = ["psm_churn_*"]\n')  # fmt: skip
    assert r["lost"] == []  # no worker found a name it held removed or replaced
    assert r["runs"] >= 10 and r["started"] >= 40 and r["killed"] >= 3 and r["ok"] >= 20
    assert r["removed"] > 0  # the dead were removed along the way
    assert r["final_rc"] == 0 and r["left"] == []  # and none of them is left at the end


DOCTOR_POLICY = """
min_age = "0s"
pid_namespace_complete = true
[owners.apps]
names = ["psm_*", "q_*"]
"""


def test_doctor_watches_dev_shm_and_the_queues(tmp_path: Path) -> None:
    r = run("doctor_shm_and_queues", tmp_path, DOCTOR_POLICY)
    full = r["full"]
    shm = full["rows"]["posix-shm bytes"]
    assert shm["max"] == 1024 * 1024 and shm["problem"] and shm["percent"] >= 90, shm
    assert shm["stale"] >= 972800  # what clean frees now: the dead writer's file
    assert full["rows"]["posix-shm inodes"]["problem"] is False
    queues = full["rows"]["posix-mq queues"]
    assert (queues["used"], queues["max"], queues["stale"], queues["problem"]) == (3, 4, 2, False)
    charge = full["rows"]["posix-mq bytes of uid 65534"]
    assert (charge["used"], charge["max"], charge["problem"]) == (82880, 90000, True), charge
    assert charge["stale"] == 0  # its queue is in use
    assert full["rc"] == 1 and full["text_rc"] == 1
    assert "SIGBUS at the next page fault" in full["text"]
    assert "EMFILE of this user's next mq_open" in full["text"]
    # clean freed the file: /dev/shm is fine, nobody's live queue still is a problem
    cleaned = r["cleaned"]
    assert cleaned["rows"]["posix-shm bytes"]["problem"] is False
    assert cleaned["rows"]["posix-mq queues"]["used"] == 1
    assert cleaned["rc"] == 1
    # its process killed, its queue cleaned: healthy
    after = r["after"]
    assert after["rc"] == 0 and after["text_rc"] == 0, after
    assert "posix-mq bytes of uid 65534" not in after["rows"]
    assert r["left"] == []
