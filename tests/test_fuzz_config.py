"""Fuzzing the config loader and the loss parser: a valid result or CrispError, never another exception.

* :func:`crisp.config.read_yaml` / :func:`crisp.config.load_config` / :func:`crisp.training.make_config`
  get arbitrary bytes, YAML with syntax errors, non-UTF-8 bytes, wrong types, unknown keys, NaN, inf
  and huge values. They return a mapping or a config that validates again, or raise
  :class:`CrispError` whose ``path`` is the file and whose message is one line.
* :func:`crisp.models.losses.build_loss` gets any string, list or dict. It returns a loss that gives
  one finite number with gradients on a random batch, or raises :class:`CrispError`.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crisp.config import load_config, read_yaml
from crisp.errors import CrispError
from crisp.models import losses as L
from crisp.models.crf import CRFConfig
from crisp.training.config import TrainConfig, make_config

# CRISP_FUZZ_EXAMPLES=1000 for a longer hunt; 60 keeps the suite fast
FUZZ = settings(max_examples=int(os.environ.get("CRISP_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def _file(content: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(content)
        yield path


def _expect_crisp_error_or(fn, path: Path):
    """``fn()``'s result, or None after a CrispError that names ``path`` in one line."""
    try:
        return fn()
    except CrispError as err:
        assert err.path == str(path), err
        assert str(err).startswith(f"{path}: ")
        assert "\n" not in str(err) and "Traceback" not in str(err), str(err)
        return None


def _floats_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_floats_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_floats_finite(v) for v in value)
    return True


