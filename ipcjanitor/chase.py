"""Open a policy path the way systemd's chase() does with CHASE_SAFE, and read it from that fd.

Imports only os, stat and errno: the hook's fast path uses it.

The path is walked from / one component at a time: each is opened with O_PATH|O_NOFOLLOW
relative to the directory before it and fstat()ed, and a symlink is read through its own fd
and followed by hand (at most MAX_HOPS in all). With ``strict`` (a root run) every directory,
every symlink and the file must be root's, so no other user can redirect the walk, and no
directory may be writable by group or others unless it is sticky and is not the one a file is
read from or listed. A file must be a regular file: a FIFO or a device is refused before it
is opened for reading. It is then opened relative to its checked directory's fd, fstat()ed
again (the same inode, still acceptable) and read from that fd: what was checked is what is
read, whatever happens to the names meanwhile.

open_directory() walks the same way to a directory root will write a file in (--metrics), with
one relaxation, the narrowest that node_exporter's Debian layout needs (/var/lib/prometheus is
the prometheus user's, its node-exporter/ root's): a directory ABOVE the file's directory may
be another user's. The file's directory itself must be root's and writable by no one else (not
even sticky), and every symlink on the way root's. A directory's owner can rename, remove or
replace what it holds, but the only directory it can put there that passes these checks is
one root already put beside it: a directory moved between parents needs write permission on
itself, and no user can create a root-owned one or mount over another user's file system
(except FUSE through fusermount, refused below). The caller writes by that descriptor, never
by name.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_HOPS = 32  # symlinks followed in one walk, as systemd's CHASE_MAX
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
MOUNTINFO = "/proc/self/mountinfo"
_NOT_A_FILE = {
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class Refused(Exception):
    """A path not read as policy: the path as the user named it, and what is wrong."""

    def __init__(
        self, path: str, problem: str, missing: bool = False, code: int | None = None
    ) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.missing = missing  # no such file or directory, somewhere on the way
        self.code = code  # the errno of the system call's error, where one caused the refusal


Dir = tuple[int, str, os.stat_result]  # an O_PATH fd, the real path it was reached by, its stat


class _Chase:
    """One walk's state: the path as named, strictness, and every fd it opened (to close)."""

    def __init__(self, shown: str, strict: bool) -> None:
        self.shown = shown
        self.strict = strict
        self.fds: list[int] = []

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def refuse(self, problem: str, missing: bool = False, code: int | None = None) -> Refused:
        return Refused(self.shown, problem, missing, code)

    def open_at(self, name: str, dir_fd: int | None, real: str, flags: int = _PATH) -> int:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise self.refuse(f"no such file or directory: {real}", missing=True) from None
            raise self.refuse(f"cannot read {real}: {exc.strerror}", code=exc.errno) from None
        self.fds.append(fd)
        return fd

    def check_owner(self, st: os.stat_result, real: str) -> None:
        if self.strict and st.st_uid != 0:
            what, h = ("symlink", " -h") if stat.S_ISLNK(st.st_mode) else (_what(st), "")
            raise self.refuse(
                f"{what} {real} is owned by uid {st.st_uid}, not root; {self.not_root(h, real)}"
            )

    def not_root(self, h: str, real: str) -> str:
        """Why a component must be root's, and what to do: the end of check_owner's refusal."""
        return (
            f"as root ipcjanitor only reads policy that only root can change (chown{h} root {real})"
        )

    def check_mode(self, st: os.stat_result, real: str, sticky_ok: bool) -> None:
        """Group/other-writable is refused; a sticky directory (/tmp) only where it may be."""
        loose = st.st_mode & _OTHERS_WRITE
        if self.strict and loose and not (sticky_ok and st.st_mode & stat.S_ISVTX):
            raise self.refuse(
                f"{_what(st)} {real} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); as root ipcjanitor refuses it "
                f"(chmod go-w {real})"
            )

    def saw(self, parent: Dir, st: os.stat_result, real: str) -> None:
        """Called for each entry the walk reaches, with the directory it was found in."""

    def root(self) -> Dir:
        fd = self.open_at("/", None, "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(fd)
        self.check_owner(st, "/")
        self.check_mode(st, "/", sticky_ok=True)
        return fd, "/", st

    def walk(self, path: str, start: list[Dir] | None = None) -> tuple[list[Dir], Dir, str]:
        """Resolve path (relative: to start, else to the working directory) component by
        component; -> (the directories leading to it, it, the name it has in the last one)."""
        if start is None or path.startswith("/"):
            if not path.startswith("/"):
                path = os.path.join(os.getcwd(), path)
            start = [self.root()]
        stack = list(start)
        todo = path.split("/")[::-1]
        hops, name = 0, ""
        while todo:
            name = todo.pop()
            if _moved_within(name, stack):
                continue
            dir_fd, dir_real, _ = stack[-1]
            real = os.path.join(dir_real, name)
            fd = self.open_at(name, dir_fd, real)
            st = os.fstat(fd)
            self.saw(stack[-1], st, real)
            self.check_owner(st, real)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                self.follow(fd, real, hops, stack, todo)
            elif stat.S_ISDIR(st.st_mode):
                self.check_mode(st, real, sticky_ok=True)
                stack.append((fd, real, st))
            elif todo:
                raise self.refuse(f"{real} is not a directory")
            else:
                return stack, (fd, real, st), name
        if len(stack) == 1:
            return stack, stack[0], "/"
        return stack[:-1], stack[-1], name

    def follow(self, fd: int, real: str, hops: int, stack: list[Dir], todo: list[str]) -> None:
        """The walk's hops-th symbolic link, at real: its target's components go on todo (an
        absolute target back to the root first)."""
        if hops > MAX_HOPS:
            raise self.refuse(f"too many levels of symbolic links at {real} (a loop?)")
        target = os.readlink("", dir_fd=fd)
        if target.startswith("/"):
            del stack[1:]
        todo.extend(target.split("/")[::-1])

    def read(self, parents: list[Dir], found: Dir, name: str, max_bytes: int) -> bytes:
        """The regular file found, opened relative to its checked directory, read from its fd."""
        _, real, st = found
        self.check_file(st, real)
        self.check_mode(parents[-1][2], parents[-1][1], sticky_ok=False)
        rfd = self.open_at(name, parents[-1][0], real, READ)
        now = os.fstat(rfd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise self.refuse(f"{real} was replaced while it was being read; run again")
        self.check_file(now, real)
        if now.st_size > max_bytes:
            raise self.refuse(_too_large(max_bytes))
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(rfd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise self.refuse(_too_large(max_bytes))
        return b"".join(chunks)

    def check_file(self, st: os.stat_result, real: str) -> None:
        if not stat.S_ISREG(st.st_mode):
            kind = _NOT_A_FILE.get(stat.S_IFMT(st.st_mode), "not a regular file")
            where = "" if real == os.path.abspath(self.shown) else f": {real}"
            raise self.refuse(f"is {kind}, not a policy file{where}")
        self.check_owner(st, real)
        self.check_mode(st, real, sticky_ok=False)


def _what(st: os.stat_result) -> str:
    return "directory" if stat.S_ISDIR(st.st_mode) else "file"


def file_kind(st: os.stat_result) -> str:
    """What the inode is, for a refusal: "a regular file", "a FIFO", "a symlink", ..."""
    if stat.S_ISREG(st.st_mode):
        return "a regular file"
    return _NOT_A_FILE.get(stat.S_IFMT(st.st_mode), "not a regular file")


def _too_large(max_bytes: int) -> str:
    return f"larger than {max_bytes // 2**20} MiB: not a policy"


def read_policy(
    path: str, strict: bool, max_bytes: int, suffix: str, want_dir: bool | None
) -> list[tuple[str, bytes | Refused]]:
    """The file at path, or (a directory) each entry whose name ends in suffix, in name order.

    want_dir: True, False, or None for either. Raises Refused for the path itself; an entry's
    problem is returned in its place, so that every problem can be reported.
    """
    chase = _Chase(path, strict)
    try:
        return _read(chase, max_bytes, suffix, want_dir)
    except OSError as exc:  # what the walk does not expect (a vanished cwd, EIO): still a refusal
        raise chase.refuse(f"cannot read: {exc.strerror}") from None
    finally:
        chase.close()


def _read(
    chase: _Chase, max_bytes: int, suffix: str, want_dir: bool | None
) -> list[tuple[str, bytes | Refused]]:
    path = chase.shown
    parents, found, name = chase.walk(path)
    is_dir = stat.S_ISDIR(found[2].st_mode)
    if want_dir is True and not is_dir:
        raise chase.refuse("is not a directory: the search path names a policy directory")
    if not is_dir or want_dir is False:
        return [(path, chase.read(parents, found, name, max_bytes))]
    chase.check_mode(found[2], found[1], sticky_ok=False)  # others could add entries
    listing = chase.open_at(".", found[0], found[1], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    names = sorted(n for n in os.listdir(listing) if n.endswith(suffix))
    return [
        _entry(os.path.join(path, n), n, [*parents, found], chase.strict, max_bytes) for n in names
    ]


def _entry(
    shown: str, name: str, parents: list[Dir], strict: bool, max_bytes: int
) -> tuple[str, bytes | Refused]:
    chase = _Chase(shown, strict)
    try:
        return shown, chase.read(*chase.walk(name, parents), max_bytes)
    except Refused as exc:
        return shown, exc
    except OSError as exc:
        return shown, chase.refuse(f"cannot read: {exc.strerror}")
    finally:
        chase.close()


def list_directory(path: str, strict: bool) -> list[str]:
    """The names in the directory at path, walked as read_policy walks it; with strict, only
    when root alone can change it and every directory above it (else Refused)."""
    chase = _Chase(path, strict)
    try:
        _, found, _ = chase.walk(path)
        fd, real, st = found
        if not stat.S_ISDIR(st.st_mode):
            raise chase.refuse(f"{real} is not a directory")
        chase.check_mode(st, real, sticky_ok=False)  # others could add entries
        listing = chase.open_at(".", fd, real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return sorted(os.listdir(listing))
    except OSError as exc:
        raise chase.refuse(f"cannot read: {exc.strerror}") from None
    finally:
        chase.close()


class _Controllers(_Chase):
    """A walk that notes who, besides root, could change what the path resolves to."""

    def __init__(self, shown: str) -> None:
        super().__init__(shown, strict=False)
        self.uids: set[int] = set()
        self.anyone: str | None = None

    def saw(self, parent: Dir, st: os.stat_result, real: str) -> None:
        _, parent_real, pst = parent
        if pst.st_uid != 0:  # the directory's owner can rename or replace any entry in it
            self.uids.add(pst.st_uid)
        if pst.st_mode & _OTHERS_WRITE:
            if pst.st_mode & stat.S_ISVTX:  # sticky: only an entry's owner can replace it
                if st.st_uid != 0:
                    self.uids.add(st.st_uid)
            elif self.anyone is None:
                self.anyone = f"directory {parent_real} is writable by group or others"


def stat_controlled(path: str) -> tuple[os.stat_result, frozenset[int], str | None]:
    """stat(path), symlinks followed as chase() follows them, and who could change what it
    resolves to: the non-root uids owning a directory on the way (or an entry in a sticky
    one), and why anyone could (a directory writable by group or others), if so.

    ftok(3) keys are computed from stat(): whoever controls the path chooses the key.
    Raises Refused when the path cannot be walked.
    """
    walk = _Controllers(path)
    try:
        _, (_, _, st), _ = walk.walk(path)
        return st, frozenset(walk.uids), walk.anyone
    except OSError as exc:
        raise walk.refuse(f"cannot read: {exc.strerror}") from None
    finally:
        walk.close()


class _ToWrite(_Chase):
    """The walk of open_directory(): with others_above, a directory of another user's is noted,
    not refused (the file's own directory is checked after the walk); with create_mode, a
    missing directory is made in the checked one before it, with exactly that mode."""

    def __init__(
        self, shown: str, strict: bool, others_above: bool, create_mode: int | None
    ) -> None:
        super().__init__(shown, strict)
        self.others_above = others_above
        self.create_mode = create_mode
        self.theirs: list[tuple[str, int]] = []  # directories on the way that are not root's

    def check_owner(self, st: os.stat_result, real: str) -> None:
        if self.others_above and stat.S_ISDIR(st.st_mode) and st.st_uid != 0:
            self.theirs.append((real, st.st_uid))
            return
        super().check_owner(st, real)

    def not_root(self, h: str, real: str) -> str:
        return (
            "as root ipcjanitor writes only into a directory that root alone can change, "
            f"reached through root's symlinks (name the directory itself, or chown{h} root {real})"
        )

    def open_at(self, name: str, dir_fd: int | None, real: str, flags: int = _PATH) -> int:
        try:
            return super().open_at(name, dir_fd, real, flags)
        except Refused as exc:
            if not (exc.missing and self.create_mode is not None and flags == _PATH):
                raise
        try:  # made in a directory the walk has checked, and given its mode whatever the umask
            os.mkdir(name, self.create_mode, dir_fd=dir_fd)
            made = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=dir_fd)  # fmt: skip
        except FileExistsError:  # made meanwhile by someone else: walked and checked as found
            return super().open_at(name, dir_fd, real, flags)
        except OSError as exc:
            raise self.refuse(f"cannot create {real}: {exc.strerror}", code=exc.errno) from None
        try:
            os.fchmod(made, self.create_mode)
        finally:
            os.close(made)
        return super().open_at(name, dir_fd, real, flags)


def open_directory(
    path: str,
    strict: bool,
    shown: str | None = None,
    *,
    others_above: bool = True,
    create_mode: int | None = None,
) -> tuple[int, str]:
    """An O_PATH descriptor of the directory at path (the caller closes it) and its real path.

    Walked as read_policy walks; with strict, the directory must be root's and writable by
    root alone, every symlink on the way root's, and, with others_above, a directory above it
    may be another user's (the module's docstring says why; then the directory may not be on
    a FUSE file system, which that user could have mounted); without it every directory on
    the way must be root's too. With create_mode, missing directories are made with that
    mode. Raises Refused, naming `shown`.
    """
    chase = _ToWrite(shown or path, strict, others_above, create_mode)
    try:
        _, (fd, real, st), _ = chase.walk(path)
        if not stat.S_ISDIR(st.st_mode):
            raise chase.refuse(f"{real} is not a directory")
        if strict and st.st_uid != 0:
            raise chase.refuse(
                f"directory {real} is owned by uid {st.st_uid}, not root; as root ipcjanitor "
                f"writes only into a directory that root alone can write (chown root {real})"
            )
        chase.check_mode(st, real, sticky_ok=False)  # others could swap or add entries
        above = [(d, uid) for d, uid in chase.theirs if d != real]
        if strict and above and (fs := _fs_type(st.st_dev) or "").startswith("fuse"):
            raise chase.refuse(
                f"directory {real} is on a FUSE file system ({fs}) below {above[0][0]}, a "
                f"directory of uid {above[0][1]}, who may have mounted it (fusermount); as root "
                "ipcjanitor writes only into a directory on a file system root mounted"
            )
        chase.fds.remove(fd)
        return fd, real
    except OSError as exc:
        raise chase.refuse(f"cannot read: {exc.strerror}", code=exc.errno) from None
    finally:
        chase.close()


class _ToRun(_Chase):
    """The walk of check_executable(): every component root's, as for policy."""

    def not_root(self, h: str, real: str) -> str:
        return (
            f"root would run it, and only what root alone can change is run (chown{h} root {real})"
        )


def check_executable(path: str) -> str:
    """The real path of the executable regular file at path, walked strictly (every directory,
    symlink and the file root's, none writable by group or others but a sticky directory
    above the file's own). What a root hook will run: raises Refused otherwise."""
    chase = _ToRun(path, strict=True)
    try:
        parents, (_, real, st), _ = chase.walk(path)
        if not stat.S_ISREG(st.st_mode):
            raise chase.refuse(f"{real} is {file_kind(st)}, not an executable file")
        chase.check_owner(st, real)
        chase.check_mode(st, real, sticky_ok=False)
        chase.check_mode(parents[-1][2], parents[-1][1], sticky_ok=False)
        if not st.st_mode & stat.S_IXUSR:
            raise chase.refuse(f"{real} is not executable (mode {stat.S_IMODE(st.st_mode):04o})")
        return real
    except OSError as exc:
        raise chase.refuse(f"cannot read: {exc.strerror}", code=exc.errno) from None
    finally:
        chase.close()


def write_file_at(dir_fd: int, name: str, data: bytes, mode: int, *, replace: bool) -> None:
    """name in the directory dir_fd, whole or not at all: written under a temporary name with
    O_EXCL|O_NOFOLLOW, given `mode` by fchmod (whatever the umask), fsynced, then renamed over
    name (replace) or hard-linked to it (FileExistsError if name exists: never overwritten)."""
    tmp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)  # fmt: skip
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        try:  # noqa: SIM105 (no contextlib: the hook's fast path imports this module)
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _fs_type(dev: int) -> str | None:
    """The type of the file system mounted with device number dev (/proc/self/mountinfo)."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    with open(MOUNTINFO) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) > 2 and fields[2] == want and right:
                return right.split()[0]
    return None


def _moved_within(name: str, stack: list[Dir]) -> bool:
    """Whether the component needs no lookup: "" and "." stay, ".." climbs (never above
    the root)."""
    if name == "..":
        if len(stack) > 1:
            stack.pop()
        return True
    return name in ("", ".")
