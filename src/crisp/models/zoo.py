"""Model zoo: segmentation architectures, encoders and losses of segmentation_models.pytorch by name.

Every network has one input channel (the normalised micrograph) and two output classes
(background 0, particle 1) with per-class logits, as the dense CRF needs them. Nothing is ever
downloaded: encoders start from random weights unless a local state-dict file is given
(:func:`load_encoder_weights`).

Names are case-insensitive; ``unet++`` / ``unetplusplus``, ``deeplabv3+`` / ``deeplabv3plus`` and
``fpn`` etc. are accepted. Encoders are smp's own names (``resnet18``, ``efficientnet-b5``, ...)
or any timm model as ``tu-NAME`` (e.g. ``tu-mobilenetv3_small_100``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from crisp.errors import CrispError
from crisp.models.losses import (  # noqa: F401 - re-exported: the losses used to live here
    LOSS_ALIASES,
    LOSS_NAMES,
    LOSSES,
    build_loss,
    parse_loss_spec,
    resolve_loss,
    single_loss,
)

# never let huggingface_hub / timm reach the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IN_CHANNELS = 1
NUM_CLASSES = 2

#: alias -> smp architecture key (smp's MODEL_ARCHITECTURES_MAPPING keys are lower-case class names)
ARCH_ALIASES = {
    "unet++": "unetplusplus",
    "unet-plus-plus": "unetplusplus",
    "unetpp": "unetplusplus",
    "deeplabv3+": "deeplabv3plus",
    "deeplab-v3+": "deeplabv3plus",
    "deeplab": "deeplabv3",
}

#: encoders whose parameter counts ``crisp models`` shows without ``--counts``
CURATED_ENCODERS = (
    "resnet18", "resnet34", "resnet50", "efficientnet-b0", "efficientnet-b5",
    "timm-efficientnet-b0", "mobilenet_v2", "tu-mobilenetv3_small_100", "tu-resnet18",
)

#: architectures whose decoder takes a ``decoder_channels`` list of length ``encoder_depth``
_DECODER_CHANNELS_BY_DEPTH = {"unet": (256, 128, 64, 32, 16), "unetplusplus": (256, 128, 64, 32, 16),
                              "manet": (256, 128, 64, 32, 16)}

_LOSS_ALIASES = LOSS_ALIASES


def _smp():
    import segmentation_models_pytorch as smp

    return smp


def architecture_names() -> list[str]:
    """Canonical (lower-case) names of every smp architecture installed."""
    return sorted(_smp().MODEL_ARCHITECTURES_MAPPING)


def resolve_architecture(name: str) -> str:
    """Canonical smp key of architecture ``name`` (case-insensitive, aliases allowed)."""
    key = name.strip().lower().replace("_", "")
    key = ARCH_ALIASES.get(key, key)
    names = architecture_names()
    if key not in names:
        aliases = ", ".join(sorted(ARCH_ALIASES))
        raise CrispError(f"unknown architecture '{name}'; choose one of: {', '.join(names)} "
                         f"(aliases: {aliases})")
    return key


def encoder_names() -> list[str]:
    """smp's own encoder names (any timm model is also accepted as ``tu-NAME``)."""
    return sorted(_smp().encoders.get_encoder_names())


def _check_encoder(name: str) -> None:
    if name.startswith("tu-"):
        import timm

        model = name[3:].split(".")[0]
        if not timm.list_models(model):
            raise CrispError(f"unknown timm encoder '{name}' (no timm model named '{model}'); "
                             "see `timm.list_models()` for names")
        return
    if name not in encoder_names():
        raise CrispError(f"unknown encoder '{name}'; choose one of: {', '.join(encoder_names())}, "
                         "or any timm model as 'tu-NAME'")


