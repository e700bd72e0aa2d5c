"""Boot a real systemd as PID 1 of private namespaces, contained so the host is untouched.

1. The launcher moves itself into a new child cgroup in every mounted hierarchy (copying
   cpuset.cpus/mems first), then `unshare --cgroup --pid --fork --mount --mount-proc --ipc --uts`.
2. Inside: tmpfs over /run, /tmp, /var/tmp, /var/log, /home, /root, /srv, /dev/shm; overlays
   over /etc and /usr; the project tree bound back at its own path; cgroup hierarchies remounted
   rooted at the child. /var/lib gets an overlay too: install-hook keeps its list of drop-ins
   in /var/lib/ipcjanitor/.
3. exec /lib/systemd/systemd --system --unit=basic.target with container=ipcjanitor-test.

Enter with `nsenter -t PID -a`; stop() powers it off, waits, and removes the child cgroups.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# each gets its own tmpfs (with this mode): what tests write there never reaches the host
COVERED = {"/run": 0o755, "/tmp": 0o1777, "/var/tmp": 0o1777, "/var/log": 0o755,
           "/home": 0o755, "/root": 0o700, "/srv": 0o755, "/dev/shm": 0o1777}  # fmt: skip


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, options) of every cgroup hierarchy mounted on this host."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _src, opts = right.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((left.split()[4], fstype, opts))
    return mounts


def _own_cgroup(fstype: str, opts: str) -> str:
    wanted = {o for o in opts.split(",") if o not in ("rw", "ro")}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if fstype == "cgroup2" and hid == "0":
            return path
        if fstype == "cgroup" and controllers and set(controllers.split(",")) <= wanted:
            return path
    return "/"


def available() -> str | None:
    """Why a contained systemd cannot boot here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/lib/systemd/systemd").exists():
        return "needs systemd (apt-get install systemd)"
    if not _cgroup_mounts():
        return "needs mounted cgroup hierarchies"
    return None


class Container:
    def __init__(self) -> None:
        self.name = f"ijtest-{secrets.token_hex(4)}"
        self.scratch = Path(tempfile.mkdtemp(prefix="ipcjanitor-systemd-"))
        self.cgroups: list[Path] = []
        self.launcher: subprocess.Popen[bytes] | None = None
        self.pid = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        remount = []
        procs_files = []
        for mnt, fstype, opts in _cgroup_mounts():
            child = Path(mnt + _own_cgroup(fstype, opts).rstrip("/")) / self.name
            child.mkdir()
            self.cgroups.append(child)
            if (child.parent / "cpuset.cpus").exists():
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (child / f).write_text((child.parent / f).read_text())
            procs_files.append(str(child / "cgroup.procs"))
            keep = ",".join(o for o in opts.split(",") if o not in ("rw", "ro")) or "none"
            if mnt == "/sys/fs/cgroup":
                remount.append(
                    f"mount -t {fstype} {'-o ' + keep if fstype == 'cgroup' else ''} cgroup {mnt}"
                )
            else:
                remount.append(
                    f"mkdir -p {mnt} && mount -t {fstype} "
                    f"{'-o ' + keep if fstype == 'cgroup' else ''} cgroup {mnt}"
                )
        cgroup_root_is_tmpfs = all(m != "/sys/fs/cgroup" for m, _, _ in _cgroup_mounts())
        for d in ("etc-up", "etc-work", "usr-up", "usr-work", "varlib-up", "varlib-work"):
            (self.scratch / d).mkdir()
        s = shlex.quote(str(self.scratch))
        root = shlex.quote(str(ROOT))
        inner = "\n".join(
            [
                "set -e",
                f"mount -t overlay overlay -o lowerdir=/etc,upperdir={s}/etc-up,workdir={s}/etc-work /etc",
                f"mount -t overlay overlay -o lowerdir=/usr,upperdir={s}/usr-up,workdir={s}/usr-work /usr",
                f"mount -t overlay overlay -o lowerdir=/var/lib,upperdir={s}/varlib-up,workdir={s}/varlib-work /var/lib",
                "mount -t tmpfs -o mode=0755 tmpfs /run",
                "mkdir /run/.ijsrc",
                f"mount --bind {root} /run/.ijsrc",
                *[
                    f"mount -t tmpfs -o mode={m:04o} tmpfs {d}"
                    for d, m in COVERED.items()
                    if d != "/run"
                ],
                f"mkdir -p {root}",
                f"mount --move /run/.ijsrc {root}",
                "rmdir /run/.ijsrc",
                *(["mount -t tmpfs tmpfs /sys/fs/cgroup"] if cgroup_root_is_tmpfs else []),
                *remount,
                f"hostname {self.name}",
                "exec env -i container=ipcjanitor-test PATH=/usr/sbin:/usr/bin:/sbin:/bin "
                "/lib/systemd/systemd --system --unit=basic.target --log-target=null",
            ]
        )
        outer = (
            "".join(f"echo $$ > {shlex.quote(p)}; " for p in procs_files)
            + "exec unshare --cgroup --pid --fork --mount --mount-proc --ipc --uts "
            + f"sh -c {shlex.quote(inner)}"
        )
        with open(self.scratch / "boot.log", "wb") as log:
            self.launcher = subprocess.Popen(
                ["sh", "-c", outer], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )  # fmt: skip
        end = time.monotonic() + timeout
        while not self.pid:
            self._find_pid1()
            if self.launcher.poll() is not None:
                raise RuntimeError(
                    f"systemd container died: {(self.scratch / 'boot.log').read_text()}"
                )
            if time.monotonic() > end:
                raise TimeoutError("systemd did not start")
            time.sleep(0.05)
        while True:
            state = self.run("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > end:
                raise TimeoutError(f"systemd did not finish booting: {state}")
            time.sleep(0.1)

    def _find_pid1(self) -> None:
        assert self.launcher is not None
        children = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children")
        try:
            kids = children.read_text().split()
        except OSError:
            return
        for kid in kids:
            try:
                exe = os.readlink(f"/proc/{kid}/exe")
            except OSError:
                continue
            if exe.endswith("/systemd"):
                self.pid = int(kid)

    def stop(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            if self.pid:
                self.run("systemctl poweroff --no-block", check=False)
            try:
                self.launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for pid in (self.pid, self.launcher.pid):  # only what we started
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                self.launcher.wait(timeout=30)
        for cg in reversed(self.cgroups):
            self._rmdir_tree(cg)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _rmdir_tree(self, cg: Path) -> None:
        if not cg.exists():
            return
        for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                sub.rmdir()
        for _ in range(50):
            try:
                cg.rmdir()
                return
            except OSError:
                time.sleep(0.1)

    # -- use ---------------------------------------------------------------------------------
    def run(
        self, command: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside every namespace of the container."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", "sh", "-c", command],
            capture_output=True, text=True, input=input, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in container: {command!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.run(f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode:o} {path}", input=text)

    def wait_until(self, command: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while self.run(command, check=False).returncode != 0:
            if time.monotonic() > end:
                raise TimeoutError(f"in container: {command!r} never succeeded")
            time.sleep(0.1)
