"""kiln-router's configuration: what parses, what is refused and why, and how a weighted pick lands."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from kiln.runtime.router import config


def document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "variants": {
            "stable": {"url": "http://iris-stable.ns.svc:80", "version": "1.0.0"},
            "candidate": {"url": "http://iris-canary.ns.svc:80", "version": "1.1.0"},
        },
        "weights": {"stable": 90, "candidate": 10},
        "mirror": {"variant": None, "percent": 0},
    }
    base.update(changes)
    return base


def test_the_documented_example_parses() -> None:
    parsed = config.parse(json.dumps(document()))

    assert parsed.variants["stable"] == config.Variant("stable", "http://iris-stable.ns.svc:80", "1.0.0")
    assert dict(parsed.weights) == {"stable": 90, "candidate": 10}
    assert not parsed.mirror.active
    assert parsed.document() == document()


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"mirror": {"variant": "candidate", "percent": 25}}, lambda c: c.mirror == config.Mirror("candidate", 25)),
        ({"mirror": None}, lambda c: c.mirror == config.Mirror()),
        ({"weights": {"stable": 0, "candidate": 100}}, lambda c: set(c.slots) == {"candidate"}),
        (
            {
                "variants": {
                    "blue": {"url": "https://blue:8443/", "version": "1"},
                    "preview": {"url": "http://p", "version": "2"},
                },
                "weights": {"blue": 100, "preview": 0},
            },
            lambda c: c.variants["blue"].url == "https://blue:8443" and c.variants["preview"].url == "http://p",
        ),
    ],
    ids=["mirror", "mirror-null", "all-to-candidate", "any-variant-names"],
)
def test_good_configurations(changes: dict[str, Any], check: Any) -> None:
    parsed = config.parse(json.dumps(document(**changes)))

    assert check(parsed)


def test_the_mirror_may_be_left_out() -> None:
    raw = document()
    del raw["mirror"]

    assert config.parse(json.dumps(raw)).mirror == config.Mirror()


def test_a_comparison_against_a_variant_parses_with_the_default_tolerance_and_round_trips() -> None:
    raw = document(mirror={"variant": "candidate", "percent": 100, "compare": {"against": "stable"}})

    parsed = config.parse(json.dumps(raw))

    assert parsed.mirror == config.Mirror("candidate", 100, config.Compare("stable", config.DEFAULT_TOLERANCE))
    assert parsed.document()["mirror"] == {
        "variant": "candidate",
        "percent": 100,
        "compare": {"against": "stable", "tolerance": 1e-6},
    }
    assert config.parse(json.dumps(parsed.document())) == parsed


def test_a_comparison_takes_any_finite_tolerance_from_zero() -> None:
    for tolerance in (0, 0.5, 1e-9, 3):
        raw = document(
            mirror={"variant": "candidate", "percent": 7, "compare": {"against": "stable", "tolerance": tolerance}}
        )

        assert config.parse(json.dumps(raw)).mirror.compare == config.Compare("stable", float(tolerance))


def test_the_digest_names_the_content_not_its_spelling() -> None:
    compact = config.parse(json.dumps(document(), separators=(",", ":")))
    spaced = config.parse(json.dumps(document(), indent=4))
    other = config.parse(json.dumps(document(weights={"stable": 80, "candidate": 20})))

    assert compact.digest == spaced.digest != other.digest


def only(variant: object) -> str:
    """A configuration whose one variant, stable, is `variant`."""
    return json.dumps(document(variants={"stable": variant}, weights={"stable": 100}))


def weights(**values: object) -> str:
    return json.dumps(document(weights=values))


def mirror(**values: object) -> str:
    return json.dumps(document(mirror=values))


def compare(**values: object) -> str:
    return json.dumps(document(mirror={"variant": "candidate", "percent": 100, "compare": values}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "the configuration must be a JSON object, not list"),
        (json.dumps({"weights": {}}), "the configuration needs variants"),
        (json.dumps({**document(), "extra": 1}), "the configuration has unknown field(s) extra"),
        (json.dumps(document(variants={})), "variants must name at least one variant"),
        (json.dumps(document(variants={"Stable": {"url": "http://a", "version": "1"}})), "'Stable' is not a valid"),
        (only("http://a"), "variants.stable must be a JSON object"),
        (only({"url": "http://a"}), "variants.stable needs version"),
        (only({"url": "", "version": "1"}), "variants.stable.url must be a non-empty string"),
        (only({"url": "ftp://a", "version": "1"}), "variants.stable.url must be an http:// or https:// URL"),
        (only({"url": "http://a/v2", "version": "1"}), "variants.stable.url must have no path"),
        (weights(stable=90, candidate=10, preview=0), "weights: preview is not a variant"),
        (weights(stable=100), "every variant needs a weight; candidate has none"),
        (weights(stable=90.0, candidate=10), "weights.stable must be an integer from 0 to 100"),
        (weights(stable=True, candidate=99), "weights.stable must be an integer"),
        (weights(stable=110, candidate=-10), "weights.stable must be an integer from 0 to 100"),
        (weights(stable=90, candidate=20), "weights must sum to 100, not 110"),
        (mirror(variant="shadow", percent=5), "mirror.variant: 'shadow' is not a variant"),
        (mirror(variant=None, percent=5), "mirror.percent must be 0 when mirror.variant is null"),
        (mirror(variant="candidate", percent=101), "mirror.percent must be an integer from 0 to 100"),
        (mirror(variant="candidate"), "mirror needs percent"),
        (compare(against="preview"), "mirror.compare.against: 'preview' is not a variant"),
        (compare(against="candidate"), "mirror.compare.against must be a variant other than the mirrored one"),
        (compare(tolerance=1e-6), "mirror.compare needs against"),
        (compare(against="stable", tolerance=-1), "mirror.compare.tolerance must be a finite number >= 0"),
        (compare(against="stable", tolerance="1e-6"), "mirror.compare.tolerance must be a finite number >= 0"),
        (compare(against="stable", tolerance=True), "mirror.compare.tolerance must be a finite number >= 0"),
        (compare(against="stable", relative=True), "mirror.compare has unknown field(s) relative"),
        (mirror(variant="candidate", percent=5, compare="stable"), "mirror.compare must be a JSON object"),
        (mirror(variant=None, percent=0, compare={"against": "stable"}), "mirror.compare needs a mirror.variant"),
    ],
    ids=[
        "not-json", "not-an-object", "no-variants", "unknown-field", "empty-variants", "bad-name", "variant-not-object",
        "no-version", "empty-url", "not-http", "url-with-path", "weight-of-unknown-variant", "variant-without-weight",
        "float-weight", "bool-weight", "weight-out-of-range", "weights-not-100", "mirror-unknown-variant",
        "mirror-percent-without-variant", "mirror-percent-out-of-range", "mirror-incomplete",
        "compare-unknown-variant", "compare-against-itself", "compare-without-against", "negative-tolerance",
        "string-tolerance", "bool-tolerance", "compare-unknown-field", "compare-not-object", "compare-without-mirror",
    ],
)  # fmt: skip
def test_bad_configurations_are_refused_naming_the_field_and_rule(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.parse(text)

    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ({"stable": 100, "candidate": 0}, {"stable": 1.0}),
        ({"stable": 70, "candidate": 30}, {"stable": 0.7, "candidate": 0.3}),
        ({"stable": 0, "candidate": 100}, {"candidate": 1.0}),
        ({"stable": 1, "candidate": 99}, {"stable": 0.01, "candidate": 0.99}),
    ],
)
def test_a_uniform_draw_lands_on_each_variant_in_proportion_to_its_weight(
    split: dict[str, int], expected: dict[str, float]
) -> None:
    parsed = config.parse(json.dumps(document(weights=split)))
    source = random.Random(7)
    draws = 20_000

    counted = Counter(parsed.pick(source.random()).name for _ in range(draws))

    assert set(counted) == set(expected)
    for name, share in expected.items():
        # Five binomial standard deviations, so a correct pick fails about once in 3.5 million runs.
        tolerance = 5 * (share * (1 - share) / draws) ** 0.5
        assert abs(counted[name] / draws - share) <= tolerance, (name, counted)


def test_draws_map_onto_weights_exactly_at_the_edges() -> None:
    parsed = config.parse(json.dumps(document(weights={"stable": 30, "candidate": 70})))

    assert [parsed.pick(draw).name for draw in (0.0, 0.299999, 0.3, 0.999999)] == [
        "stable",
        "stable",
        "candidate",
        "candidate",
    ]
