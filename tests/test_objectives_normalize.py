"""Normalisation maths, calibration, JSON round trip and mismatches."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from polyalign.errors import ConfigError
from polyalign.objectives import LinearRange, Normalizer, build, normalize_scores, parse_spec
from polyalign.objectives.normalize import percentile_range

finite = st.floats(-1e6, 1e6, allow_nan=False)


def test_clp_paper_ranges_map_to_unit_interval():
    nli = LinearRange(-7.0, 0.0)
    assert nli.apply(torch.tensor([-7.0, -3.5, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0, pytest.approx(1 / 7 + 1)]
    rouge = LinearRange(19.0, 29.0, clip=True)
    assert rouge.apply(torch.tensor([10.0, 24.0, 40.0])).tolist() == [0.0, 0.5, 1.0]


@given(finite, finite, st.lists(finite, min_size=1, max_size=20))
def test_linear_range_is_affine_and_inverts(low, high, values):
    if abs(high - low) < 1e-3:
        return
    scale = LinearRange(low, high)
    x = torch.tensor(values, dtype=torch.float64)
    y = scale.apply(x)
    torch.testing.assert_close(low + y * (high - low), x, atol=1e-6 * (1 + abs(low) + abs(high)), rtol=1e-9)
    clipped = LinearRange(low, high, clip=True).apply(x)
    assert ((clipped >= 0) & (clipped <= 1)).all()


def test_reversed_range_flips_direction():
    wrapped = parse_spec("profanity:range=1..0")
    assert wrapped.higher_is_better is True
    assert wrapped.score([""], ["clean words only"]).tolist() == [1.0]


def test_percentiles_match_numpy_linear_interpolation():
    scores = torch.arange(101, dtype=torch.float32)
    assert percentile_range(scores) == pytest.approx((5.0, 95.0))
    assert percentile_range(torch.tensor([0.0, 10.0]), 25, 75) == pytest.approx((2.5, 7.5))
    with pytest.raises(ConfigError, match="0 <= lower < upper <= 100"):
        percentile_range(scores, 90, 10)


def test_calibrate_apply_save_load(tmp_path):
    objectives = build(["length", "sentiment:name=mood"])
    responses = [" ".join(["word"] * n) for n in range(1, 22)]  # lengths 1..21
    raw = objectives.score([""] * 21, responses + [], None)
    raw[:, 1] = torch.linspace(-1, 1, 21)
    normalizer = Normalizer.calibrate(objectives, raw)
    assert (normalizer.ranges["length"].low, normalizer.ranges["length"].high) == pytest.approx((2.0, 20.0))
    normalized = normalizer.apply(objectives)
    assert normalized.to_spec()[0] == "length:range=2.0..20.0"
    assert normalized.to_spec()[1].startswith("sentiment:name=mood,range=-0.8999")  # float32 scores
    scores = normalized.score([""] * 3, ["word " * 2, "word " * 11, "word " * 20])
    assert scores[:, 0].tolist() == pytest.approx([0.0, 0.5, 1.0])
    torch.testing.assert_close(normalize_scores(raw, objectives.names, normalizer)[:, 0], (raw[:, 0] - 2) / 18)

    path = normalizer.save(tmp_path / "run" / "normalizer.json")
    data = json.loads(path.read_text())
    assert data["format"] == "polyalign.normalizer/1"
    assert data["objectives"][0]["source"] == "calibrated: 5th-95th percentile of 21 responses"
    loaded = Normalizer.load(path)
    assert loaded.ranges == normalizer.ranges and loaded.specs == normalizer.specs
    # the saved specs round-trip: the normalised set scores the same after a reload
    torch.testing.assert_close(build(normalized.to_spec()).score([""], ["word word"]),
                               loaded.apply(objectives).score([""], ["word word"]))


def test_fixed_normalizer_and_errors(tmp_path):
    objectives = build(["sentiment", "length"])
    with pytest.raises(ConfigError, match="the normalizer has no range for length"):
        Normalizer.fixed({"sentiment": (-1, 1)}).apply(objectives)
    normalized = Normalizer.fixed({"sentiment": (-1, 1), "length": (0, 10)}).apply(objectives)
    assert normalized.score([""], ["one two three four five"]).tolist() == [[0.5, 0.5]]
    with pytest.raises(ConfigError, match="is already normalised"):
        Normalizer.fixed({"sentiment": (-1, 1), "length": (0, 10)}).apply(normalized)


def test_normalizer_made_for_another_spec_is_refused():
    made = Normalizer.calibrate(build(["length:target=5"]), torch.tensor([[0.0], [-4.0], [-2.0]]))
    with pytest.raises(ConfigError, match="was made for spec 'length:target=5', but the objective is 'length'"):
        made.apply(build(["length"]))


def test_calibration_needs_spread():
    objectives = build(["length"])
    with pytest.raises(ConfigError, match="cannot calibrate 'length': its 5th and 95th percentiles over 3 responses "
                                          "are 4.0 and 4.0; give more varied"):
        Normalizer.calibrate(objectives, torch.full((3, 1), 4.0))


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not valid JSON"),
    ('{"format": "polyalign.normalizer/1", "objectives": [{"name": "x", "low": 0}]}',
     "objectives.0.high: Field required"),
    ('{"format": "other/9", "objectives": []}', "normalizer format 'other/9' is not supported"),
    ('{"format": "polyalign.normalizer/1", "objectives": [{"name": "x", "low": 1, "high": 1}]}', "has zero width"),
])
def test_bad_normalizer_files(tmp_path, content, message):
    path = tmp_path / "n.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Normalizer.load(path)


def test_missing_normalizer_file(tmp_path):
    with pytest.raises(ConfigError, match="normalizer file .* does not exist"):
        Normalizer.load(tmp_path / "nope.json")