def build_model(arch: str, encoder: str, *, encoder_depth: int | None = None,
                encoder_weights: str | os.PathLike[str] | None = None,
                arch_params: dict[str, Any] | None = None):
    """Create an smp segmentation model with 1 input channel and 2 output classes (logits).

    Parameters
    ----------
    arch
        Architecture name (see :func:`architecture_names`), case-insensitive, aliases allowed.
    encoder
        smp encoder name or ``tu-<timm model>``.
    encoder_depth
        Number of encoder stages (default: the architecture's own). For Unet, Unet++ and MAnet
        the decoder channels are cut to the same length automatically.
    encoder_weights
        Path of a local state-dict file for the encoder (see :func:`load_encoder_weights`);
        ``None`` (default) keeps random weights. Nothing is downloaded.
    arch_params
        Further keyword arguments of the smp architecture (e.g. ``decoder_attention_type``).

    Raises
    ------
    CrispError
        Unknown architecture or encoder, or a combination smp rejects.
    """
    key = resolve_architecture(arch)
    _check_encoder(encoder)
    kwargs: dict[str, Any] = dict(arch_params or {})
    if encoder_depth is not None:
        kwargs["encoder_depth"] = int(encoder_depth)
        if key in _DECODER_CHANNELS_BY_DEPTH and "decoder_channels" not in kwargs:
            kwargs["decoder_channels"] = _DECODER_CHANNELS_BY_DEPTH[key][-int(encoder_depth):]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _smp().create_model(key, encoder_name=encoder, encoder_weights=None,
                                        in_channels=IN_CHANNELS, classes=NUM_CLASSES, **kwargs)
    except (KeyError, ValueError, RuntimeError, AssertionError, TypeError, AttributeError) as err:
        raise CrispError(f"architecture '{arch}' cannot be built with encoder '{encoder}' "
                         f"and options {kwargs}: {err}") from None
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    prune_unused_encoder_modules(model)
    return model


