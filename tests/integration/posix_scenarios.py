"""POSIX scenarios, run INSIDE harness.in_namespace(posix=True): a fresh tmpfs on /dev/shm and
a fresh mqueue on /dev/mqueue in private IPC, mount and pid namespaces. Each prints its
result as JSON on its last line."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipcjanitor.kernel import holders, posix

HERE = Path(__file__).parent
SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {}
POLICY = ""
BREAK = ""  # a break of tests/adversary/broken.py to run the janitor with, or none


def scenario(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    SCENARIOS[fn.__name__] = fn
    return fn


def private_mounts() -> None:
    """Refuse to run anywhere but on the fresh mounts the harness made: another /dev/shm
    than the host's (whose st_dev the harness passes), an mqueue mounted on /dev/mqueue,
    both empty."""
    host = os.environ.get("POSIX_TEST_HOST_SHM_DEV")
    if host is None or os.stat("/dev/shm").st_dev == int(host):
        raise SystemExit("/dev/shm is the host's: refusing to run")
    if posix.mount_type(Path("/proc"), Path("/dev/mqueue")) != "mqueue":
        raise SystemExit("no private mqueue on /dev/mqueue: refusing to run")
    if os.listdir("/dev/shm") or os.listdir("/dev/mqueue"):
        raise SystemExit("/dev/shm or /dev/mqueue is not fresh")


def start(how: str, name: str, uid: int | None = None) -> subprocess.Popen[str]:
    """A real program holding NAME as HOW says (as uid, when given); returns once it holds it."""
    become = (
        [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    )
    proc = subprocess.Popen(
        [*become, sys.executable, str(HERE / "posix_progs.py"), how, name],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: SIGKILL takes helpers (resource tracker) too
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def listed(listing: posix.Listing) -> list[list[object]]:
    return [[o.kind.value, o.name, o.qnum, o.unreadable] for o in listing.objects]


@scenario
def listing() -> dict[str, Any]:
    """shm files, a glibc semaphore and queues (one with messages), listed by kind."""
    procs = [start("mapped", "psm_a"), start("sem", "jack_sem.0"), start("mq_data", "q1")]
    procs.append(start("mq", "q0"))
    Path("/dev/shm/app").mkdir()
    Path("/dev/shm/app/buf0").write_bytes(b"")
    out = {"objects": listed(posix.list_posix()), "notes": list(posix.list_posix().notes)}
    for p in procs:
        kill(p)
    return out


@scenario
def mqueue_unmounted() -> dict[str, Any]:
    subprocess.run(["umount", "/dev/mqueue"], check=True)
    result = posix.list_posix()
    return {"objects": listed(result), "notes": list(result.notes)}


def holders_by_name(complete: bool = True) -> tuple[dict[str, list[str]], str | None]:
    """Holders by kind:name; complete: this pid namespace holds every process (it does)."""
    listing = posix.list_posix()
    found = holders.read_holders(
        [o.identity for o in listing.objects], pid_namespace_complete=complete
    )
    return {
        f"{o.kind.value}:{o.name}": sorted(found.by_identity.get(o.identity, ()))
        for o in listing.objects
    }, found.blind


@scenario
def holders_alive_and_killed() -> dict[str, Any]:
    """Each way of holding an object, by a real program; then the same after SIGKILL."""
    procs = {
        how: start(how, name)
        for how, name in [
            ("mapped", "map_only"),
            ("fd", "fd_only"),
            ("lock_sh", "locked"),
            ("ofd", "ofd_locked"),
            ("sem", "sem1"),
            ("mq_reader", "reader_q"),
            ("shared_memory", "psm_test"),
        ]
    }
    alive, blind = holders_by_name()
    _, blind_unstated = holders_by_name(complete=False)
    for p in procs.values():
        kill(p)
    dead, blind_after = holders_by_name()
    return {
        "pids": {how: p.pid for how, p in procs.items()},
        "alive": alive,
        "dead": dead,
        "blind": [blind, blind_after],
        "blind_unstated": blind_unstated,
    }


def janitor(*args: str, user: str | None = None, text: str | None = None) -> dict[str, Any]:
    """ipcjanitor ARGS under this run's policy file, or under the policy text given."""
    path = POLICY
    if text is not None:
        path = tempfile.mkdtemp() + "/policy.toml"
        Path(path).write_text(text)
    cmd = [sys.executable, "-m", "ipcjanitor", "--policy", path, *args]
    env = dict(os.environ)
    if BREAK:  # the janitor with a defect patched in (tests/adversary/broken.py)
        cmd[1:3] = ["-m", "tests.adversary.broken", BREAK]
        env["ADVERSARY_HOST_SHM_DEV"] = env["POSIX_TEST_HOST_SHM_DEV"]
    if user:  # a policy and a lock directory that user can read and use
        scratch = Path(tempfile.mkdtemp())
        scratch.chmod(0o1777)
        policy = scratch / "policy.toml"
        policy.write_text(Path(POLICY).read_text())
        policy.chmod(0o644)
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
               sys.executable, "-m", "ipcjanitor", "--policy", str(policy), *args]  # fmt: skip
        env["IPCJANITOR_LOCK_DIR"] = str(scratch)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    out: dict[str, Any] = {"rc": proc.returncode, "stderr": proc.stderr}
    if "--json" in args and proc.stdout.startswith("{"):
        out["doc"] = json.loads(proc.stdout)
    else:
        out["stdout"] = proc.stdout
    return out


