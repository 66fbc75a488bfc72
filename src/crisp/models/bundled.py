"""Pretrained models shipped inside the package, used by name: ``crisp segment general mics/ ...``.

A bundled model is an ordinary run folder (:class:`crisp.run.Run`) that lives in the package's data
(``crisp/data/models/NAME``) and is only ever read::

    NAME/config.yaml              the run's TrainConfig (``particle_diameter_px``: the diameter, in pixels
                                  of the network's grid, the model was trained for; None = not scaled)
    NAME/picker.yaml              its picker (``diameter_scaled: true``), when the run has one
    NAME/checkpoints/best.ckpt    the network (and CRF) state dict only, float16 (upcast on loading)
    NAME/summary.json             the training run's summary, when it has one
    NAME/MODEL_CARD.md            training data, settings, measurements, known failure modes

:func:`resolve_run` turns what a user typed as RUN into a folder: an existing path is that path;
otherwise a bundled name gives its package folder. :func:`export_bundled` (``python -m
crisp.models.bundled export RUN OUT``) writes such a folder from a trained run. Nothing writes into a
bundled folder: :func:`check_writable` refuses it, and the run writers call it.

Tests (and users with models of their own) add names with :func:`register_bundled` (a context
manager) or the environment variable :data:`ENV_VAR` (``name=path[:name=path...]``, ``os.pathsep``
separated).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from crisp.errors import CrispError
from crisp.models.bundled_names import (  # noqa: F401 - re-exported: the names live with the export
    BUNDLED,
    BUNDLED_DIR,
    ENV_VAR,
    bundled_models,
    bundled_name,
    check_writable,
    picker_path,
    register_bundled,
    resolve_run,
    sha256,
)

__all__ = ["BUNDLED", "BUNDLED_DIR", "ENV_VAR", "bundled_models", "bundled_name", "check_writable",
           "export_bundled", "half_state", "main", "picker_path", "register_bundled", "resolve_run", "sha256"]


# ------------------------------------------------------------------------------------------------ export
def half_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with floating tensors in float16 (integer buffers, e.g. batch counts, kept)."""
    import torch

    return {k: (v.detach().to(torch.float16).contiguous() if torch.is_tensor(v) and v.is_floating_point()
                else v) for k, v in state.items()}


def export_bundled(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                   model_card: str | None = None) -> Path:
    """Write run ``run_dir`` as a bundled-model folder ``out_dir`` (module docstring); return it.

    The best checkpoint keeps only the network's (and CRF's) state dict, its floating tensors in
    float16 (no optimizer state; :meth:`crisp.run.Run.network` upcasts them to float32), with the
    run's settings. The config drops ``init`` and ``encoder_weights`` (files of the training machine).
    The picker (when the run has one) is marked ``diameter_scaled`` when the run has
    ``particle_diameter_px``. ``model_card`` is the text of ``MODEL_CARD.md`` (None: a card made
    from the config and summary, to be completed by hand).

    Raises
    ------
    CrispError
        A bad run, or ``out_dir`` already holding files.
    """
    import torch

    from crisp.atomic import atomic_path, write_text_atomic
    from crisp.config import save_yaml
    from crisp.run import _STATE_KEY, BEST, PICKER_FILE, Run
    from crisp.training.module import CONFIG_KEY

    run = Run.load(run_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise CrispError("the export folder is not empty", out)
    data = run.read_checkpoint(BEST)
    run.network(BEST)  # the checkpoint fits the config (CrispError otherwise) before anything is written
    config = run.config.model_copy(update={"init": None, "encoder_weights": None})
    exported = Run(out)  # written directly (not through Run's writers, which refuse bundled folders)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(exported.config_path, config)
    state = half_state(data[_STATE_KEY])
    with atomic_path(exported.checkpoint_path(BEST)) as tmp:
        torch.save({_STATE_KEY: state, CONFIG_KEY: config.model_dump(mode="json"),
                    "crisp_export": {"dtype": "float16", "source_checkpoint_sha256":
                                     sha256(run.checkpoint_path(BEST))}}, tmp)
    picker = run.picker()
    if picker is not None:
        if config.particle_diameter_px is not None:
            picker = picker.model_copy(update={"diameter_scaled": True})
        save_yaml(out / PICKER_FILE, picker)
    if run.summary_path.is_file():
        write_text_atomic(exported.summary_path, run.summary_path.read_text(encoding="utf-8"))
    write_text_atomic(out / "MODEL_CARD.md", model_card if model_card is not None else
                      _default_card(run, config, exported.checkpoint_path(BEST)))
    return out


def _default_card(run, config, checkpoint: Path) -> str:
    import json

    summary = run.summary() if run.summary_path.is_file() else {}
    scale = ("not diameter-scaled" if config.particle_diameter_px is None else
             f"{config.particle_diameter_px:g} px per particle diameter on the network's grid")
    lines = ["# CRISP model card", "", "(generated by crisp.models.bundled.export_bundled: complete the "
             "training data, measurements and known failure modes by hand)", "",
             "## Network", "", f"- {config.arch}, encoder {config.encoder} (depth {config.encoder_depth}), "
             f"CRF {config.crf.kind}", f"- input: {config.normalize} normalisation, bin {config.bin}, "
             f"training pixel size {config.pixel_size} Å", f"- scale: {scale}",
             f"- weights: float16, {checkpoint.stat().st_size / 1e6:.2f} MB, sha256 {sha256(checkpoint)}",
             "", "## Training summary", "", "```", json.dumps(summary, indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m crisp.models.bundled export RUN OUT [--model-card FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m crisp.models.bundled",
                                     description="Export a training run as a bundled model folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write RUN as a bundled model folder OUT")
    export.add_argument("run")
    export.add_argument("out")
    export.add_argument("--model-card", default=None, help="Markdown file to ship as MODEL_CARD.md")
    args = parser.parse_args(argv)
    try:
        card = None
        if args.model_card is not None:
            card_path = Path(args.model_card)
            if not card_path.is_file():
                raise CrispError("model card file not found", card_path)
            card = card_path.read_text(encoding="utf-8")
        out = export_bundled(args.run, args.out, model_card=card)
    except CrispError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = (out / "checkpoints" / "best.ckpt").stat().st_size
    print(f"exported {args.run} to {out} (weights {size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
