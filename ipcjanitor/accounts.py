"""The user database (NSS: /etc/passwd, LDAP, sssd): names for uids, escaped (escape.py),
since a directory service supplies them. Cached: a run asks about a few uids many times."""

from __future__ import annotations

import pwd
from functools import cache

from .escape import safe_name


@cache
def user_name(uid: int) -> str | None:
    """The user database's name for a uid, escaped; None if it has none."""
    try:
        return safe_name(pwd.getpwuid(uid).pw_name)
    except (KeyError, OverflowError):
        return None
