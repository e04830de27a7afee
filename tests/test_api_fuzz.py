"""Random input to the public Python entry points: each returns a valid result or raises a PolyalignError subclass,
never a raw TypeError, ValueError, RuntimeError, OSError, UnicodeDecodeError or torch error (issue 11).

No model is loaded: the entry points fuzzed here are the validation boundary every caller goes through.
"""

from __future__ import annotations

import math
import os
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from polyalign import combine_logprobs, divergences, files
from polyalign.conditioning import mix_coefficients, parse_selector
from polyalign.divergences import Divergence
from polyalign.errors import PolyalignError
from polyalign.interface import GenerationConfig, check_prompts, read_prompts
from polyalign.objectives import build
from polyalign.objectives.base import ObjectiveSet
from polyalign.objectives.spec import split_spec
from polyalign.weights import REAL, SCALAR, SIMPLEX, check_weights, parse_weights

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def outcome(call, *args, **kwargs):
    """``call``'s result, or None when it raised a PolyalignError; any other exception fails the test."""
    try:
        return call(*args, **kwargs)
    except PolyalignError as exc:
        assert str(exc).strip(), "a PolyalignError must say what was wrong"
        return None


# --- strategies -----------------------------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-3, max_value=3),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 5e-324, True]),
)
junk = st.one_of(st.none(), st.text(max_size=8), st.binary(max_size=8),
                 st.dictionaries(st.text(max_size=3), numbers, max_size=2), st.complex_numbers())
vectors = st.lists(numbers, max_size=5)
weights_like = st.one_of(
    vectors,
    st.lists(vectors, max_size=3),  # ragged or not
    st.lists(st.lists(vectors, max_size=2), max_size=2),  # too deep
    st.tuples(numbers, numbers),
    numbers,
    junk,
    st.lists(st.one_of(numbers, junk), max_size=4),
    vectors.map(lambda v: torch.tensor(v, dtype=torch.float64) if v and all(isinstance(x, float) for x in v)
                else v),
)
names = st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=4, unique=True)
weight_text = st.one_of(st.text(max_size=20), st.text("0123456789.,-+ eEinfatINFx_", max_size=20),
                        st.lists(st.floats(), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))))
divergence_names = st.one_of(
    st.sampled_from(["reverse_kl", "forward_kl", "jsd", "jeffrey", "kl", "fkl", "js", "tv", "chi2", "pearson",
                     "total_variation", "alpha", "alpha:", "REVERSE-KL", " jsd ", "alpha=0.5", "alpha_0.3"]),
    numbers.map(lambda a: f"alpha:{a}"),
    st.text(max_size=12),
    junk,
)


config_values = st.dictionaries(
    st.sampled_from([*GenerationConfig.model_fields, "bogus", "topP"]),
    st.one_of(numbers, junk, st.lists(st.one_of(st.integers(-5, 2**70), st.text(max_size=4)), max_size=3),
              st.sampled_from(["greedy", "sample", "beam", "nope", ""])),
    max_size=5,
)


# --- weights ------------------------------------------------------------------------------------------------------

@FUZZ
@given(weights=weights_like, n_rows=st.integers(0, 3), objectives=names,
       domain=st.sampled_from([REAL, SIMPLEX, SCALAR]))
def test_check_weights(weights, n_rows, objectives, domain):
    w = outcome(check_weights, weights, n_rows, objectives, domain)
    if w is not None:
        assert w.dtype == torch.float64 and tuple(w.shape) == (n_rows, len(objectives))
        assert bool(torch.isfinite(w).all()) and not bool((w == 0).all(-1).any())
        assert domain.violation(w) is None


@FUZZ
@given(text=weight_text)
def test_parse_weights(text):
    values = outcome(parse_weights, text)
    if values is not None:
        assert values and all(isinstance(v, float) and math.isfinite(v) for v in values)
        assert len(values) == text.count(",") + 1  # spaces never join or split numbers


# --- the combination and divergences ------------------------------------------------------------------------------

@FUZZ
@given(name=divergence_names)
def test_divergences_get(name):
    div = outcome(divergences.get, name)
    if div is not None:
        assert isinstance(div, Divergence)


@FUZZ
@given(m=st.integers(1, 3), v=st.integers(2, 6), seed=st.integers(0, 2**16), weights=weights_like,
       divergence=divergence_names, with_reference=st.booleans(), as_logits=st.booleans(), batch=st.booleans(),
       zeros=st.floats(0, 1), dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]))
