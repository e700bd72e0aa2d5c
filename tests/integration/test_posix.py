"""POSIX IPC with real objects of real processes, in private IPC, mount and pid namespaces
with a fresh tmpfs on /dev/shm and a fresh mqueue on /dev/mqueue."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]


def run(scenario: str, tmp: Path, policy: str = "", brk: str = "") -> dict:  # type: ignore[type-arg]
    """brk: run the janitor with that defect of tests/adversary/broken.py patched in."""
    extra = (brk,) if brk else ()
    return in_namespace(scenario, policy, tmp, *extra, module="posix_scenarios", posix=True)  # type: ignore[no-any-return]


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


SEM_POLICY = """
min_age = "0s"
pid_namespace_complete = true
[owners.pair]
names = ["pair"]
kinds = ["posix-sem"]
"""


def test_a_semaphore_of_two_processes_is_kept_while_either_lives(tmp_path: Path) -> None:
    """Issue 19.4: a glibc named semaphore (sem_open, /dev/shm/sem.pair) that a waiter and a
    poster share. Either one SIGKILLed, the other alive (blocked in sem_wait, or holding it
    after its post) keeps it, the same inode, still shared: a new poster wakes the waiter.
    Both dead: removed."""
    r = run("semaphore_of_two", tmp_path, SEM_POLICY)
    pids = r["pids"]
    assert r["first_post"] == "woke 1"
    verdict, reason = r["poster_dead"]["posix-sem:pair"]
    assert verdict == "in-use" and reason == f"mapped by pid {pids['waiter']} (python)", reason
    assert r["inode_kept"]
    assert r["second_post"] == "woke 2"  # the waiter and the new poster share the one inode
    verdict, reason = r["waiter_dead"]["posix-sem:pair"]
    assert verdict == "in-use" and reason == f"mapped by pid {pids['poster']} (python)", reason
    assert r["inode_kept_2"]
    assert r["both_dead"]["posix-sem:pair"][0] == "removed", r["both_dead"]
    assert r["left"] == []


def test_jack_semaphores_of_two_users_are_each_removed_by_their_own_owner(
    tmp_path: Path,
) -> None:
    """Issue 19.4: JACK2's jack_sem.UID_SERVER_CLIENT semaphores of uids 1000 and 2000, one
    live and one SIGKILLed client each. An owner claiming jack_sem.* for one uid removes that
    uid's dead one only; the other uid's stay unowned, the reason saying why."""
    r = run("jack_two_users", tmp_path)
    assert r["uids"] == {
        "sem.jack_sem.1000_default_dead": 1000, "sem.jack_sem.1000_default_live": 1000,
        "sem.jack_sem.2000_default_dead": 2000, "sem.jack_sem.2000_default_live": 2000,
    }  # fmt: skip
    pids = r["pids"]
    for uid, other in ((1000, 2000), (2000, 1000)):
        run_ = r["runs"][str(uid)]
        v = run_["verdicts"]
        assert run_["rc"] == 0
        assert v[f"posix-sem:jack_sem.{uid}_default_dead"][0] == "removed", v
        assert v[f"posix-sem:jack_sem.{uid}_default_live"] == [
            "in-use",
            f"mapped by pid {pids[str(uid)]} (python)",
        ]
        for client in ("live", "dead") if uid == 1000 else ("live",):
            verdict, reason = v[f"posix-sem:jack_sem.{other}_default_{client}"]
            assert verdict == "unowned", v
            # (a uid the host's passwd names is followed by its name)
            assert (
                reason.startswith(f"owner jack-{uid}'s names match, but the file's uid is {other}")
                and f", not {uid}" in reason
            ), reason
    assert r["runs"]["1000"]["left"] == [
        "sem.jack_sem.1000_default_live", "sem.jack_sem.2000_default_dead",
        "sem.jack_sem.2000_default_live",
    ]  # fmt: skip
    assert r["runs"]["2000"]["left"] == [
        "sem.jack_sem.1000_default_live", "sem.jack_sem.2000_default_live",
    ]  # fmt: skip
    # both owners in one policy: no overlap (their uids differ), each removes its own
    assert r["check"]["rc"] == 0 and "overlap" not in r["check"]["stderr"], r["check"]
    assert r["both"] == {
        "posix-sem:jack_sem.1000_default_live": ["removed", "jack-1000"],
        "posix-sem:jack_sem.2000_default_live": ["removed", "jack-2000"],
    }
    assert r["left"] == []


DPDK_POLICY = """
min_age = "0s"
pid_namespace_complete = true
[owners.dpdk]
names = ["rtemap_*"]
kinds = ["posix-shm"]
"""


def test_dpdk_style_files_are_kept_while_a_lock_sh_holder_lives(tmp_path: Path) -> None:
    """Issue 19.4: a DPDK-style owner holds LOCK_SH on its memory files for their whole life,
    with nothing mapped (mapped, written, unmapped). A primary and a secondary hold both
    files: kept while either lives, the reason naming the live one's lock; both dead:
    removed."""
    r = run("dpdk_lock_sh", tmp_path, DPDK_POLICY)
    primary, secondary = r["pids"]
    assert r["maps"] == []  # no mapping: the lock and its fd are all there is
    for name in ("posix-shm:rtemap_0", "posix-shm:rtemap_1"):
        verdict, reason = r["both_alive"][name]
        assert verdict == "in-use", reason
        assert f"LOCK_SH by pid {primary}" in reason and f"LOCK_SH by pid {secondary}" in reason
        verdict, reason = r["secondary_alive"][name]
        assert verdict == "in-use" and f"LOCK_SH by pid {secondary}" in reason, reason
        assert str(primary) not in reason
        assert r["both_dead"][name][0] == "removed", r["both_dead"]
    assert r["left_alive"] == ["rtemap_0", "rtemap_1"]
    assert r["left"] == []


def test_the_tests_above_fail_on_a_janitor_blind_to_holders(tmp_path: Path) -> None:
    """The scenarios above with tests/adversary/broken.py's blind-holders (no holder seen, no
    lease asked): each live semaphore is removed under its users, the waiter is never woken
    again (the next poster makes another semaphore), and the tests above would fail."""
    r = run("semaphore_of_two", tmp_path, SEM_POLICY, brk="blind-holders")
    assert r["poster_dead"]["posix-sem:pair"][0] == "removed", r
    assert not r["inode_kept"] and r["second_post"] is None
    r = run("jack_two_users", tmp_path, brk="blind-holders")
    for uid in ("1000", "2000"):
        assert r["runs"][uid]["verdicts"][f"posix-sem:jack_sem.{uid}_default_live"][0] == "removed"
    # LOCK_SH holders: flock(LOCK_EX|LOCK_NB) still refuses the removal, but the verdict is
    # no longer in-use with its reason (the DPDK test above fails)
    r = run("dpdk_lock_sh", tmp_path, DPDK_POLICY, brk="blind-holders")
    for name in ("posix-shm:rtemap_0", "posix-shm:rtemap_1"):
        assert r["secondary_alive"][name][0] == "changed", r["secondary_alive"]


def test_learn_proposes_queues_semaphores_and_locked_files(
    tmp_path: Path, cgroup_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19.2: learn records what the unit's processes hold open (a queue), map (a named
    semaphore) or lock (DPDK-style files under LOCK_SH, nothing mapped), proposes their
    names (a pattern for rtemap_0 and rtemap_1) and kinds, and the learned policy's hook
    removes all of them once the unit is SIGKILLed."""
    monkeypatch.setenv("IJ_CGROUP", str(cgroup_base))
    r = run("learn_queue_semaphore_and_locks", tmp_path, "pid_namespace_complete = true\n")
    assert r["rc"] == 0, r["stderr"]
    assert tomllib.loads(r["stdout"])["owners"] == {
        "learned": {
            "unit": "learned.service",
            "kinds": ["posix-shm", "posix-sem", "posix-mq"],
            "names": ["jobs", "rtemap_*", "turn"],
            "uid": "root",
            "min_age": "0s",
        }
    }, r["stdout"]
    comments = r["stdout"].split("rtemap_0")[1].split('"rtemap_*"')[0]
    assert "#   locked: pid " in comments and "mapped" not in comments, comments
    assert r["hook"] == {
        name: ["removed", "nothing maps, opens or locks it; learned.service is not running; "
               + r["hook"][name][1].rsplit("; ", 1)[-1]]
        for name in ("posix-shm:rtemap_0", "posix-shm:rtemap_1", "posix-sem:turn", "posix-mq:jobs")
    }  # fmt: skip
    assert r["left"] == []