def by_name(run: dict[str, Any]) -> dict[str, list[str]]:
    if "doc" not in run:
        raise SystemExit(f"no JSON from the janitor: {run}")
    return {
        f"{o['kind']}:{o['name']}": [o["verdict"], o["reason"]]
        for o in run["doc"]["objects"]
        if "name" in o
    }


def remaining() -> list[str]:
    return sorted(os.listdir("/dev/shm")) + [f"mq:{q}" for q in sorted(os.listdir("/dev/mqueue"))]


@scenario
def clean_for_real() -> dict[str, Any]:
    """Real programs hold some objects, others are left by SIGKILLed ones; clean twice."""
    dead = [("shared_memory", "psm_dead"), ("sem", "sem_dead"), ("mq_data", "q_data"),
            ("mq", "q_dead"), ("mq_data", "free_data"), ("mapped", "map_dead")]  # fmt: skip
    for how, name in dead:
        kill(start(how, name))
    live = {
        name: start(how, name)
        for how, name in [("mapped", "map_live"), ("fd", "fd_live"), ("lock_sh", "lock_live"),
                          ("ofd", "ofd_live"), ("sem", "sem_live"), ("mq_reader", "q_reader")]
    }  # fmt: skip
    Path("/dev/shm/other").write_bytes(b"not ours")
    secret = Path("/run/secret")
    secret.write_bytes(b"root's")
    Path("/dev/shm/psm_link").symlink_to(secret)
    Path("/dev/shm/psm_hard").write_bytes(b"")
    os.link("/dev/shm/psm_hard", "/dev/shm/psm_hard2")
    scan = janitor("scan", "--json")
    first = janitor("clean", "--json")
    after_first = remaining()
    for p in live.values():
        kill(p)
    second = janitor("clean", "--json")
    table = janitor("scan")
    return {
        "pids": {name: p.pid for name, p in live.items()},
        "scan": by_name(scan),
        "first": by_name(first),
        "first_rc": first["rc"],
        "first_stderr": first["stderr"],
        "after_first": after_first,
        "second": by_name(second),
        "after_second": remaining(),
        "secret": secret.read_text(),
        "table": table["stdout"],
    }


