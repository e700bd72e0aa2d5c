"""Structured records of removals: native journal protocol under systemd, text otherwise."""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..escape import safe_name
from ..model import Decision, IpcKind, PosixDecision, Verdict

if TYPE_CHECKING:
    import socket

_VERDICT_NAMES = {v: v.value for v in Verdict}
_KIND_NAMES = {k: k.value for k in IpcKind}

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# One MESSAGE_ID per kind of event (`systemd-id128 new`), each explained by the catalog
# (packaging/ipcjanitor.catalog: `journalctl -x` shows it).
MESSAGE_ID_REMOVED = "3b1f8f6a4d2c4e7f9a0b5c6d7e8f9012"
MESSAGE_ID_FAILED = "d595ca3d582a4d2788e6eabb74f4d9b8"
MESSAGE_ID_CHANGED = "623a2ffecb9e46d39f530eb6c604fceb"
MESSAGE_ID_DOUBT = "d27f797602a34ee39fc6cff3256c2b4c"  # kept: a doubt stopped the removal
MESSAGE_ID_POLICY_ERROR = "5f921bd1851b4b24b07eb9ff4aad9847"
MESSAGE_ID_GAVE_UP = "0f33c11b4398422eabe5928e2f76cb55"  # the run lock stayed busy
MESSAGE_ID_HANDOFF_GAP = "2d366bcd902541ecb441f943fc3386db"
MESSAGE_IDS = {
    Verdict.REMOVED: MESSAGE_ID_REMOVED,
    Verdict.FAILED: MESSAGE_ID_FAILED,
    Verdict.CHANGED: MESSAGE_ID_CHANGED,
    Verdict.UNKNOWN: MESSAGE_ID_DOUBT,
}
# The verdicts a clean journals: what it removed or failed to, what changed under it, and
# what it kept because of a doubt (`unknown`): one record each.
RECORDED = frozenset(MESSAGE_IDS)
_PRIORITY_OF = {Verdict.FAILED: "err", Verdict.UNKNOWN: "warning"}  # else notice
# Text records (outside systemd) are written this many lines at a time: one write(2) each,
# not one per removal (64k of them in a big sweep), and the first ones still come at once.
LINES_PER_WRITE = 256
PRIORITY = {"err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}


def encode(fields: Sequence[tuple[str, object]]) -> bytes:
    """The journal's native datagram: KEY=VALUE lines, values with newlines length-prefixed."""
    out = bytearray()
    for key, value in fields:
        k, v = key.encode("ascii"), str(value).encode()
        if b"\n" in v:
            out += k + b"\n" + len(v).to_bytes(8, "little") + v + b"\n"
        else:
            out += k + b"=" + v + b"\n"
    return bytes(out)


def under_systemd() -> bool:
    """True when systemd started us (JOURNAL_STREAM or INVOCATION_ID) and its socket is there."""
    started = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    return started and os.path.exists(JOURNAL_SOCKET)


def journal_socket_exists() -> bool:
    try:
        return stat.S_ISSOCK(os.stat(JOURNAL_SOCKET).st_mode)
    except OSError:
        return False


def stream_is_journal(fd: int) -> bool:
    """Whether fd is connected to the journal: JOURNAL_STREAM names its device and inode
    (systemd.exec(5)); an inherited or forged variable names another file and reads False."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


class Journal:
    """Where a run's records go: the journal (when systemd started us, for the hook, or for
    root's manual clean), else text lines on stderr when nothing else shows them (echo)."""

    @classmethod
    def for_hook(cls, unit: str) -> Journal:
        """The hook's records: to the journal whenever its socket is there. Never decided by
        the environment, which is the hooked service's (INVOCATION_ID= in an EnvironmentFile=
        sent every record to stderr, and none had IPCJANITOR_UNIT=)."""
        return cls(unit=unit, to_journal=journal_socket_exists())

    @classmethod
    def for_clean(cls, echo: bool) -> Journal:
        """A clean's records: to the journal under systemd and for root (an audit trail of the
        removals that matter most); echo: also as text on stderr if not journaled (-q: the
        table, which tells each removal once, is not printed)."""
        journaled = under_systemd() or (os.geteuid() == 0 and journal_socket_exists())
        return cls(to_journal=journaled, echo=echo)

    def __init__(
        self, unit: str | None = None, to_journal: bool | None = None, echo: bool = True
    ) -> None:
        self.unit = unit
        self.to_journal = under_systemd() if to_journal is None else to_journal
        self.echo = echo
        self.socket_path = JOURNAL_SOCKET
        self._sock: socket.socket | None = None
        self._lines: list[str] = []

    def send(self, message: str, priority: str, fields: Sequence[tuple[str, object]] = ()) -> None:
        if self.to_journal:
            record = [
                ("MESSAGE", message),
                ("PRIORITY", PRIORITY[priority]),
                ("SYSLOG_IDENTIFIER", "ipcjanitor"),
                # the hook's records belong to the unit it ran for: `journalctl -u UNIT` finds
                # them even when journald reads the sender's cgroup too late (the hook ends
                # right after sending: seen under load), as it does systemd's own (uid 0)
                *([("OBJECT_SYSTEMD_UNIT", self.unit)] if self.unit else []),
                *fields,
            ]
            try:
                self._deliver(encode(record))
                return
            except OSError:
                pass  # fall through to stderr: a record is never lost silently
        self._lines.append(f"ipcjanitor: {message}\n")
        self.flush()

    def _deliver(self, datagram: bytes) -> None:
        """One datagram; one too large for the socket goes as a sealed memfd, the way
        sd_journal_send() does it (journald reads the fd passed with SCM_RIGHTS)."""
        if self._sock is None:
            import socket  # noqa: PLC0415  (2.6 ms that runs outside systemd never need)

            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.sendto(datagram, self.socket_path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._deliver_memfd(datagram)

    def _deliver_memfd(self, datagram: bytes) -> None:
        import fcntl  # noqa: PLC0415
        import socket  # noqa: PLC0415

        assert self._sock is not None
        fd = os.memfd_create("journal-ipcjanitor", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, datagram)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))]
            self._sock.sendmsg([], rights, 0, self.socket_path)
        finally:
            os.close(fd)

    def decision(self, d: Decision) -> None:
        """One record per removal, failed or changed removal, or object kept with a doubt,
        with the fields the column description names (report.COLUMNS)."""
        o = d.obj
        # names from plain dicts: Enum's .value is a Python-level property (a record per object)
        text = (
            f"{_VERDICT_NAMES[d.verdict]} {_KIND_NAMES[o.kind]} {o.id} (key 0x{o.key:08x}) "
            f"of {d.owner}: {d.reason}"
        )
        if not self.to_journal:
            if self.echo:
                self._lines.append(f"ipcjanitor: {text}\n")
                if len(self._lines) >= LINES_PER_WRITE:
                    self.flush()
            return
        from .columns import fields  # noqa: PLC0415
        from .report import COLUMNS  # noqa: PLC0415

        record = [("MESSAGE_ID", MESSAGE_IDS[d.verdict]), *fields(d, COLUMNS)]
        if self.unit:
            record.append(("IPCJANITOR_UNIT", self.unit))
        self.send(text, _PRIORITY_OF.get(d.verdict, "notice"), record)

    def posix_decision(self, d: PosixDecision) -> None:
        """One record per POSIX event: IPCJANITOR_NAME and _INODE for KEY and ID."""
        o = d.obj
        name = safe_name(o.name)
        reason = safe_name(d.reason)
        text = f"{d.verdict.value} {o.kind.value} {name} (inode {o.ino}) of {d.owner}: {reason}"
        if not self.to_journal:  # as for SysV: lines written in batches, not one write each
            if self.echo:
                self._lines.append(f"ipcjanitor: {text}\n")
                if len(self._lines) >= LINES_PER_WRITE:
                    self.flush()
            return
        from .columns import fields  # noqa: PLC0415
        from .report import POSIX_COLUMNS  # noqa: PLC0415

        record = [("MESSAGE_ID", MESSAGE_IDS[d.verdict]), *fields(d, POSIX_COLUMNS)]
        if self.unit:
            record.append(("IPCJANITOR_UNIT", self.unit))
        self.send(text, _PRIORITY_OF.get(d.verdict, "notice"), record)

    def policy_error(self, message: str, echo: bool = False) -> bool:
        """A policy error, at priority err; True if it reached the journal (then a stderr
        that is the journal too need not say it again: one record per fact). echo: a line
        on stderr when there is no journal (the hook's: it names the unit)."""
        if not self.to_journal:
            if echo:
                self.send(message, "err")
            return False
        before = len(self._lines)
        self.send(message, "err", [("MESSAGE_ID", MESSAGE_ID_POLICY_ERROR)])
        return len(self._lines) == before

    def flush(self) -> None:
        if self._lines:
            sys.stderr.write("".join(self._lines))
            sys.stderr.flush()
            self._lines.clear()

    def close(self) -> None:
        self.flush()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