def test_combine_logprobs(m, v, seed, weights, divergence, with_reference, as_logits, batch, zeros, dtype):
    g = torch.Generator().manual_seed(seed)
    shape = (m, 2, v) if batch else (m, v)
    experts = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    reference = torch.randn(shape[1:], generator=g, dtype=torch.float64) * 3
    experts = experts.masked_fill(torch.rand(shape, generator=g) < zeros, -torch.inf)  # tokens of probability 0
    if not as_logits:  # logits are refused as log-probs; log_softmax outputs are what combine takes
        experts, reference = experts.log_softmax(-1), reference.log_softmax(-1)
    experts, reference = experts.to(dtype), reference.to(dtype)
    combined = outcome(combine_logprobs, reference if with_reference else None, experts, weights, divergence)
    if combined is not None:
        assert combined.shape == shape[1:] and combined.dtype == dtype and not bool(combined.isnan().any())
        assert torch.allclose(combined.double().logsumexp(-1), torch.zeros(()).double(), atol=1e-2)


@FUZZ
@given(m=st.integers(1, 3), v=st.integers(2, 5), weights=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=3),
       divergence=st.sampled_from(["reverse_kl", "forward_kl", "jsd", "jeffrey", "alpha:0.3", "alpha:0.9"]),
       seed=st.integers(0, 2**16))
def test_combine_logprobs_with_valid_shapes_gives_a_distribution_or_says_why_not(m, v, weights, divergence, seed):
    assume(len(weights) == m)
    g = torch.Generator().manual_seed(seed)
    experts = torch.randn(m, v, generator=g, dtype=torch.float64).mul(4).log_softmax(-1)
    reference = torch.randn(v, generator=g, dtype=torch.float64).mul(4).log_softmax(-1)
    combined = outcome(combine_logprobs, reference, experts, weights, divergence)
    if combined is not None:
        assert not bool(combined.isnan().any()) and abs(float(combined.logsumexp(-1))) < 1e-6


# --- decoding options -----------------------------------------------------------------------------------------------

@FUZZ
@given(kwargs=config_values)
def test_generation_config(kwargs):
    config = outcome(lambda: GenerationConfig(**kwargs))
    if config is not None:
        assert GenerationConfig.model_validate(config.model_dump()) == config  # every field within its bounds


@FUZZ
@given(changes=config_values)
def test_generation_config_assignment_keeps_it_valid(changes):
    config = GenerationConfig()
    for key, value in changes.items():
        outcome(setattr, config, key, value)
        assert GenerationConfig.model_validate(config.model_dump()) == config


# --- prompts and files ----------------------------------------------------------------------------------------------

ANY_CHARACTER = st.one_of(st.characters(), st.characters(categories=["Cs"]))
"""Lone surrogates included: what surrogateescape makes of non-UTF-8 bytes in argv, stdin or a JSON escape."""
contents = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
    st.text(max_size=20).map(lambda t: t.encode("utf-16")),
    st.text(max_size=20).map(lambda t: t.encode("latin-1", errors="replace")),
    st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=6)),
                 lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(["prompt", "x"]),
                                                                                   kids, max_size=2)),
                 max_leaves=6).map(lambda value: __import__("json").dumps(value).encode()),
    st.sampled_from([b'{"prompt": "a"}\n{"prompt": 3}\n', b'["a", {"prompt": "b"}]', b'"\\ud800"', b"[]",
                     b'{"prompt": "a\\ud800"}', b"\xef\xbb\xbfhello\n", b"a: [b\n", b"- x\n- y\n"]),
)
odd_names = st.one_of(
    st.sampled_from(["p.txt", "p.jsonl", "p.json", "p", "p.yaml"]),
    st.text(min_size=1, max_size=12).map(lambda t: t.replace("/", "_")),
)
odd_paths = st.one_of(
    st.sampled_from(["", ".", "..", "/", "~", "~nobody-at-all/x", "missing/p.txt", "a\x00b", "x" * 300,
                     "file/under", "dir", "dir/", "/proc/self/nope"]),
    st.text(max_size=16),
)


@pytest.fixture
def fuzz_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "dir").mkdir()
    (root / "file").write_text("x")
    return root


@FUZZ
@given(content=contents, name=odd_names)
def test_read_prompts_from_any_file(fuzz_dir, content, name):
    path = fuzz_dir / "dir" / name
    try:
        path.write_bytes(content)
    except (OSError, ValueError):  # a name no file can have: nothing to read
        assume(False)
    prompts = outcome(read_prompts, path)
    if prompts is not None:
        assert isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)
        outcome(check_prompts, prompts)


@FUZZ
@given(text=st.one_of(st.text(ANY_CHARACTER, max_size=20), st.lists(st.text(ANY_CHARACTER, max_size=8), max_size=3),
                     st.lists(junk, max_size=2), junk))
def test_check_prompts_refuses_what_a_tokenizer_cannot_encode(text):
    prompts = outcome(check_prompts, text)
    if prompts is not None:
        assert prompts and all(p.strip() for p in prompts)
        for p in prompts:
            p.encode("utf-8")  # no lone surrogates: every prompt is text a tokenizer can read