@scenario
def hostile_names_and_mounts() -> dict[str, Any]:
    """A container's own /dev/shm mounted below ours (another st_dev), and names with a
    newline, a terminal escape and invalid UTF-8; a device node, a FIFO and a socket named
    like claimed objects."""
    Path("/dev/shm/container").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/dev/shm/container"], check=True)
    Path("/dev/shm/container/psm_inner").write_bytes(b"")
    for raw in [b"psm_new\nline", b"psm_\x1b[2J", b"psm_bad\xff"]:
        with open(os.path.join(b"/dev/shm", raw), "wb"):
            pass
    # no object, however named: a device node (/dev/null's numbers), a FIFO and a socket
    os.mknod("/dev/shm/psm_dev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo("/dev/shm/psm_fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("/dev/shm/psm_sock")
    scan = janitor("scan", "--json")
    table = janitor("scan")
    clean = janitor("clean", "--json")
    return {
        "scan": by_name(scan),
        "notes": scan["doc"]["summary"]["notes"],
        "table": table["stdout"],
        "clean": by_name(clean),
        "inner": os.listdir("/dev/shm/container"),
        "left": sorted(os.listdir("/dev/shm")),
        "dev_still_a_device": stat.S_ISCHR(os.lstat("/dev/shm/psm_dev").st_mode),
    }


@scenario
def unprivileged_and_hidepid() -> dict[str, Any]:
    """The janitor as nobody: other users' maps and fds cannot be read (EACCES), then /proc
    remounted hidepid=invisible: nothing may be proven unused either way."""
    live = start("mapped", "psm_root")
    kill(start("fd", "psm_dead"))
    for name in ("psm_root", "psm_dead"):
        os.chmod(f"/dev/shm/{name}", 0o666)  # readable by nobody: only the holders are hidden
    eacces = janitor("clean", "--json", user="65534")
    subprocess.run(["mount", "-o", "remount,hidepid=invisible", "/proc"], check=True)
    hidden = janitor("clean", "--json", user="65534")
    as_root = janitor("scan", "--json")  # root with CAP_SYS_PTRACE sees through hidepid
    kill(live)
    return {
        "pid": live.pid,
        "eacces": by_name(eacces),
        "hidden": by_name(hidden),
        "as_root": by_name(as_root),
        "left": remaining(),
    }


RACER = """
import os, sys
n = 0
while not os.path.exists("/dev/shm/keep/stop"):
    try:  # A aside, B in its place, then back: the name psm_swap names A or B by turns
        os.rename("/dev/shm/psm_swap", "/dev/shm/keep/a")
        os.rename("/dev/shm/keep/b", "/dev/shm/psm_swap")
        os.rename("/dev/shm/psm_swap", "/dev/shm/keep/b")
        os.rename("/dev/shm/keep/a", "/dev/shm/psm_swap")
        n += 1
    except FileNotFoundError:  # A was removed: keep swapping B in and out
        try:
            os.rename("/dev/shm/keep/b", "/dev/shm/psm_swap")
            os.rename("/dev/shm/psm_swap", "/dev/shm/keep/b")
        except FileNotFoundError:
            pass
        n += 1
print(n, flush=True)
"""


@scenario
def swap_race() -> dict[str, Any]:
    """A process swaps a claimed name between the stale file A and another inode B as fast
    as it can while clean runs again and again: B (another user's file, which the policy
    never claims) is never removed, whatever the name holds when."""
    Path("/dev/shm/keep").mkdir()
    Path("/dev/shm/psm_swap").write_bytes(b"A")
    Path("/dev/shm/keep/b").write_bytes(b"B")
    os.chown("/dev/shm/keep/b", 65534, 65534)  # another user's: never claimed, never judged
    b_ino = os.stat("/dev/shm/keep/b").st_ino
    racer = subprocess.Popen([sys.executable, "-c", RACER], stdout=subprocess.PIPE, text=True)
    verdicts = []
    for _ in range(40):
        run = janitor("clean", "--json")
        verdicts += [o["verdict"] for o in run["doc"]["objects"] if o.get("name") == "psm_swap"]
    Path("/dev/shm/keep/stop").write_bytes(b"")
    swaps = int(racer.communicate(timeout=30)[0])
    survivors = [
        p for p in ("/dev/shm/psm_swap", "/dev/shm/keep/b", "/dev/shm/keep/a")
        if os.path.exists(p) and os.stat(p).st_ino == b_ino
    ]  # fmt: skip
    return {
        "swaps": swaps,
        "verdicts": verdicts,
        "b_alive": len(survivors) == 1,
        "b_content": Path(survivors[0]).read_bytes().decode() if survivors else None,
        "asides": [n for n in os.listdir("/dev/shm") if n.startswith(".ipcjanitor-")],
    }


CHURN_WORKER = r"""
import fcntl, mmap, os, random, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
held = []
for i in range(n):  # make and hold: a mapping alone, an fd alone, or LOCK_SH on an fd
    name = f"/dev/shm/psm_churn_{os.getpid()}_{i}"
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, 4096)
    how = mode if mode != "mixed" else random.choice(["map", "fd", "lock"])
    m = None
    if how == "map":
        m = mmap.mmap(fd, 4096)  # Python keeps a dup of the fd: close both, keep the map
        m[:4] = b"live"
        os.close(fd)
        fd = -1
    elif how == "lock":
        fcntl.flock(fd, fcntl.LOCK_SH)
    held.append((name, os.stat(name).st_ino, fd, m))
print("ready", flush=True)
time.sleep(random.uniform(0.05, 0.6))
lost = []
for name, ino, fd, m in held:  # still ours? (a name removed or replaced while held: lost)
    try:
        if os.stat(name).st_ino != ino:
            lost.append(f"{name} replaced")
    except FileNotFoundError:
        lost.append(f"{name} removed while held")
    if m is not None and m[:4] != b"live":
        lost.append(f"{name} content changed")
print("LOST " + "; ".join(lost) if lost else "ok", flush=True)
if random.random() < 0.5:  # die without cleaning up: what the janitor is for
    os._exit(0)
for name, ino, fd, m in held:  # the tidy way: unmap, close, unlink our own names
    if m is not None:
        m.close()
    if fd >= 0:
        os.close(fd)
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass  # released before this unlink: the janitor may have taken it, rightly
"""


DIR_RACER = """
import os
n = 0
while not os.path.exists("/dev/shm/keep/stop"):
    # the directory user/ aside; in its place, by turns, a symlink to root's /run/secret
    # and another directory (nobody's, holding a file of the same name), then back
    os.rename("/dev/shm/user", "/dev/shm/keep/real")
    os.symlink("/run/secret", "/dev/shm/user")
    os.unlink("/dev/shm/user")
    os.rename("/dev/shm/keep/decoy", "/dev/shm/user")
    os.rename("/dev/shm/user", "/dev/shm/keep/decoy")
    os.rename("/dev/shm/keep/real", "/dev/shm/user")
    n += 1
print(n, flush=True)
"""


@scenario
def dir_swap_race() -> dict[str, Any]:
    """A process swaps the directory user/ (stale claimed files in it) for a symlink to a
    root directory outside /dev/shm, and for another directory, as fast as it can, while
    clean runs again and again, its stale files made again each time: nothing outside
    user/ is ever removed, and every stale file of user/ is removed in the end."""
    Path("/dev/shm/keep/decoy").mkdir(parents=True)
    Path("/dev/shm/keep/decoy/psm_0").write_bytes(b"decoy")
    os.chown("/dev/shm/keep/decoy/psm_0", 65534, 65534)
    Path("/run/secret").mkdir()
    Path("/run/secret/psm_0").write_bytes(b"root's")
    Path("/dev/shm/user").mkdir()
    real = os.open("/dev/shm/user", os.O_RDONLY | os.O_DIRECTORY)  # follows it wherever it goes
    racer = subprocess.Popen([sys.executable, "-c", DIR_RACER], stdout=subprocess.PIPE, text=True)
    verdicts = []
    for _ in range(30):
        for i in range(20):
            os.close(os.open(f"psm_{i}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=real))
        run = janitor("clean", "--json")
        verdicts += [o["verdict"] for o in run["doc"]["objects"]]
    Path("/dev/shm/keep/stop").write_bytes(b"")
    swaps = int(racer.communicate(timeout=30)[0])
    final = janitor("clean", "--json")  # the race over: what is left of user/ goes now
    return {
        "swaps": swaps,
        "verdicts": sorted(set(verdicts)),
        "final": by_name(final),
        "real_left": sorted(os.listdir(real)),
        "secret": Path("/run/secret/psm_0").read_bytes().decode(),
        "decoy": Path("/dev/shm/keep/decoy/psm_0").read_bytes().decode(),
        "asides": [n for n in os.listdir("/dev/shm") if n.startswith(".ipcjanitor-")],
    }


@scenario
def churn() -> dict[str, Any]:
    """Processes that keep creating, mapping, locking, unmapping and dying (some SIGKILLed
    while they hold) while clean runs again and again for CHURN_SECONDS (default 30): every
    worker checks, before it lets go, that each name it holds is still its inode; at the end
    one more clean leaves none of the dead."""
    import random
    import time

    seconds = float(os.environ.get("CHURN_SECONDS", "30"))
    rng = random.Random(18)
    workers: list[subprocess.Popen[str]] = []
    reports: list[str] = []
    started = killed = runs = removed = 0

    def spawn() -> None:
        nonlocal started
        mode = rng.choice(["map", "fd", "lock", "mixed"])
        w = subprocess.Popen([sys.executable, "-c", CHURN_WORKER, mode, str(rng.randint(1, 4))],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        started += 1
        workers.append(w)

    def reap(w: subprocess.Popen[str]) -> None:
        out, _ = w.communicate(timeout=30)
        reports.extend(line for line in out.splitlines() if line not in ("ready", ""))

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        while len(workers) < 8:
            spawn()
        run = janitor("clean", "--json")
        runs += 1
        if run["rc"] != 0 or "doc" not in run:
            raise SystemExit(f"clean failed: {run}")
        removed += sum(1 for o in run["doc"]["objects"] if o["verdict"] == "removed")
        for w in list(workers):
            if w.poll() is not None:
                workers.remove(w)
                reap(w)
            elif rng.random() < 0.15:  # killed while it holds: its objects are the dead
                w.kill()
                killed += 1
                workers.remove(w)
                w.wait()
    for w in workers:
        reap(w)
    final = janitor("clean", "--json")
    return {
        "started": started,
        "killed": killed,
        "runs": runs,
        "removed": removed,
        "lost": [r for r in reports if r != "ok"],
        "ok": sum(1 for r in reports if r == "ok"),
        "final_rc": final["rc"],
        "left": remaining(),
    }


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """What proc prints, line by line, as it prints it (read by a thread: never blocks us)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout

    def read() -> None:
        for line in out:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], seconds: float = 5.0) -> str | None:
    try:
        return lines.get(timeout=seconds)
    except queue.Empty:
        return None


def sem_file(name: str) -> int | None:
    """The inode of /dev/shm/sem.NAME, or None when there is none."""
    try:
        return os.stat(f"/dev/shm/sem.{name}").st_ino
    except FileNotFoundError:
        return None


@scenario
def semaphore_of_two() -> dict[str, Any]:
    """A glibc named semaphore two processes share (a waiter in sem_wait, a poster): each
    SIGKILLed in turn while the other lives and uses it, then both dead."""
    waiter = start("sem_waiter", "pair")
    woke = lines_of(waiter)
    poster = start("sem_poster", "pair")
    inode = sem_file("pair")
    out: dict[str, Any] = {"first_post": next_line(woke), "pids": {"waiter": waiter.pid}}
    kill(poster)  # the poster dies; the waiter lives, blocked in sem_wait
    out["poster_dead"] = by_name(janitor("clean", "--json"))
    out["inode_kept"] = sem_file("pair") == inode
    poster = start("sem_poster", "pair")  # a new poster reaches the same waiter: still shared
    out["pids"]["poster"] = poster.pid
    out["second_post"] = next_line(woke)
    kill(waiter)  # now the waiter dies; the new poster lives
    out["waiter_dead"] = by_name(janitor("clean", "--json"))
    out["inode_kept_2"] = sem_file("pair") == inode
    kill(poster)
    out["both_dead"] = by_name(janitor("clean", "--json"))
    out["left"] = remaining()
    return out


def maps_of(pid: int) -> list[str]:
    """The /dev/shm files pid maps."""
    with open(f"/proc/{pid}/maps") as f:
        return sorted({ln.split()[-1] for ln in f if "/dev/shm/" in ln})


@scenario
def dpdk_lock_sh() -> dict[str, Any]:
    """DPDK-style memory files (rtemap_0, rtemap_1): a primary and a secondary process each
    hold LOCK_SH on both for their whole life, with nothing mapped; the primary SIGKILLed,
    the secondary alive; then both dead."""
    primary = start("dpdk", "rtemap")
    secondary = start("dpdk", "rtemap")
    out: dict[str, Any] = {
        "pids": [primary.pid, secondary.pid],
        "maps": maps_of(primary.pid) + maps_of(secondary.pid),
        "both_alive": by_name(janitor("clean", "--json")),
    }
    kill(primary)
    out["secondary_alive"] = by_name(janitor("clean", "--json"))
    out["left_alive"] = remaining()
    kill(secondary)
    out["both_dead"] = by_name(janitor("clean", "--json"))
    out["left"] = remaining()
    return out


JACK_OWNER = """
[owners.jack-{uid}]
names = ["jack_sem.*"]
kinds = ["posix-sem"]
uid = {uid}
"""


@scenario
def jack_two_users() -> dict[str, Any]:
    """JACK2's semaphores (jack_sem.UID_SERVER_CLIENT) of two users, 1000 and 2000, each with
    a live client and a SIGKILLed one: a policy claiming uid 1000's, then one claiming 2000's,
    then one with both owners after every client is dead."""
    live, uids = {}, {}
    for uid in (1000, 2000):
        kill(start("sem", f"jack_sem.{uid}_default_dead", uid))
        live[uid] = start("sem", f"jack_sem.{uid}_default_live", uid)
    for name in os.listdir("/dev/shm"):
        uids[name] = os.stat(f"/dev/shm/{name}").st_uid
    head = 'min_age = "0s"\npid_namespace_complete = true\n'
    runs = {}
    for uid in (1000, 2000):
        run = janitor("clean", "--json", text=head + JACK_OWNER.format(uid=uid))
        runs[uid] = {"verdicts": by_name(run), "rc": run["rc"], "left": remaining()}
    for proc in live.values():
        kill(proc)
    both = head + JACK_OWNER.format(uid=1000) + JACK_OWNER.format(uid=2000)
    check = janitor("policy", "check", text=both)
    last = janitor("clean", "--json", text=both)
    return {
        "pids": {uid: p.pid for uid, p in live.items()},
        "uids": uids,
        "runs": runs,
        "check": check,
        "both": {k: [v, o["owner"]] for k, v, o in _with_owner(last)},
        "left": remaining(),
    }


def _with_owner(run: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(f"{o['kind']}:{o['name']}", o["verdict"], o) for o in run["doc"]["objects"]]


@scenario
def learn_queue_semaphore_and_locks() -> dict[str, Any]:
    """learn on a unit (a cgroup named learned.service) whose processes hold a queue open,
    map a named semaphore, and hold LOCK_SH on DPDK-style files with nothing mapped; then
    the unit SIGKILLed and its hook run under the learned policy."""
    unit = Path(os.environ["IJ_CGROUP"]) / "learned.service"
    unit.mkdir()
    procs = [start("mq", "jobs"), start("sem", "turn"), start("dpdk", "rtemap")]
    try:
        for p in procs:
            (unit / "cgroup.procs").write_text(str(p.pid))
        learned = janitor("learn", "learned.service", "--for", "1s")
        for p in procs:
            kill(p)
        text = "pid_namespace_complete = true\n" + learned["stdout"]
        hook = janitor("hook", "--unit", "learned.service", "--json", text=text)
        return {
            "rc": learned["rc"],
            "stdout": learned["stdout"],
            "stderr": learned["stderr"],
            "hook": by_name(hook),
            "left": remaining(),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                kill(p)
        unit.rmdir()


MQ_USER = """
import ctypes, os, resource, struct, sys, time
resource.setrlimit(resource.RLIMIT_MSGQUEUE, (90000, 90000))
os.setgid(65534)
os.setuid(65534)
libc = ctypes.CDLL(None, use_errno=True)
attr = struct.pack("4q4q", 0, 10, 8192, 0, 0, 0, 0, 0)  # flags, maxmsg, msgsize, curmsgs
q = libc.mq_open(b"/q_nobody", os.O_CREAT | os.O_RDWR, 0o600, attr)
assert q >= 0, os.strerror(ctypes.get_errno())
print("ready", flush=True)
time.sleep(600)
"""


def _doctor() -> dict[str, Any]:
    json_run = janitor("doctor", "--json")
    text = janitor("doctor")
    rows = {f"{r['kind']} {r['measure']}": r for r in json_run["doc"]["limits"]}
    return {"rc": json_run["rc"], "rows": rows, "text": text["stdout"], "text_rc": text["rc"],
            "notes": json_run["doc"]["notes"]}  # fmt: skip


@scenario
def doctor_shm_and_queues() -> dict[str, Any]:
    """A 1 MiB /dev/shm 95 % filled by a file a SIGKILLed process left; queues against a
    queues_max of 4; nobody's queue charging 92 % of its 90000-byte RLIMIT_MSGQUEUE."""
    subprocess.run(["mount", "-o", "remount,size=1m", "/dev/shm"], check=True)
    Path("/proc/sys/fs/mqueue/queues_max").write_text("4\n")
    writer = "import os; f = open('/dev/shm/psm_fill', 'wb'); f.write(b'x' * 972800); f.flush()"
    subprocess.run([sys.executable, "-c", writer], check=True)
    for name in ("q_a", "q_b"):
        kill(start("mq", name))
    user = subprocess.Popen([sys.executable, "-c", MQ_USER], stdout=subprocess.PIPE, text=True)
    assert user.stdout is not None and user.stdout.readline().strip() == "ready"
    full = _doctor()
    janitor("clean")
    cleaned = _doctor()
    user.kill()
    user.wait()
    janitor("clean")
    return {"full": full, "cleaned": cleaned, "after": _doctor(), "left": remaining()}


@scenario
def metrics_queue_rows() -> dict[str, Any]:
    """doctor's POSIX queue rows as the timer's metrics: three queues against a queues_max of
    4 (two of them a SIGKILLed program's, claimed by no owner), nobody's live queue charging
    82880 of its 90000-byte RLIMIT_MSGQUEUE; `clean --metrics` beside `doctor --json`."""
    Path("/proc/sys/fs/mqueue/queues_max").write_text("4\n")
    for name in ("q_a", "q_b"):
        kill(start("mq", name))
    user = subprocess.Popen([sys.executable, "-c", MQ_USER], stdout=subprocess.PIPE, text=True)
    assert user.stdout is not None and user.stdout.readline().strip() == "ready"
    try:
        out = Path(tempfile.mkdtemp()) / "ipcjanitor.prom"
        clean = janitor("-q", "clean", "--metrics", str(out))
        return {"clean_rc": clean["rc"], "stderr": clean["stderr"], "metrics": out.read_text(),
                "doctor": _doctor()["rows"]}  # fmt: skip
    finally:
        user.kill()
        user.wait()


def main() -> None:
    global POLICY, BREAK  # noqa: PLW0603  (the policy file of this run, a break to apply)
    POLICY = sys.argv[2]
    BREAK = sys.argv[3] if len(sys.argv) > 3 else ""
    private_mounts()
    print(json.dumps(SCENARIOS[sys.argv[1]]()))


if __name__ == "__main__":
    main()
