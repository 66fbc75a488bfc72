"""Training losses by name (a registry) and weighted sums of them (``"dice+0.5*focal"``).

Every loss works in multiclass mode on per-class logits ``[B, C, H, W]`` and integer labels
``[B, H, W]``, and returns a scalar. Labels are 0 (background), 1 (particle) or
:data:`~crisp.dataset.UNLABELLED` (255): the segmentation losses ignore unlabelled pixels (their
``ignore_index``), and the positive-unlabelled loss ``nnpu`` (:mod:`crisp.models.pu_loss`) learns from
them. :data:`LOSSES` maps a name to a :class:`LossEntry` (a factory
taking the loss's keyword parameters, its aliases, one line of description). Names are
case-insensitive. A new loss is one entry.

A loss specification (:func:`parse_loss_spec`) is one of

* a string: terms joined by ``+``, each ``NAME`` or ``WEIGHT*NAME`` (``"dice"``, ``"dice+0.5*focal"``);
* a mapping ``{name, weight, params}`` (``weight`` defaults to 1, ``params`` are the factory's
  keyword arguments, e.g. ``{name: tversky, params: {alpha: 0.3, beta: 0.7}}``);
* a list of such mappings.

Weights must be finite and positive. Anything else, an unknown name or parameters the loss does not
take (found by evaluating the loss once on a fixed tiny input in :func:`build_loss`) is a
:class:`~crisp.errors.CrispError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crisp.errors import CrispError

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "LOSS_ALIASES",
    "LOSS_NAMES",
    "LossEntry",
    "PRIOR_LOSSES",
    "WeightedLoss",
    "build_loss",
    "needs_prior",
    "parse_loss_spec",
    "resolve_loss",
    "single_loss",
]


#: label value of unlabelled pixels (crisp.dataset.UNLABELLED), ignored by the segmentation losses
IGNORE_INDEX = 255


def _smp_loss(class_name: str) -> Callable[..., Any]:
    """Factory of smp's loss ``class_name`` in multiclass mode, unlabelled pixels ignored."""

    def factory(**params: Any):
        import segmentation_models_pytorch as smp

        params.setdefault("ignore_index", IGNORE_INDEX)
        return getattr(smp.losses, class_name)(smp.losses.MULTICLASS_MODE, **params)

    factory.__name__ = f"smp_{class_name}"
    return factory


def _cross_entropy(**params: Any):
    params.setdefault("ignore_index", IGNORE_INDEX)
    return nn.CrossEntropyLoss(**params)


def _nnpu(**params: Any):
    from crisp.models.pu_loss import NonNegativePULoss

    return NonNegativePULoss(**params)


def _nnpu_bce(**params: Any):
    params.setdefault("surrogate", "logistic")
    return _nnpu(**params)


