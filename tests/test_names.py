"""policy/names.py: pattern refusals, matching, and decided overlap (unit + hypothesis)."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipcjanitor.policy import names

PIECES = ["a", "b", ".", "/", "*", "?", "[ab]", "[!a]", "[a-c]", "x"]
patterns = st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("".join)
flat_patterns = st.lists(
    st.sampled_from([p for p in PIECES if "/" not in p]), min_size=1, max_size=6
).map("".join)
name_text = st.text(alphabet="abcx./!", min_size=1, max_size=8)
flat_names = st.text(alphabet="abcx.!", min_size=1, max_size=8)


def matches(pattern: str, name: str) -> bool:
    return names.to_regex([pattern]).match(name) is not None


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("psm_*", "psm_1a2b", True),
        ("psm_*", "psm_a/b", False),  # '*' never crosses '/'
        ("app/*", "app/buf0", True),
        ("app/?uf0", "app/buf0", True),
        ("a?b", "a/b", False),
        ("[!x]", "/", False),  # a set never takes '/'
        ("[a-c]x", "bx", True),
        ("[z-a]", "z", False),  # a reversed range matches nothing
        ("a[b", "a[b", True),  # an unclosed '[' is itself
        ("[]]", "]", True),
        ("a\\*", "a\\b", True),  # '\\' is a plain character
        ("PostgreSQL.*", "PostgreSQL.1804289383", True),
        ("PostgreSQL.*", "PostgreSQLx1", False),
    ],
)
def test_matching(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize(
    ("pattern", "has_uid", "why"),
    [
        ("", False, "empty pattern"),
        ("/psm_*", False, "is absolute"),
        ("../etc/*", False, "'..' component"),
        ("a/../b", False, "'..' component"),
        ("a//b", False, "empty, '.' or '..' component"),
        ("a/", False, "empty, '.' or '..' component"),
        ("psm\x00*", False, "NUL or control"),
        ("psm\n*", False, "NUL or control"),
        ("*", False, "matches every name"),
        ("?*", False, "matches every name"),
        ("**", False, "matches every name"),
        ("[!/]*", False, "matches every name"),
        ("x" * 256, False, "longer than"),
        (3, False, "is a string"),
    ],
)
def test_refusals(pattern: object, has_uid: bool, why: str) -> None:
    found = names.problem(pattern, has_uid=has_uid)
    assert found is not None and why in found


@pytest.mark.parametrize("pattern", ["psm_*", "*.x", "[!a]*", "*/*", "a*"])
def test_accepted(pattern: str) -> None:
    assert names.problem(pattern, has_uid=False) is None


def test_match_everything_is_allowed_with_uid() -> None:
    assert names.problem("*", has_uid=True) is None


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        ("psm_*", "*_x", "psm_x"),
        ("psm_*", "PostgreSQL.*", None),
        ("a/*", "*/b", "a/b"),
        ("*", "a/b", None),
        ("[a-c]*", "[!a-z]*", None),
        ("a*b*c", "*c*b*", "acbc"),
    ],
)
def test_common_name(a: str, b: str, common: str | None) -> None:
    assert names.common_name(a, b) == common


def test_semaphore_and_queue_names_hold_no_slash() -> None:
    assert names.common_name("a?b", "a*", slash=False) == "a!b"
    assert names.common_name("a/b", "a/*", slash=False) is None


@settings(max_examples=400, deadline=None)
@given(patterns, patterns)
def test_a_common_name_is_matched_by_both(a: str, b: str) -> None:
    common = names.common_name(a, b)
    if common is not None:
        assert matches(a, common) and matches(b, common)


@settings(max_examples=400, deadline=None)
@given(patterns, patterns, name_text)
def test_a_name_both_match_means_they_overlap(a: str, b: str, name: str) -> None:
    if matches(a, name) and matches(b, name):
        found = names.common_name(a, b)
        assert found is not None and len(found) <= len(name)  # the shortest


@settings(max_examples=400, deadline=None)
@given(flat_patterns, flat_names)
def test_matching_agrees_with_fnmatch_where_no_slash_is_involved(p: str, name: str) -> None:
    assert matches(p, name) is fnmatch.fnmatchcase(name, p)


@settings(max_examples=300, deadline=None)
@given(patterns, flat_names)
def test_a_match_everything_pattern_matches_every_name(p: str, name: str) -> None:
    if names.matches_everything(p):
        assert matches(p, name)
