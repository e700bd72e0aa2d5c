"""Real objects, real processes, SIGKILL, the real command: every verdict, in private namespaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import in_namespace, needs_namespaces

pytestmark = [pytest.mark.integration, needs_namespaces]

POLICY = """
min_age = "0s"
[owners.test]
keys = ["0x10000000-0x1fffffff"]

[owners.queues]
keys = ["0x30000000-0x3000ffff"]
min_age = "0s"
"""


def test_killed_creators_are_removed_and_the_rest_explained(tmp_path: Path) -> None:
    r = in_namespace("killed_creators", POLICY, tmp_path)
    pid = r["pid"]
    assert r["scan"]["0x10000001"][0] == "stale"
    assert f"creator/last shmat/shmdt pid {pid} exited" in r["scan"]["0x10000001"][1]
    assert r["scan"]["0x10000002"][0] == "stale"
    assert "last semop on sems 0,1" in r["scan"]["0x10000002"][1]
    # a queue holding a message is kept (keep_queued_messages defaults to true)
    assert r["scan"]["0x10000003"][0] == "holds-data"
    # a queue that records no pid and whose owner has no unit: no evidence either way
    assert r["scan"]["0x10000004"][0] == "unknown"
    assert r["scan"]["0x20000001"] == ["unowned", "no owner claims this key"]
    assert r["clean"]["0x10000001"][0] == "removed"
    assert r["clean"]["0x10000002"][0] == "removed"
    assert r["clean_rc"] == 0
    assert r["left"] == ["0x10000003", "0x10000004", "0x20000001"]
    assert "removed" not in r["clean_stderr"]  # each removal told once: in the JSON (issue 21.2)
    shm = next(o for o in r["scan_doc"]["objects"] if o["key"] == "0x10000001")
    assert shm["cpid"] == pid and shm["nattch"] == 0 and shm["times"]["ctime"].endswith("Z")
    assert r["scan_doc"]["summary"]["by_verdict"]["stale"] == 2


def test_signs_of_life_keep_objects(tmp_path: Path) -> None:
    r = in_namespace("signs_of_life", POLICY, tmp_path)
    assert r["clean"]["0x10000011"][0] == "in-use"
    assert "1 attached" in r["clean"]["0x10000011"][1]
    assert r["clean"]["0x10000012"][0] == "in-use"
    assert "waiting in semop" in r["clean"]["0x10000012"][1]
    assert r["clean"]["0x10000013"][0] == "in-use"
    assert "is alive" in r["clean"]["0x10000013"][1]
    assert r["left"] == ["0x10000011", "0x10000012", "0x10000013"]


def test_min_age_and_queued_data(tmp_path: Path) -> None:
    policy = POLICY.replace('min_age = "0s"\n[owners.test]', 'min_age = "1h"\n[owners.test]', 1)
    r = in_namespace("young_and_data", policy, tmp_path)
    assert r["clean"]["0x10000021"][0] == "young"
    assert "min_age 1h" in r["clean"]["0x10000021"][1]
    assert r["clean"]["0x30000001"][0] == "holds-data"
    assert r["left"] == ["0x10000021", "0x30000001"]


def test_ipc_private_claimed_by_uid(tmp_path: Path) -> None:
    policy = POLICY + '\n[owners.private]\nuid = 4242\nprivate = true\nmin_age = "0s"\n'
    r = in_namespace("private_by_uid", policy, tmp_path)
    by_uid = {uid: (v, reason) for uid, v, reason in r["objects"]}
    assert by_uid[4242][0] == "removed"
    assert by_uid[4343][0] == "unowned" and "uid 4343" in by_uid[4343][1]
    assert r["left_uids"] == [4343]


def test_pid_reuse_without_a_record_of_the_clock_is_unknown_and_a_live_creator_is_life(
    tmp_path: Path,
) -> None:
    """Here no systemd runs ipcjanitor-clock.timer: nothing records the wall clock's steps,
    and any unrecorded step could make the live creator look younger than its object, so the
    impostor proves nothing (issue 16.4). With the record complete, the same impostor is
    death: tests/e2e/test_clock.py, test_pid_reuse_is_still_death_where_every_step_is_recorded."""
    r = in_namespace("pid_reuse", POLICY, tmp_path)
    assert r["impostor"] == r["creator"], "ns_last_pid should hand the creator's pid out again"
    verdict, reason = r["scan"]["0x10000031"]
    assert verdict == "unknown", reason
    assert f"pid {r['creator']} is held by a process that started" in reason
    assert "wall clock" in reason
    assert r["control"]["0x10000032"][0] == "in-use"


def test_objects_that_changed_after_the_scan_are_kept(tmp_path: Path) -> None:
    r = in_namespace("changed_between", POLICY, tmp_path)
    assert r["before"] == {"0x10000041": "stale", "0x10000042": "stale"}
    assert r["after"]["0x10000041"][0] == "changed"
    assert r["after"]["0x10000042"] == ["changed", "nattch changed since the scan (0 -> 1)"]
    assert r["left"] == ["0x10000041", "0x10000042"]


def test_a_running_unit_keeps_everything_and_its_stop_frees_it(
    tmp_path: Path, cgroup_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the scenario's pid namespace holds every process of its IPC namespace: say so, so that
    # billing.service without a process is known to be stopped
    policy = "pid_namespace_complete = true\n" + POLICY.replace(
        "[owners.test]", '[owners.test]\nunit = "billing.service"'
    )
    monkeypatch.setenv("IJ_CGROUP", str(cgroup_base))
    r = in_namespace("unit_stand_in", policy, tmp_path)
    for key in ("0x10000051", "0x10000052", "0x10000053"):
        assert r["running"][key][0] == "in-use"
        assert "billing.service is running" in r["running"][key][1]
    assert r["stopped"]["0x10000051"][0] == "removed"
    assert r["stopped"]["0x10000053"][0] == "removed"
    assert "records no pid; billing.service is not running" in r["stopped"]["0x10000053"][1]
    assert r["left"] == []


def test_unprivileged_removal_fails_with_errno_and_exit_1(tmp_path: Path) -> None:
    r = in_namespace("unprivileged", POLICY, tmp_path)
    assert r["rc"] == 1
    for key in ("0x10000061", "0x10000062"):
        assert r["clean"][key][0] == "failed"
        assert "EPERM" in r["clean"][key][1]
    assert r["left"] == ["0x10000061", "0x10000062"]


def test_a_creator_outside_our_pid_namespace_is_unknown(tmp_path: Path) -> None:
    r = in_namespace("hidden_creator", POLICY, tmp_path, pid_ns=False)
    verdict, reason = r["clean"]["0x10000071"]
    assert verdict == "unknown"
    assert "reads 0" in reason
    assert r["left"] == ["0x10000071"]


def test_a_policy_error_removes_nothing(tmp_path: Path) -> None:
    r = in_namespace("bad_policy", POLICY + "\n[owners.bad]\nkeys = ['0x20-0x10']\n", tmp_path)
    assert r["rc"] == 78
    assert "reversed" in r["stderr"] and "policy.toml:" in r["stderr"]
    assert r["left"] == ["0x10000081"]


def test_kernel_listing_and_proc_sysvipc_agree(tmp_path: Path) -> None:
    r = in_namespace("sources_agree", POLICY, tmp_path)
    assert r["counts"] == {"shm": 2, "sem": 1, "msg": 1}
    assert r["kernel"] == r["proc"]


def test_metrics_are_written_for_node_exporter(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    r = in_namespace("metrics_file", POLICY, tmp_path)
    assert r["rc"] == 0 and r["mode"] == "0o644"

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for f in text_string_to_metric_families(text):
            for s in f.samples:
                labels = dict(s.labels)
                assert labels.pop("source") == "clean" and "unit" in labels  # who wrote it
                labels.pop("unit")
                out[(s.name, tuple(sorted(labels.items())))] = s.value
        return out

    one, two = samples(r["first"]), samples(r["second"])
    assert one[("ipcjanitor_removed_objects_total", (("kind", "shm"),))] == 3
    assert two[("ipcjanitor_removed_objects_total", (("kind", "shm"),))] == 5  # carried over
    assert two[("ipcjanitor_objects", (("kind", "shm"), ("verdict", "removed")))] == 2
    assert two[("ipcjanitor_objects", (("kind", "msg"), ("verdict", "stale")))] == 0
    assert two[("ipcjanitor_failed_removals", (("kind", "sem"),))] == 0
    assert two[("ipcjanitor_last_success_timestamp_seconds", ())] > 1.7e9
    assert not any(name.endswith("_created") for name, _ in two)
