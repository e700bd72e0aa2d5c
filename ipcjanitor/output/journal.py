"""Structured records of removals: native journal protocol under systemd, text otherwise."""

from __future__ import annotations

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
# `systemd-id128 new`: one id for "ipcjanitor removed an object" records
MESSAGE_ID_REMOVED = "3b1f8f6a4d2c4e7f9a0b5c6d7e8f9012"
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


class Journal:
    """Where a run's records go: the journal under systemd, stderr lines otherwise."""

    @classmethod
    def for_hook(cls, unit: str) -> Journal:
        """The hook's records: to the journal whenever its socket is there. Never decided by
        the environment, which is the hooked service's (INVOCATION_ID= in an EnvironmentFile=
        sent every record to stderr, and none had IPCJANITOR_UNIT=)."""
        return cls(unit=unit, to_journal=journal_socket_exists())

    def __init__(self, unit: str | None = None, to_journal: bool | None = None) -> None:
        self.unit = unit
        self.to_journal = under_systemd() if to_journal is None else to_journal
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
                if self._sock is None:
                    import socket  # noqa: PLC0415  (2.6 ms that runs outside systemd never need)

                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(encode(record), JOURNAL_SOCKET)
                return
            except OSError:
                pass  # fall through to stderr: a record is never lost silently
        self._lines.append(f"ipcjanitor: {message}\n")
        self.flush()

    def decision(self, d: Decision) -> None:
        """One record per removal (or failed/changed removal) with the contract's fields."""
        o = d.obj
        prio = "err" if d.verdict is Verdict.FAILED else "notice"
        # names from plain dicts: Enum's .value is a Python-level property (a record per object)
        text = (
            f"{_VERDICT_NAMES[d.verdict]} {_KIND_NAMES[o.kind]} {o.id} (key 0x{o.key:08x}) "
            f"of {d.owner}: {d.reason}"
        )
        if not self.to_journal:
            self._lines.append(f"ipcjanitor: {text}\n")
            if len(self._lines) >= LINES_PER_WRITE:
                self.flush()
            return
        fields: list[tuple[str, object]] = [
            ("MESSAGE_ID", MESSAGE_ID_REMOVED),
            ("IPCJANITOR_KIND", o.kind.value),
            ("IPCJANITOR_KEY", f"0x{o.key:08x}"),
            ("IPCJANITOR_ID", o.id),
            ("IPCJANITOR_OWNER", d.owner or ""),
            ("IPCJANITOR_VERDICT", d.verdict.value),
            ("IPCJANITOR_REASON", d.reason),
            ("IPCJANITOR_PIDS", " ".join(str(r.pid) for r in o.pids if r.pid)),
            ("IPCJANITOR_UID", o.uid),
        ]
        if self.unit:
            fields.append(("IPCJANITOR_UNIT", self.unit))
        self.send(text, prio, fields)

    def posix_decision(self, d: PosixDecision) -> None:
        """One record per POSIX removal attempt: IPCJANITOR_NAME and _INODE for KEY and ID."""
        o = d.obj
        prio = "err" if d.verdict is Verdict.FAILED else "notice"
        name = safe_name(o.name)
        reason = safe_name(d.reason)
        text = f"{d.verdict.value} {o.kind.value} {name} (inode {o.ino}) of {d.owner}: {reason}"
        fields: list[tuple[str, object]] = [
            ("MESSAGE_ID", MESSAGE_ID_REMOVED),
            ("IPCJANITOR_KIND", o.kind.value),
            ("IPCJANITOR_NAME", name),
            ("IPCJANITOR_INODE", o.ino),
            ("IPCJANITOR_DEV", f"{os.major(o.dev)}:{os.minor(o.dev)}"),
            ("IPCJANITOR_OWNER", d.owner or ""),
            ("IPCJANITOR_VERDICT", d.verdict.value),
            ("IPCJANITOR_REASON", reason),
            ("IPCJANITOR_UID", o.uid),
        ]
        if self.unit:
            fields.append(("IPCJANITOR_UNIT", self.unit))
        self.send(text, prio, fields)

    def flush(self) -> None:
        if self._lines:
            sys.stderr.write("".join(self._lines))
            sys.stderr.flush()
            self._lines.clear()

    def close(self) -> None:
        self.flush()
        if self._sock is not None:
            self._sock.close()