@FUZZ
@given(relative=odd_paths, content=st.text(max_size=10))
def test_file_layer_on_any_path(fuzz_dir, relative, content, monkeypatch):
    assume(".." not in relative and (not relative.startswith("/proc") or "nope" in relative))
    monkeypatch.chdir(fuzz_dir)
    path = relative if relative.startswith(("/", "~")) else os.path.join(str(fuzz_dir), relative)
    for reader in (files.read_bytes, files.read_text, files.read_json, files.read_yaml):
        outcome(reader, path, "input")
    outcome(read_prompts, path)
    outcome(files.check_input_file, path, "input")
    outcome(files.check_output_file, path, "output")
    outcome(files.check_output_dir, path, "output folder")
    if not relative.startswith(("/", "~")):  # write only inside the fixture's folder
        written = outcome(files.write_text, path, content, "output")
        if written is not None:
            assert Path(written).read_bytes() == content.encode("utf-8")
        outcome(files.make_dir, os.path.join(path, "sub"), "output folder")


# --- objectives -----------------------------------------------------------------------------------------------------

kinds = st.sampled_from(["length", "concise", "sentiment", "readability", "rouge", "safety", "profanity", "nope", "",
                         "length,unit=words", "9bad", "LENGTH"])
keys = st.sampled_from(["unit", "target", "name", "range", "clip", "higher_is_better", "colour", ""])
values = st.one_of(st.sampled_from(["words", "tokens", "chars", "parsecs", "30", "-1", "nan", "inf", "1e400", "true",
                                    "0..1", "1..0", "a..b", "0.5..0.5", "x,y", "", "ok-name", "9"]),
                   st.text(max_size=6))
specs = st.one_of(
    st.builds(lambda kind, items: kind + (":" + ",".join(f"{k}={v}" for k, v in items) if items else ""),
              kinds, st.lists(st.tuples(keys, values), max_size=3)),
    st.text(max_size=16).filter(lambda s: not s.strip().lower().startswith(("hf", "nli", "relevance", "python"))),
)


@FUZZ
@given(spec_list=st.one_of(st.lists(specs, max_size=3), specs))
def test_objectives_build(spec_list):
    objectives = outcome(build, spec_list)
    if objectives is not None:
        assert isinstance(objectives, ObjectiveSet) and len(set(objectives.names)) == len(objectives.names)
        scores = outcome(objectives.score, ["a prompt"], ["a response"])
        if scores is not None:
            assert tuple(scores.shape) == (1, len(objectives.names))


@FUZZ
@given(spec=st.one_of(specs, st.text(max_size=20), junk))
def test_split_spec(spec):
    parsed = outcome(split_spec, spec)
    if parsed is not None:
        kind, positional, params = parsed
        assert isinstance(kind, str) and kind and isinstance(params, dict)


# --- CLP's conditioning ---------------------------------------------------------------------------------------------

@FUZZ
@given(weights=weights_like, alpha=st.one_of(st.none(), st.floats(), st.lists(st.floats(), max_size=3)),
       f_mix=st.sampled_from(["softmdp", "linear", "nope", ""]), alpha_min=numbers)
def test_mix_coefficients(weights, alpha, f_mix, alpha_min):
    mixed = outcome(mix_coefficients, weights, alpha, f_mix, alpha_min)
    if mixed is not None:
        copies, ref = mixed
        assert bool(torch.isfinite(copies).all()) and bool(((ref >= 0) & (ref <= 1)).all())
        total = copies.sum(-1) + ref
        assert torch.allclose(total, torch.ones_like(total), atol=1e-6)  # Eq. 3's coefficients sum to one


@pytest.mark.parametrize("alpha", ["0.5", b"x", {"a": 1}])
def test_mix_coefficients_refuses_a_non_numeric_alpha(alpha):
    outcome(mix_coefficients, [0.5, 0.5], alpha, "softmdp", 0.1)


@FUZZ
@given(text=st.one_of(
    st.sampled_from(["full", "attn", "logit", "lora", "lora:attn", "layers:0-3", "attn:2", "layers:3-1", "regex:(",
                     "regex:.*q_proj", "layers:x", "lora:lora:full", " full ", "regex:"]),
    st.builds(lambda head, rest: f"{head}:{rest}", st.sampled_from(["layers", "attn", "lora", "regex", "full"]),
              st.text(string.digits + "-:() abc", max_size=8)),
    st.text(max_size=12), junk))
def test_parse_selector(text):
    outcome(parse_selector, text)


def test_parse_selector_refuses_a_huge_regex_repetition():
    outcome(parse_selector, "regex:q{4294967296}")