# ------------------------------------------------------------------------------------------ values
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0]),
    st.text(max_size=12), st.sampled_from(["crf", "cd-crf", "none", "frank-wolfe", "dice", "1e999", "nan"]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
_CRF_KEYS = st.sampled_from([*CRFConfig.model_fields, "colour", "kind ", "Kind"])
_TRAIN_KEYS = st.sampled_from([*TrainConfig.model_fields, "lr_typo", "crf.kind", ""])
_CRF_MAPPINGS = st.dictionaries(_CRF_KEYS, _VALUES, max_size=5)
_TRAIN_MAPPINGS = st.dictionaries(
    _TRAIN_KEYS, st.one_of(_VALUES, _CRF_MAPPINGS), max_size=6)

# YAML fragments that break or stretch the syntax, and bytes that are not UTF-8
_YAML_TOKENS = st.sampled_from([
    "kind: crf\n", "crf:\n  kind: cd-crf\n", "lr: .inf\n", "lr: .nan\n", "epochs: 1e999\n", ": x\n",
    "a: [1, 2\n", "{", "}", "- item\n", "\t", "  ", "&anchor ", "*anchor", "*missing\n",
    "!!python/object:os.system x\n", "!!binary ===\n", "? [a]\n: 1\n", "<<: 5\n", "d: 2001-02-30\n",
    "big: " + "9" * 5000 + "\n", "%YAML 9.9\n", "---\n", "...\n", "'unclosed\n", '"\\x"\n', "\x00",
    "é: ü\n", "k: v\n", "k: v\n",
])
_YAML_TEXTS = st.lists(_YAML_TOKENS, max_size=8).map("".join)
_NOT_UTF8 = st.sampled_from([b"\xff\xfe", b"kind: \xe9\n", b"\x80", b"\xc3", b"\xed\xa0\x80"])
_CONTENTS = st.one_of(
    st.binary(max_size=200),
    _YAML_TEXTS.map(lambda t: t.encode("utf-8")),
    st.tuples(_YAML_TEXTS, _NOT_UTF8, _YAML_TEXTS).map(lambda p: p[0].encode() + p[1] + p[2].encode()),
    _TRAIN_MAPPINGS.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8")),
    _CRF_MAPPINGS.map(lambda d: yaml.safe_dump(d).encode("utf-8")),
)


@FUZZ
@given(content=_CONTENTS)
@example(content=b"a: [1, 2\n")  # a YAML syntax error
@example(content=b"kind: \xe9\n")  # Latin-1, not UTF-8
@example(content=b"d: 2001-02-30\n")  # PyYAML's timestamp constructor raises ValueError
@example(content=("big: " + "9" * 5000 + "\n").encode())  # int() refuses over 4300 digits: ValueError
@example(content=b"[" * 2000)  # nesting deep enough for a RecursionError
@example(content=b"!!python/object/apply:os.system [echo]\n")
@example(content=b"- 1\n- 2\n")  # not a mapping
def test_read_yaml_gives_a_mapping_or_a_crisp_error(content):
    with _file(content) as path:
        data = _expect_crisp_error_or(lambda: read_yaml(path), path)
        assert data is None or isinstance(data, dict)


@FUZZ
@given(content=_CONTENTS)
@example(content=b"theta_alpha: 1e300\nkind: crf\n")
@example(content=b"kind: crf\nw_appearance: .nan\n")
@example(content=b"kind: crf\ntheta_gamma: .inf\n")
@example(content=b"kind: gibbs\n")
@example(content=b"1: 2\n")  # a key that is not a string
def test_crf_config_loads_or_names_the_file(content):
    with _file(content) as path:
        config = _expect_crisp_error_or(lambda: load_config(CRFConfig, path), path)
        if config is not None:
            assert CRFConfig.model_validate(config.model_dump()) == config
            assert _floats_finite(config.model_dump())


@FUZZ
@given(content=_CONTENTS)
@example(content=b"crf: 5\n")
@example(content=b"crf:\n  kind: cd-crf\ninit: runs/a\n")
@example(content=b"loss: [1, 2]\nepochs: -1\n")
@example(content=b"patch_px: 100\n")
@example(content=b"preset: {}\n")  # make_config looked it up in PRESETS: TypeError, unhashable
def test_train_config_loads_or_names_the_file(content):
    with _file(content) as path:
        config = _expect_crisp_error_or(lambda: make_config(config_file=path), path)
        if config is not None:
            assert TrainConfig.model_validate(config.model_dump()) == config


def test_a_missing_file_is_named():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nope.yaml"
        with pytest.raises(CrispError, match="not found") as info:
            load_config(CRFConfig, path)
        assert info.value.path == str(path)


# ------------------------------------------------------------------------------------------ losses
_LOSS_WORDS = st.sampled_from([*L.LOSS_NAMES, *L.LOSS_ALIASES, "DICE", "Focal", "dise", "", " "])
_WEIGHTS = st.sampled_from(["", "0.5*", "2*", "1e3*", "0*", "1e999*", "-1*", ".5 * ", "nan*", "*", "1e-400*"])
_LOSS_STRINGS = st.one_of(
    st.text(max_size=30),
    st.lists(st.tuples(_WEIGHTS, _LOSS_WORDS).map("".join), min_size=1, max_size=4).map("+".join),
)
_PARAM_NAMES = st.sampled_from(["alpha", "beta", "gamma", "smooth", "eps", "from_logits", "ignore_index",
                                "log_loss", "reduction", "weight", "label_smoothing", "mode", "classes",
                                "normalized", "reduced_threshold", "per_image", "colour"])
_PARAM_VALUES = st.one_of(_SCALARS, st.sampled_from(["mean", "sum", "none", "binary"]),
                          st.lists(st.floats(-2, 2), max_size=3), st.floats(0, 1))
_TERMS = st.fixed_dictionaries(
    {"name": st.one_of(_LOSS_WORDS, _SCALARS)},
    optional={"weight": st.one_of(_SCALARS, st.floats(0.01, 10)),
              "params": st.one_of(st.dictionaries(_PARAM_NAMES, _PARAM_VALUES, max_size=2), _VALUES),
              "extra": _VALUES},
)
_LOSS_SPECS = st.one_of(_LOSS_STRINGS, _TERMS, st.lists(st.one_of(_TERMS, _VALUES), max_size=3), _VALUES)


@FUZZ
@given(spec=_LOSS_SPECS)
@example(spec="dice+0.5*focal")
@example(spec=[{"name": "tversky", "params": {"alpha": 0.3, "beta": 0.7}}])
@example(spec=[{"name": "dice", "params": {"smooth": "x"}}])
@example(spec=[{"name": "cross-entropy", "params": {"reduction": "none"}}])
@example(spec={"name": "focal", "weight": float("inf")})
@example(spec=[{"name": None}])
@example(spec=17)
@example(spec="dice\n+focal+\x00")  # the message quoted the newline: two lines
def test_loss_parser_gives_a_loss_or_a_crisp_error(spec):
    try:
        loss = L.build_loss(spec)
    except CrispError as err:
        assert "\n" not in str(err)
        return
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=gen, requires_grad=True)
    labels = (torch.rand(2, 8, 8, generator=gen) > 0.5).long()
    value = loss(logits, labels)
    assert value.dim() == 0 and torch.isfinite(value)
    assert all(math.isfinite(w) and w > 0 for w in loss.weights)
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_a_key_with_line_breaks_is_named_on_one_line(tmp_path):
    """Found by the fuzz test above: a YAML key of two line breaks made a two-line error message."""
    from crisp.errors import CrispError
    from crisp.train import make_config

    path = tmp_path / "config.yaml"
    path.write_bytes(b"? '\n\n'\n")
    with pytest.raises(CrispError) as info:
        make_config(None, path)
    assert "\n" not in str(info.value) and "Extra inputs" in str(info.value)
