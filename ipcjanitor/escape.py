"""The one escaping rule for text others supply (names in /dev/shm, comm, user names, cgroup
names): anyone can put escapes there, and a terminal would act on them."""

from __future__ import annotations


def safe_name(name: str) -> str:
    """The name with every byte a terminal could act on escaped, and backslashes doubled so
    the escape is unambiguous: control characters and DEL as \\xNN, invalid UTF-8 bytes
    (surrogate escapes from os.listdir) as \\xNN, other non-printable characters as \\uNNNN.
    The result is plain valid Unicode (JSON-safe)."""
    if name.isprintable() and "\\" not in name:  # the common case: nothing to escape
        return name
    out = []
    for c in name:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not c.isprintable() or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(c)
    return "".join(out)