def prune_unused_encoder_modules(model, input_px: int = 64) -> int:
    """Replace encoder submodules that the model never uses by ``nn.Identity``; return the parameters removed.

    smp's own encoders keep every stage when ``encoder_depth`` is below 5 (a U-Net with ResNet-18 at
    depth 4 carries ResNet's ``layer4``, 8.4 M of its 12.0 M parameters, which no forward pass
    touches): they would inflate parameter counts and checkpoints. A forward and backward pass on a
    ``input_px`` square of zeros (eval mode, so batch norm takes one sample) finds them: a submodule is
    removed when it was never called and none of its parameters received a gradient. (Modules that run
    but whose output is discarded, such as the first blocks of EfficientNet's next stage, are kept:
    replacing them could break the code that calls them.) Outputs are unchanged, and no random numbers
    are drawn, so the same seed gives the same network.
    """
    import torch

    encoder = getattr(model, "encoder", None)
    if encoder is None:
        return 0
    called: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, _inp, _out: called.add(id(mod))) for m in encoder.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            model(torch.zeros(1, IN_CHANNELS, input_px, input_px)).float().sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    used = {id(p) for p in model.parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    removed, pruned = 0, []
    for name, module in list(encoder.named_modules()):
        if not name or any(name.startswith(prefix + ".") for prefix in pruned):
            continue
        params = list(module.parameters())
        if params and id(module) not in called and not any(id(p) in used for p in params):
            parent_name, _, attr = name.rpartition(".")
            parent = encoder.get_submodule(parent_name) if parent_name else encoder
            setattr(parent, attr, torch.nn.Identity())
            removed += sum(p.numel() for p in params)
            pruned.append(name)
    return removed


def load_network_state(network, state: dict, source: str | os.PathLike[str] | None = None) -> None:
    """Load a state dict strictly, except for encoder modules pruned since it was written.

    Every parameter and buffer of ``network`` must be in ``state`` with the right shape. Keys of
    ``state`` that ``network`` lacks are ignored only where ``network`` holds an ``nn.Identity``
    (a stage removed by :func:`prune_unused_encoder_modules`); any other extra key (e.g. CRF
    weights that ``network`` has no CRF for) is an error, so nothing is dropped silently.

    Raises
    ------
    CrispError
        Missing, unexpected or shape-mismatched keys (the checkpoint belongs to another network),
        summarised in one line naming ``source``.
    """
    import torch

    own = network.state_dict()
    pruned = tuple(name + "." for name, module in network.named_modules()
                   if name and isinstance(module, torch.nn.Identity))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.startswith(pruned)]
    mismatched = [k for k in own if k in state and hasattr(state[k], "shape")
                  and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("shape-mismatched", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise CrispError("the checkpoint does not fit this network: " + ", ".join(parts) + " keys", source)
    try:
        network.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    except RuntimeError as err:
        raise CrispError(f"the checkpoint does not fit this network: {str(err).splitlines()[0]}",
                         source) from None


def safe_torch_load(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    Only tensors and plain Python values are read; a file that holds other pickled objects (which
    unpickling could turn into running code) is refused without unpickling them, and so is an empty,
    truncated or foreign file. ``what`` names the file in the messages ("checkpoint", ...).

    Raises
    ------
    CrispError
        Missing, empty, unsafe or unreadable file.
    """
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise CrispError(f"{what} not found", path)
    if path.stat().st_size == 0:
        raise CrispError(f"empty {what} (0 bytes; an interrupted copy?)", path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():
            raise CrispError(f"not a plain-tensor {what}: it holds pickled Python objects, which are not "
                             "loaded because unpickling them could run code", path) from None
        raise CrispError(f"not a readable PyTorch {what} (not a torch.save file)", path) from None
    except Exception:  # noqa: BLE001 - truncated, foreign or unreadable files alike
        raise CrispError(f"not a readable PyTorch {what} (truncated, or not made by torch.save)",
                         path) from None


def load_encoder_weights(model, path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Load a local state-dict file into ``model.encoder`` (non-strict) and report what matched.

    A 3-channel first convolution in the file is adapted to the single input channel by summing
    over its input channels. Keys may carry an ``encoder.`` prefix (a whole smp model's state dict)
    or none (an encoder's state dict). Tensors whose shapes do not match are skipped.

    Returns
    -------
    dict
        ``missing`` (encoder keys not in the file), ``unexpected`` (file keys not in the encoder)
        and ``mismatched`` (keys whose shapes differ), each a list of key names.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CrispError("encoder weights file not found", path)
    state = safe_torch_load(path, "encoder weights file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CrispError("expected a state dict (a mapping of names to tensors)", path)
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    adapted, mismatched = {}, []
    for key, value in state.items():
        if key not in own or not hasattr(value, "shape"):
            adapted[key] = value
            continue
        target = own[key]
        if (value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            value = value.sum(dim=1, keepdim=True)
        if value.shape != target.shape:
            mismatched.append(key)
            continue
        adapted[key] = value
    # torch's own loader: some smp encoders override load_state_dict and return nothing
    result = torch.nn.Module.load_state_dict(model.encoder, adapted, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "mismatched": mismatched}
    if not any(key in own for key in adapted):
        raise CrispError("no encoder weights matched the model's encoder (wrong encoder name?)", path)
    if report["missing"] or report["unexpected"] or mismatched:
        warnings.warn(f"{path}: encoder weights loaded non-strictly: {len(report['missing'])} missing, "
                      f"{len(report['unexpected'])} unexpected, {len(mismatched)} shape-mismatched keys",
                      stacklevel=2)
    return report


def parameter_count(module) -> int:
    """Number of parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))


def encoder_parameter_count(name: str, depth: int = 5) -> int:
    """Parameter count of encoder ``name`` built with random weights and 1 input channel."""
    _check_encoder(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enc = _smp().encoders.get_encoder(name, in_channels=IN_CHANNELS, depth=depth, weights=None)
    except Exception as err:  # noqa: BLE001 - report any construction failure
        raise CrispError(f"encoder '{name}' cannot be built: {err}") from None
    return parameter_count(enc)


# ------------------------------------------------------------------------------------------ losses
# the loss registry lives in crisp.models.losses; these names stay importable from here
_resolve_loss = resolve_loss
