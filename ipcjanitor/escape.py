"""The one escaping rule for text a process, a file name or a directory service supplies.

Anyone can name a file in /dev/shm, set a process's comm or command line, or put a user name
in NSS: such text may hold escape sequences, bidi overrides or C1 controls that make a
terminal (or an editor showing a written file) display something else than what is there.
must_escape() says which characters; safe_name() escapes them for display, and the TOML that
learn writes escapes the same characters in its own syntax (learn/propose.py toml_string).
"""

from __future__ import annotations

# Bidi embeddings and overrides (LRE RLE PDF LRO RLO) and isolates (LRI RLI FSI PDI): they
# reorder what follows on the line ("Trojan Source", CVE-2021-42574). Python counts them as
# non-printable (category Cf); named here so that the rule does not hang on that alone.
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def must_escape(c: str) -> bool:
    """Whether one character may not reach output as itself: C0 and C1 controls and DEL
    (terminal escapes: ESC, CSI U+009B, NEL U+0085), bidi controls, and everything else
    Python does not count as printable (format characters, separators, surrogates, unassigned
    code points) but the plain space."""
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F or c in _BIDI or not c.isprintable()


def safe_name(name: str) -> str:
    """The text with every character must_escape() names escaped, and backslashes doubled so
    the escape is unambiguous: C0 controls and DEL as \\xNN, invalid UTF-8 bytes (surrogate
    escapes from os.listdir) as \\xNN, the others (C1 controls, bidi, ...) as \\uNNNN.
    The result is plain valid Unicode (JSON-safe)."""
    if name.isprintable() and "\\" not in name and _BIDI.isdisjoint(name):
        return name  # the common case: nothing to escape
    out = []
    for c in name:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif must_escape(c):
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(c)
    return "".join(out)
