"""Durations in systemd.time(7) syntax: parsed and printed as systemd-analyze timespan does.

`parse_timespan` follows systemd's parse_sec() (src/basic/time-util.c, systemd 252): numbers
with an optional fraction, each followed by an optional unit (seconds by default), spaces
allowed anywhere between them, summed ("1h 30min", "1h30m", "10s5m", "90", ".5s"). `m` is a
minute and `M` a month, as in systemd. `format_timespan` is systemd's format_timespan():
"1h 30min", "500ms", "1.500000s". tests/test_timespan.py holds both to the real
`systemd-analyze timespan`. PURE.
"""

from __future__ import annotations

USEC_PER_SEC = 1_000_000
USEC_INFINITY = 2**64 - 1
_MINUTE, _HOUR, _DAY = 60 * USEC_PER_SEC, 3600 * USEC_PER_SEC, 86400 * USEC_PER_SEC
_MONTH, _YEAR = 2629800 * USEC_PER_SEC, 31557600 * USEC_PER_SEC
# systemd's extract_multiplier() table, in its order: the first prefix that matches wins
_UNITS = (
    ("seconds", USEC_PER_SEC), ("second", USEC_PER_SEC), ("sec", USEC_PER_SEC),
    ("s", USEC_PER_SEC), ("minutes", _MINUTE), ("minute", _MINUTE), ("min", _MINUTE),
    ("months", _MONTH), ("month", _MONTH), ("M", _MONTH), ("msec", 1000), ("ms", 1000),
    ("m", _MINUTE), ("hours", _HOUR), ("hour", _HOUR), ("hr", _HOUR), ("h", _HOUR),
    ("days", _DAY), ("day", _DAY), ("d", _DAY), ("weeks", 7 * _DAY), ("week", 7 * _DAY),
    ("w", 7 * _DAY), ("years", _YEAR), ("year", _YEAR), ("y", _YEAR), ("usec", 1),
    ("us", 1), ("\u03bcs", 1), ("\u00b5s", 1),
)  # fmt: skip
_FORMAT = (
    ("y", _YEAR), ("month", _MONTH), ("w", 7 * _DAY), ("d", _DAY), ("h", _HOUR),
    ("min", _MINUTE), ("s", USEC_PER_SEC), ("ms", 1000), ("us", 1),
)  # fmt: skip
_WHITESPACE = " \t\n\r"  # systemd's WHITESPACE
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale, which strtoll() skips
_DIGITS = "0123456789"
_LLONG_MAX = 2**63 - 1


def parse_timespan(text: str, units: list[int] | None = None) -> int:
    """Microseconds in text, or USEC_INFINITY for "infinity"; ValueError where systemd refuses.

    `units`, when given, receives each term's unit in microseconds, in the order written.
    """
    p = text.lstrip(_WHITESPACE)
    if p.startswith("infinity"):
        if p[len("infinity") :].lstrip(_WHITESPACE):
            raise ValueError("nothing may follow infinity")
        return USEC_INFINITY
    usec = 0
    something = False
    while True:
        p = p.lstrip(_WHITESPACE)
        if not p:
            if not something:
                raise ValueError("no number")
            return usec
        whole, fraction, multiplier, p = _term(p)
        if units is not None:
            units.append(multiplier)
        if whole >= USEC_INFINITY // multiplier:
            raise ValueError("too long")
        k = whole * multiplier
        if k >= USEC_INFINITY - usec:
            raise ValueError("too long")
        usec += k
        something = True
        if fraction is not None:
            usec = _add_fraction(usec, fraction, multiplier)


def _term(p: str) -> tuple[int, str | None, int, str]:
    """One term of p ("5.5min ..."): (whole, the digits after a decimal point or None without
    one, the unit's multiplier, the rest); ValueError where systemd refuses the term."""
    if p[0] == "-":
        raise ValueError("a duration cannot be negative")
    whole, e = _strtoll(p)
    if whole < 0:
        raise ValueError("a duration cannot be negative")
    fraction = None
    if e.startswith("."):
        rest = e[1:]
        fraction = rest[: len(rest) - len(rest.lstrip(_DIGITS))]
        p = rest[len(fraction) :]
    elif e is p:
        raise ValueError(f"{p[:1]!r} is not a number")
    else:
        p = e
    multiplier, s = _multiplier(p.lstrip(_WHITESPACE))
    if s == p and s and multiplier is None:  # "12.34.56", "5x"
        raise ValueError(f"{s!r} is not a unit")
    return whole, fraction, multiplier or USEC_PER_SEC, s


def _add_fraction(usec: int, fraction: str, multiplier: int) -> int:
    """usec plus the fraction's digits of the unit (systemd's digit by digit sum)."""
    m = multiplier // 10
    for digit in fraction:
        k = int(digit) * m
        if k >= USEC_INFINITY - usec:
            raise ValueError("too long")
        usec += k
        m //= 10
    if not fraction:  # "3.", "3.sec"
        raise ValueError("a decimal point needs digits after it")
    return usec


def _strtoll(p: str) -> tuple[int, str]:
    """strtoll(p, &e, 10): the number and the rest (p itself when there is no number)."""
    q = p.lstrip(_C_SPACE)
    sign = 1
    if q[:1] in ("+", "-"):
        sign = -1 if q[0] == "-" else 1
        q = q[1:]
    digits = q[: len(q) - len(q.lstrip(_DIGITS))]
    if not digits:
        return 0, p
    value = sign * int(digits)
    if not -_LLONG_MAX - 1 <= value <= _LLONG_MAX:
        raise ValueError("too long")
    return value, q[len(digits) :]


def _multiplier(p: str) -> tuple[int | None, str]:
    for suffix, usec in _UNITS:
        if p.startswith(suffix):
            return usec, p[len(suffix) :]
    return None, p


def format_timespan(usec: int, accuracy: int = 1) -> str:
    """systemd's format_timespan(): "1h 30min", "500ms", "1.500000s" (accuracy in usec)."""
    if usec >= USEC_INFINITY:
        return "infinity"
    if usec <= 0:
        return "0"
    t = usec
    words: list[str] = []
    for suffix, unit in _FORMAT:
        if t <= 0 or (t < accuracy and words):
            break
        if t < unit:
            continue
        a, b = divmod(t, unit)
        if t < _MINUTE and b > 0:  # below a minute, a fraction in dot notation
            j = len(str(unit)) - 1
            cc = accuracy
            while cc > 1:
                b //= 10
                j -= 1
                cc //= 10
            if j > 0:
                words.append(f"{a}.{b:0{j}d}{suffix}")
                break
        words.append(f"{a}{suffix}")
        t = b
    return " ".join(words)
