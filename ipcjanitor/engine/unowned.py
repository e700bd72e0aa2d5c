"""PURE: why no owner claims an object. Each near miss says what differs and what to write.

decide.py asks this for every `unowned` object. A near miss is an owner that claims the key
for other kinds, or whose uid or cuid differ; for IPC_PRIVATE, an owner of that uid whose
kinds, cuid or missing `private = true` leave the object out, or one that wrote the creator's
uid where the owner uid belongs (Apache's sets: made by root, owned by www-data).
"""

from __future__ import annotations

from ..model import IpcKind, IpcObject
from ..policy.model import Owner, Policy, user


def reason(obj: IpcObject, policy: Policy) -> str:
    if obj.key == 0:
        return _private(obj, policy)
    owner = policy.key_owner(obj.kind, obj.key)
    if owner is not None:
        return f"key 0x{obj.key:08x} is {owner.name}'s, but {_uids(obj, owner, policy)}"
    if not policy.key_claimed(obj.key):  # most unowned objects: answered by one bisect
        return "no owner claims this key"
    misses = []
    for o in dict.fromkeys(policy.key_owner(k, obj.key) for k in IpcKind if k is not obj.kind):
        if o is not None:
            misses.append(f"key 0x{obj.key:08x} is {o.name}'s for {_kinds(o)}, {_add(obj, o)}")
    return "; ".join(misses) or "no owner claims this key"


def _private(obj: IpcObject, policy: Policy) -> str:
    u = user(policy, obj.uid)
    misses = []
    for o in policy.owners_of_uid(obj.uid):
        if o.private and obj.kind not in o.kinds:
            misses.append(
                f"{o.name} claims that uid's IPC_PRIVATE objects for {_kinds(o)}, {_add(obj, o)}"
            )
        elif o.private:
            misses.append(f"{o.name} claims it, but {_uids(obj, o, policy)}")
        elif obj.kind in o.kinds:
            misses.append(
                f"{o.name} has uid = {u} but not private = true: set private = true in "
                f"[owners.{o.name}] if it is {o.name}'s"
            )
    for o in policy.owners_of_uid(obj.cuid) if obj.cuid != obj.uid else ():
        if o.private and obj.kind in o.kinds:
            c = user(policy, obj.cuid)
            creator = policy.user_name(obj.cuid) or f"uid {obj.cuid}"
            misses.append(
                f"{o.name} claims IPC_PRIVATE objects of uid {c}, and {creator} created this "
                "one, but uid is the owner (ipcs OWNER), not the creator: write uid = "
                f"{u} (and cuid = {c} to narrow) in [owners.{o.name}] if it is {o.name}'s"
            )
    if not misses:
        return f"IPC_PRIVATE; no owner claims private objects of uid {u}"
    return f"IPC_PRIVATE of uid {u}: " + "; ".join(misses)


def _uids(obj: IpcObject, o: Owner, policy: Policy) -> str:
    """What differs between the object's uids and the owner's, and what to write."""
    differ, write = [], []
    if o.uid is not None and obj.uid != o.uid:
        differ.append(
            f"its owner uid is {user(policy, obj.uid)} where {o.name} says "
            f"uid = {user(policy, o.uid)}"
        )
        write.append(f"uid = {user(policy, obj.uid)}")
    if o.cuid is not None and obj.cuid != o.cuid:
        differ.append(
            f"its creator uid is {user(policy, obj.cuid)} where {o.name} says "
            f"cuid = {user(policy, o.cuid)}"
        )
        write.append(f"cuid = {user(policy, obj.cuid)}, or no cuid,")
    fix = " and ".join(write)
    return f"{', and '.join(differ)}: write {fix} in [owners.{o.name}] if it is {o.name}'s"


def _kinds(o: Owner) -> str:
    kinds = [k.value for k in IpcKind if k in o.kinds]
    return " and ".join(kinds) + (" only" if len(kinds) == 1 else "")


def _add(obj: IpcObject, o: Owner) -> str:
    return (
        f'not {obj.kind.value}: add "{obj.kind.value}" to kinds in [owners.{o.name}] if it is '
        f"{o.name}'s"
    )
