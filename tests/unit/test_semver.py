"""Semantic versions order as semver.org 2.0.0 §11 orders them."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from kiln import semver

# The precedence example of semver.org §11, extended with numeric and release-core cases.
ASCENDING = [
    "0.9.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0-0",
    "2.0.0-0.3",
    "2.0.0-1",
    "2.0.0-x",
    "2.0.0",
    "10.0.0",
]


def test_versions_sort_by_semver_precedence_not_by_text() -> None:
    shuffled = ASCENDING[:]
    random.Random(7).shuffle(shuffled)
    assert [str(version) for version in sorted(semver.parse(text) for text in shuffled)] == ASCENDING


@pytest.mark.parametrize(("lower", "higher"), list(itertools.pairwise(ASCENDING)))
def test_each_version_is_below_the_next(lower: str, higher: str) -> None:
    assert semver.parse(lower) < semver.parse(higher)
    assert semver.parse(higher) > semver.parse(lower)
    assert semver.parse(lower) != semver.parse(higher)


def test_build_metadata_is_kept_but_ignored_by_precedence() -> None:
    first, second = semver.parse("1.0.0+build.1"), semver.parse("1.0.0+exp.sha.5114f85")
    assert first == second
    assert hash(first) == hash(second)
    assert not first < second
    assert str(second) == "1.0.0+exp.sha.5114f85"


def test_parsing_splits_every_part() -> None:
    assert semver.parse("2.0.0-rc.1+build.7") == semver.Version(2, 0, 0, ("rc", 1), "build.7")
    assert semver.parse("2.0.0-rc.1+build.7").build == "build.7"


@pytest.mark.parametrize("text", ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+", "1.0.0-beta..1"])
def test_a_string_that_is_not_a_semantic_version_is_refused_with_the_rule(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("is not a semantic version such as 1.4.0 or 2.0.0-rc.1")):
        semver.parse(text)