@dataclass(frozen=True)
class LossEntry:
    """One registered loss: ``factory(**params)`` returns a module ``(logits, labels) -> scalar``."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""


#: name -> loss; a new loss is one entry here
LOSSES: dict[str, LossEntry] = {
    entry.name: entry
    for entry in (
        LossEntry("dice", _smp_loss("DiceLoss"), (), "1 - soft Dice (smp DiceLoss)"),
        LossEntry("jaccard", _smp_loss("JaccardLoss"), ("iou",), "1 - soft IoU (smp JaccardLoss)"),
        LossEntry("tversky", _smp_loss("TverskyLoss"), (), "Tversky loss, params alpha and beta (smp)"),
        LossEntry("lovasz", _smp_loss("LovaszLoss"), (), "Lovasz hinge of the IoU (smp LovaszLoss)"),
        LossEntry(
            "cross-entropy",
            _cross_entropy,
            ("ce", "crossentropy", "cross_entropy"),
            "pixel-wise cross-entropy (torch CrossEntropyLoss)",
        ),
        LossEntry("focal", _smp_loss("FocalLoss"), (), "focal loss, params alpha and gamma (smp FocalLoss)"),
        LossEntry("nnpu", _nnpu, ("pu",), "non-negative positive-unlabelled risk (Kiryo et al. 2017) of "
                  "particle vs unlabelled pixels; class prior from --expected-particles "
                  "(crisp.models.pu_loss)"),
        LossEntry("nnpu-bce", _nnpu_bce, ("nnpu-logistic",), "nnpu with the logistic surrogate: the binary "
                  "cross-entropy of sigmoid(margin) in place of Kiryo et al.'s bounded sigmoid"),
    )
}
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)
LOSS_ALIASES: dict[str, str] = {alias: e.name for e in LOSSES.values() for alias in e.aliases}

_TERM = re.compile(r"^\s*(?:([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?([A-Za-z][A-Za-z0-9_\-]*)\s*$")
_TERM_KEYS = {"name", "weight", "params"}


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` (or the string itself, unprintable characters escaped) cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_loss(name: Any) -> str:
    """Canonical registry name of loss ``name`` (case-insensitive, aliases allowed)."""
    if not isinstance(name, str):
        raise CrispError(f"a loss name must be a string, got {_short(name)}")
    key = name.strip().lower()
    key = LOSS_ALIASES.get(key, key)
    if key not in LOSSES:
        aliases = ", ".join(f"{a}={n}" for a, n in LOSS_ALIASES.items())
        raise CrispError(f"unknown loss '{_short(name)}'; choose one of: {', '.join(LOSS_NAMES)} "
                         f"(aliases: {aliases})")
    return key


def _weight(value: Any, term: Any) -> float:
    if isinstance(value, bool):
        raise CrispError(f"loss weight must be a number, got {_short(value)} in {_short(term)}")
    try:
        weight = float(value)
    except (TypeError, ValueError, OverflowError):
        raise CrispError(f"loss weight must be a number, got {_short(value)} in {_short(term)}") from None
    if not math.isfinite(weight) or weight <= 0:
        raise CrispError(f"loss weight must be finite and positive, got {_short(value)} in {_short(term)}")
    return weight


def single_loss(name: str, **params: Any):
    """One loss module by name, multiclass mode on ``[B, C, H, W]`` logits and ``[B, H, W]`` labels.

    ``tversky`` takes ``alpha`` and ``beta``; ``focal`` ``alpha`` and ``gamma``; the others smp's own
    keyword arguments. ``cross-entropy`` is torch's :class:`~torch.nn.CrossEntropyLoss`.
    """
    key = resolve_loss(name)
    try:
        return LOSSES[key].factory(**params)
    except (TypeError, ValueError, AssertionError, AttributeError, KeyError) as err:
        raise CrispError(f"bad parameters {_short(params)} for loss '{name}': {_short(str(err))}") from None


def parse_loss_spec(spec: str | list | dict) -> list[dict[str, Any]]:
    """Normalise a loss specification to a list of ``{name, weight, params}`` terms.

    Accepted: ``"dice"``, ``"dice+0.5*focal"``, a dict ``{name, weight, params}`` or a list of them
    (see the module docstring). Anything else is a :class:`CrispError`.
    """
    if isinstance(spec, Mapping):
        spec = [spec]
    if isinstance(spec, str):
        terms = []
        for part in spec.split("+"):
            match = _TERM.match(part)
            if not match:
                raise CrispError(
                    f"cannot parse loss '{_short(spec)}' (expected e.g. 'dice' or 'dice+0.5*focal')"
                )
            weight = _weight(match.group(1), spec) if match.group(1) else 1.0
            terms.append({"name": resolve_loss(match.group(2)), "weight": weight, "params": {}})
        return terms
    if not isinstance(spec, (list, tuple)):
        raise CrispError("a loss is a name such as 'dice+0.5*focal', a mapping or a list of mappings, "
                         f"got {_short(spec)}")
    terms = []
    for item in spec:
        if not isinstance(item, Mapping) or "name" not in item:
            raise CrispError(f"loss terms must be mappings with a 'name' (got {_short(item)})")
        extra = set(item) - _TERM_KEYS
        if extra:
            raise CrispError(f"unknown keys {sorted(map(str, extra))} in loss term {_short(item)}")
        params = item.get("params") or {}
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise CrispError(f"loss params must be a mapping of names to values (got {_short(params)})")
        terms.append({"name": resolve_loss(item["name"]), "weight": _weight(item.get("weight", 1.0), item),
                      "params": dict(params)})
    if not terms:
        raise CrispError("empty loss specification")
    return terms


#: terms that need the class prior of the training set (filled in by :func:`build_loss`'s ``prior``)
PRIOR_LOSSES = ("nnpu", "nnpu-bce")


def needs_prior(spec: str | list | dict) -> bool:
    """Whether a loss specification holds a term that needs the class prior and does not set it."""
    return any(t["name"] in PRIOR_LOSSES and "prior" not in t["params"] for t in parse_loss_spec(spec))


class WeightedLoss(nn.Module):
    """``sum_k w_k loss_k(logits, labels)`` over the terms of a parsed specification."""

    def __init__(self, terms: list[dict[str, Any]]) -> None:
        super().__init__()
        self.terms = nn.ModuleList(single_loss(t["name"], **t["params"]) for t in terms)
        self.weights = [t["weight"] for t in terms]
        self.names = [t["name"] for t in terms]

    def forward(self, logits, labels):
        total = 0.0
        for weight, term in zip(self.weights, self.terms, strict=True):
            total = total + weight * term(logits, labels)
        return total


def _probe(loss: WeightedLoss, terms: list[dict[str, Any]]) -> None:
    """Evaluate ``loss`` once on a fixed 2-class 4x4 input (no random numbers).

    Refused (:class:`CrispError`): an exception, a value that is not a single number, a non-finite value.
    """
    labels = torch.tensor([[0, 0, 1, 1]] * 4).unsqueeze(0)
    logits = torch.stack([1.0 - labels.float(), labels.float()], dim=1) * 0.5
    for term, module in zip(terms, loss.terms, strict=True):
        try:
            with torch.no_grad():
                value = torch.as_tensor(module(logits, labels))
            finite = bool(torch.isfinite(value).all())
        except Exception as err:  # noqa: BLE001 - any failure means the parameters do not fit the loss
            reason = str(err).splitlines()[0] if str(err) else ""
            raise CrispError(f"loss '{term['name']}' with params {_short(term['params'])} cannot be "
                             f"evaluated: {type(err).__name__}: {_short(reason)}") from None
        if value.dim() != 0:
            raise CrispError(f"loss '{term['name']}' with params {_short(term['params'])} gives a tensor of "
                             f"shape {tuple(value.shape)}, not one number (reduction?)")
        if not finite:
            raise CrispError(
                f"loss '{term['name']}' with params {_short(term['params'])} gives a non-finite value"
            )


def build_loss(spec: str | list | dict, prior: Mapping[str, float] | None = None) -> WeightedLoss:
    """A module ``loss(logits [B, 2, H, W], labels [B, H, W] long) -> scalar``: a weighted sum.

    ``prior``: ``{"prior": pi, "labelled": lambda}`` of the training set (fractions of its pixels that
    are particle, and that are labelled particle), given to the terms of :data:`PRIOR_LOSSES` that
    do not set them; such a term without a prior is a :class:`CrispError`.

    The loss is evaluated once on a fixed tiny input, so that parameters it cannot use are a
    :class:`CrispError` here rather than a traceback in the first training step.
    """
    terms = parse_loss_spec(spec)
    for term in terms:
        if term["name"] in PRIOR_LOSSES and "prior" not in term["params"]:
            if prior is None:
                raise CrispError(f"loss '{term['name']}' needs the class prior: give the expected number "
                                 "of particles per micrograph (--expected-particles N) or the loss "
                                 "parameter 'prior'")
            term["params"] = {**dict(prior), **term["params"]}
    loss = WeightedLoss(terms)
    _probe(loss, terms)
    return loss
