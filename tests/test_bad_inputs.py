"""The table of bad inputs: every verb, given a bad file or option, says so in one line and exits 2.

Each case builds its own tiny inputs under a temporary folder and runs ``crisp.cli.main``; it must
return 2, print exactly one line on stderr (progress bars aside) that starts with ``error:`` and names
the file or option at fault, and print no traceback. The same list writes ``docs/bad_inputs.md``
with the message each case now gets::

    python tests/test_bad_inputs.py            # or: CRISP_WRITE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py

Cases of defects that another part of the core redesign fixes are marked ``xfail(strict=True)``
with the defect named, so that they flip to failures (and must be unmarked) once fixed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = "ROOT"  # placeholder for the case's temporary folder in argv and the expected name
_PROGRESS = re.compile(r"^[\w .-]+:\s+\d+%\|")  # a tqdm progress bar line


# ----------------------------------------------------------------------------------------------
# tiny inputs, made on demand inside one case's folder
# ----------------------------------------------------------------------------------------------
class Inputs:
    """Builders of small valid (and broken) inputs under ``root``; each returns the path it made."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, name: str = "a_file.txt", data: bytes = b"not a folder\n") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def mics(self, n: int = 2, shape: tuple[int, int] = (64, 64)) -> Path:
        from crisp.io.micrographs import write_mrc

        folder = self.root / "mics"
        rng = np.random.default_rng(0)
        for k in range(n):
            write_mrc(folder / f"m{k}.mrc", rng.normal(0, 1, shape).astype(np.float32), pixel_size=2.0)
        return folder

    def coords(self, n: int = 2) -> Path:
        import pandas as pd

        from crisp.io.coordinates import write_coordinates

        folder = self.root / "coords"
        for k in range(n):
            write_coordinates(pd.DataFrame({"rlnCoordinateX": [20.0, 40.0], "rlnCoordinateY": [20.0, 44.0]}),
                              folder / f"m{k}.star")
        return folder

    def dataset(self, maps_value: float | None = None) -> Path:
        """DATASET with micrographs/, masks/, coordinates/, split.yaml (val: m2, m3; test: m4)."""
        import pandas as pd

        from crisp.config import save_yaml
        from crisp.dataset import Split, write_split
        from crisp.io.coordinates import write_coordinates
        from crisp.io.micrographs import write_mrc

        ds = self.root / "ds"
        rng = np.random.default_rng(1)
        for k in range(5):
            write_mrc(ds / "micrographs" / f"m{k}.mrc", rng.normal(0, 1, (64, 64)).astype(np.float32),
                      pixel_size=2.0)
            mask = np.zeros((64, 64), np.uint8)
            mask[12:28, 12:28] = 1
            write_mrc(ds / "masks" / f"m{k}.mrc", mask)
            write_coordinates(pd.DataFrame({"rlnCoordinateX": [20.0], "rlnCoordinateY": [20.0]}),
                              ds / "coordinates" / f"m{k}.star")
        write_split(ds / "split.yaml", Split(train=["m0", "m1"], val=["m2", "m3"], test=["m4"], seed=0))
        save_yaml(ds / "labels.yaml", {"diameter_px": 16.0})
        return ds

    def maps(self, value: float | None = None, names=("m2", "m3", "m4"), raw: bool = False) -> Path:
        """Probability maps (float16 MRC) with a square blob, all ``value`` if given, or a raw
        micrograph (values outside [0, 1]) with ``raw``."""
        from crisp.io.micrographs import write_mrc

        folder = self.root / ("raw_maps" if raw else "maps")
        rng = np.random.default_rng(2)
        for name in names:
            if raw:
                prob = rng.normal(0, 1, (64, 64)).astype(np.float32)
            elif value is not None:
                prob = np.full((64, 64), value, np.float32)
            else:
                prob = np.zeros((64, 64), np.float32)
                prob[12:28, 12:28] = 0.9
            write_mrc(folder / f"{name}.mrc", prob, pixel_size=2.0,
                      dtype=np.float32 if raw else np.float16)
        return folder

    def picker(self) -> Path:
        from crisp.config import save_yaml
        from crisp.picking.tune import PickerConfig

        path = self.root / "picker.yaml"
        save_yaml(path, PickerConfig(finder="grid-nms", diameter_px=16.0))
        return path

    def picks(self) -> Path:
        """A PICKS_DIR made by `crisp pick` on :meth:`maps`."""
        from crisp.picking.files import pick_files
        from crisp.picking.tune import load_picker

        out = self.root / "picks"
        pick_files(self.maps(), out, load_picker(self.picker()), progress=False)
        return out

    def pngs(self, shape: tuple[int, int]) -> Path:
        from PIL import Image

        folder = self.root / "pngs"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("m2", "m3", "m4"):
            Image.fromarray(np.zeros(shape, np.uint8)).save(folder / f"{name}.png")
        return folder

    def yaml_syntax_error(self, name: str = "bad.yaml") -> Path:
        return self.file(name, b"epochs: 3\nloss: [dice\nlr: 0.1\n")

    def latin1(self, name: str = "latin1.yaml") -> Path:
        return self.file(name, "loss: dice  # r\xe9glage\n".encode("latin-1"))

    def run(self, checkpoint: bytes | None = None) -> Path:
        """A run folder: a valid config.yaml and, if given, checkpoints/best.ckpt with these bytes."""
        from crisp.config import save_yaml
        from crisp.train import TrainConfig

        run = self.root / "run"
        save_yaml(run / "config.yaml", TrainConfig())
        if checkpoint is not None:
            self.file("run/checkpoints/best.ckpt", checkpoint)
        return run

    def trained_run(self) -> Path:
        """A usable run folder: a tiny random-weight network saved as its best checkpoint."""
        from crisp.run import Run
        from crisp.train import make_config
        from crisp.training.module import build_network

        config = make_config("cpu", encoder_depth=3, bin=2, patch_px=64, val_overlap_px=16,
                             normalize="zscore")
        run = Run(self.root / "trained")
        run.save_network(build_network(config), config)
        return run.path

    def scaled_run(self) -> Path:
        """:meth:`trained_run` made diameter-scaled (a general model: 8 px per particle diameter)."""
        from crisp.run import Run

        return Run(self.trained_run()).copy_to(self.root / "scaled", particle_diameter_px=8.0).path

    def scaled_picker(self) -> Path:
        """The picker of a diameter-scaled model (``diameter_scaled``: needs the user's diameter)."""
        from crisp.config import save_yaml
        from crisp.picking.tune import PickerConfig

        path = self.root / "scaled_picker.yaml"
        save_yaml(path, PickerConfig(finder="grid-nms", diameter_px=8.0, diameter_scaled=True))
        return path


# ----------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: ``build(inputs)`` returns argv; the error line must contain ``names``
    (``ROOT`` stands for the case's folder)."""

    verb: str
    what: str
    build: Callable[[Inputs], list[str]]
    names: str
    xfail: str | None = None


def _s(path: Path) -> str:
    return str(path)


def _cases() -> list[Case]:
    c = []

    def add(verb, what, names, xfail=None):
        def wrap(build):
            c.append(Case(verb, what, build, names, xfail))
            return build
        return wrap

    # simulate ---------------------------------------------------------------------------------
    @add("simulate", "`--snr inf`", "--snr")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--snr", "inf"]

    @add("simulate", "`--count 0`", "--count")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--count", "0"]

    @add("simulate", "`--amplitude-contrast 1.5`", "amplitude contrast")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--amplitude-contrast", "1.5"]

    @add("simulate", "`--particles 10-abc`", "--particles")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--particles", "10-abc"]

    @add("simulate", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["simulate", "-o", _s(i.file())]

    @add("simulate", "`--config` with a YAML syntax error", "ROOT/bad.yaml")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--config", _s(i.yaml_syntax_error())]

    @add("simulate", "`--config` not UTF-8 (Latin-1)", "ROOT/latin1.yaml")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--config", _s(i.latin1())]

    @add("simulate", "`--map` missing", "ROOT/missing.mrc")
    def _(i): return ["simulate", "-o", _s(i.root / "sim"), "--map", _s(i.root / "missing.mrc")]

    # labels -----------------------------------------------------------------------------------
    @add("labels", "`--radius inf`", "--radius")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius", "inf"]

    @add("labels", "`--radius 100000` (a 298 GiB disc stencil before)", "ROOT/mics/m0.mrc")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius", "100000"]

    @add("labels", "`--radius-A 1e6` with the header's pixel size", "ROOT/mics/m0.mrc")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius-A", "1e6"]

    @add("labels", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.file()),
                      "--radius", "6"]

    @add("labels", "`-o` inside a file", "ROOT/a_file.txt/labels")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.file() / "labels"),
                      "--radius", "6"]

    @add("labels", "`--micrographs` folder missing", "ROOT/nowhere")
    def _(i): return ["labels", "-m", _s(i.root / "nowhere"), "-c", _s(i.coords()), "-o",
                      _s(i.root / "lab"), "--radius", "6"]

    @add("labels", "`--disk-fraction 0`", "--disk-fraction")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius", "6", "--disk-fraction", "0"]

    @add("labels", "`--keep-fraction 1.5`", "--keep-fraction")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius", "6", "--keep-fraction", "1.5"]

    @add("labels", "`--background foo`", "--background")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius", "6", "--background", "foo"]

    @add("labels", "`--background all` with `--background-coords`", "--background-coords")
    def _(i): return ["labels", "-m", _s(i.mics()), "-c", _s(i.coords()), "-o", _s(i.root / "lab"),
                      "--radius", "6", "--background", "all", "--background-coords", _s(i.coords())]

    # split ------------------------------------------------------------------------------------
    @add("split", "dataset folder without micrographs/", "ROOT/empty")
    def _(i):
        (i.root / "empty").mkdir()
        return ["split", _s(i.root / "empty")]

    @add("split", "a different split.yaml exists", "ROOT/ds/split.yaml")
    def _(i): return ["split", _s(i.dataset()), "--train", "1", "--val", "1"]

    # preprocess -------------------------------------------------------------------------------
    @add("preprocess", "`--bin 0.5`", "--bin")
    def _(i): return ["preprocess", _s(i.mics()), "-o", _s(i.root / "pre"), "--bin", "0.5"]

    @add("preprocess", "`--lowpass-A inf`", "--lowpass-A")
    def _(i): return ["preprocess", _s(i.mics()), "-o", _s(i.root / "pre"), "--lowpass-A", "inf"]

    @add("preprocess", "input file missing", "ROOT/missing.mrc")
    def _(i): return ["preprocess", _s(i.root / "missing.mrc"), "-o", _s(i.root / "pre")]

    @add("preprocess", "input is not an MRC file (text renamed .mrc)", "ROOT/junk.mrc")
    def _(i): return ["preprocess", _s(i.file("junk.mrc", b"hello" * 50)), "-o", _s(i.root / "pre")]

    @add("preprocess", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["preprocess", _s(i.mics()), "-o", _s(i.file())]

    # train ------------------------------------------------------------------------------------
    @add("train", "`--config` with a YAML syntax error", "ROOT/bad.yaml")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--config", _s(i.yaml_syntax_error())]

    @add("train", "`--config` not UTF-8 (Latin-1)", "ROOT/latin1.yaml")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--config", _s(i.latin1())]

    @add("train", "`--encoder` unknown", "no-such-encoder")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--encoder", "no-such-encoder"]

    @add("train", "`--encoder-weights` not a checkpoint", "ROOT/w.pt")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--encoder-weights",
                      _s(i.file("w.pt", b"\x80\x04junk"))]

    @add("train", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.file())]

    @add("train", "`--resume` in a folder without a run", "ROOT/r")
    def _(i):
        (i.root / "r").mkdir()
        return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--resume"]

    @add("train", "`--loss nnpu` without `--expected-particles`", "expected-particles")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--loss", "dice+nnpu"]

    @add("train", "`--expected-particles 0`", "expected_particles")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--loss", "nnpu",
                      "--expected-particles", "0"]

    # segment ----------------------------------------------------------------------------------
    @add("segment", "`--batch-size 0`", "--batch-size")
    def _(i): return ["segment", _s(i.run()), _s(i.mics()), "-o", _s(i.root / "seg"), "--batch-size", "0"]

    @add("segment", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["segment", _s(i.run()), _s(i.mics()), "-o", _s(i.file())]

    @add("segment", "run folder without config.yaml", "ROOT/notarun")
    def _(i):
        (i.root / "notarun").mkdir()
        return ["segment", _s(i.root / "notarun"), _s(i.mics()), "-o", _s(i.root / "seg")]

    @add("segment", "`-o` is the micrographs folder", "ROOT/mics")
    def _(i): return ["segment", _s(i.trained_run()), _s(i.mics()), "-o", _s(i.mics())]

    @add("segment-and-pick", "`-o` is the micrographs folder", "ROOT/mics")
    def _(i): return ["segment-and-pick", _s(i.trained_run()), _s(i.mics()), "-o", _s(i.mics()),
                      "--picker", _s(i.picker())]

    @add("segment-and-pick", "`--threshold nan`", "--threshold")
    def _(i): return ["segment-and-pick", _s(i.run()), _s(i.mics()), "-o", _s(i.root / "p"),
                      "--threshold", "nan"]

    @add("segment-and-pick", "`--shard 3/2`", "--shard")
    def _(i): return ["segment-and-pick", _s(i.run()), _s(i.mics()), "-o", _s(i.root / "p"),
                      "--shard", "3/2"]

    @add("segment", "diameter-scaled run (a general model) without a diameter", "--diameter-A")
    def _(i): return ["segment", _s(i.scaled_run()), _s(i.mics()), "-o", _s(i.root / "seg")]

    @add("segment", "`--diameter-px` with a run that is not diameter-scaled", "ROOT/trained")
    def _(i): return ["segment", _s(i.trained_run()), _s(i.mics()), "-o", _s(i.root / "seg"),
                      "--diameter-px", "20"]

    @add("segment", "`--diameter-A` with micrographs without a pixel size (PNG)", "--diameter-A")
    def _(i): return ["segment", _s(i.scaled_run()), _s(i.pngs((64, 64))), "-o", _s(i.root / "seg"),
                      "--diameter-A", "190"]

    @add("segment-and-pick", "both `--diameter-A` and `--diameter-px`", "--diameter-px")
    def _(i): return ["segment-and-pick", _s(i.scaled_run()), _s(i.mics()), "-o", _s(i.root / "p"),
                      "--diameter-A", "190", "--diameter-px", "20"]

    @add("pick", "a diameter-scaled model's picker without a diameter", "--diameter-A")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.root / "p"), "--picker", _s(i.scaled_picker())]

    @add("train", "`--init` a diameter-scaled run without a diameter", "--diameter-A")
    def _(i): return ["train", _s(i.dataset()), "-o", _s(i.root / "r"), "--init", _s(i.scaled_run())]

    @add("convert-maps", "input is not a folder of maps", "ROOT/none")
    def _(i): return ["convert-maps", _s(i.root / "none"), "-o", _s(i.root / "out"), "--dtype", "float32"]

    @add("segment", "0-byte checkpoint", "ROOT/run/checkpoints/best.ckpt")
    def _(i): return ["segment", _s(i.run(b"")), _s(i.mics()), "-o", _s(i.root / "seg")]

    @add("segment", "checkpoint holding pickled code", "ROOT/run/checkpoints/best.ckpt")
    def _(i):
        import pickle

        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))

        import torch

        buf = io.BytesIO()
        torch.save({"state_dict": {}, "x": Evil()}, buf, pickle_module=pickle)
        return ["segment", _s(i.run(buf.getvalue())), _s(i.mics()), "-o", _s(i.root / "seg")]

    @add("segment", "`-o` is the micrograph folder itself", "ROOT/mics")
    def _(i): return ["segment", _s(i.run(b"")), _s(i.mics()), "-o", _s(i.root / "mics"), "--overwrite"]

    # evaluate ---------------------------------------------------------------------------------
    @add("evaluate", "`--threshold 0` (IoU 1.0 before)", "--threshold")
    def _(i): return ["evaluate", _s(i.maps()), _s(i.dataset()), "--threshold", "0"]

    @add("evaluate", "`--threshold 2`", "--threshold")
    def _(i): return ["evaluate", _s(i.maps()), _s(i.dataset()), "--threshold", "2"]

    @add("evaluate", "`--threshold nan`", "--threshold")
    def _(i): return ["evaluate", _s(i.maps()), _s(i.dataset()), "--threshold", "nan"]

    @add("evaluate", "maps folder missing", "ROOT/nomaps")
    def _(i): return ["evaluate", _s(i.root / "nomaps"), _s(i.dataset())]

    @add("evaluate", "`-o` names a folder", "ROOT/ds")
    def _(i): return ["evaluate", _s(i.maps()), _s(i.dataset()), "-o", _s(i.root / "ds")]

    @add("evaluate", "a map of the subset is missing", "ROOT/maps/m4.mrc")
    def _(i): return ["evaluate", _s(i.maps(names=("m2", "m3"))), _s(i.dataset())]

    # tune-picker ------------------------------------------------------------------------------
    @add("tune-picker", "maps mark no particle (all zero; pandas traceback before)", "ROOT/maps")
    def _(i): return ["tune-picker", _s(i.maps(value=0.0)), _s(i.dataset()), "-o", _s(i.root / "p.yaml")]

    @add("tune-picker", "`--diameter -5`", "--diameter")
    def _(i): return ["tune-picker", _s(i.maps()), _s(i.dataset()), "-o", _s(i.root / "p.yaml"),
                      "--diameter", "-5"]

    @add("tune-picker", "`--finders` unknown", "no-such-finder")
    def _(i): return ["tune-picker", _s(i.maps()), _s(i.dataset()), "-o", _s(i.root / "p.yaml"),
                      "--finders", "no-such-finder"]

    @add("tune-picker", "`-o` names a folder", "ROOT/ds")
    def _(i): return ["tune-picker", _s(i.maps()), _s(i.dataset()), "-o", _s(i.root / "ds")]

    @add("tune-picker", "raw micrographs instead of maps", "ROOT/raw_maps/m2.mrc")
    def _(i): return ["tune-picker", _s(i.maps(raw=True)), _s(i.dataset()), "-o", _s(i.root / "p.yaml")]

    # pick -------------------------------------------------------------------------------------
    @add("pick", "`--threshold nan` (0 picks, exit 0 before)", "--threshold")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.root / "pk"), "--picker", _s(i.picker()),
                      "--threshold", "nan"]

    @add("pick", "`--border-fraction inf`", "--border-fraction")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.root / "pk"), "--picker", _s(i.picker()),
                      "--border-fraction", "inf"]

    @add("pick", "raw micrograph instead of a map (0 picks before)", "ROOT/raw_maps/m2.mrc")
    def _(i): return ["pick", _s(i.maps(raw=True)), "-o", _s(i.root / "pk"), "--picker", _s(i.picker())]

    @add("pick", "PNG micrographs of another size (picks outside the image before)", "ROOT/maps/m2.mrc")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.root / "pk"), "--picker", _s(i.picker()),
                      "--micrographs", _s(i.pngs((32, 48)))]

    @add("pick", "`--picker` with a YAML syntax error", "ROOT/bad.yaml")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.root / "pk"), "--picker", _s(i.yaml_syntax_error())]

    @add("pick", "`--picker` with an unknown finder", "ROOT/picker.yaml")
    def _(i):
        path = i.file("picker.yaml", b"finder: nope\ndiameter_px: 16\n")
        return ["pick", _s(i.maps()), "-o", _s(i.root / "pk"), "--picker", _s(path)]

    @add("pick", "`--format` unknown", "pdf")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.root / "pk"), "--picker", _s(i.picker()),
                      "--format", "star,pdf"]

    @add("pick", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["pick", _s(i.maps()), "-o", _s(i.file()), "--picker", _s(i.picker())]

    # extract ----------------------------------------------------------------------------------
    @add("extract", "`--box 0`", "--box")
    def _(i): return ["extract", _s(i.mics()), _s(i.picks()), "-o", _s(i.root / "parts"), "--box", "0"]

    @add("extract", "`--amplitude-contrast nan`", "--amplitude-contrast")
    def _(i): return ["extract", _s(i.mics()), _s(i.picks()), "-o", _s(i.root / "parts"),
                      "--amplitude-contrast", "nan"]

    @add("extract", "picks missing", "ROOT/nopicks")
    def _(i): return ["extract", _s(i.mics()), _s(i.root / "nopicks"), "-o", _s(i.root / "parts")]

    @add("extract", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["extract", _s(i.mics()), _s(i.picks()), "-o", _s(i.file())]

    # convert ----------------------------------------------------------------------------------
    @add("convert", "input missing", "ROOT/none.star")
    def _(i): return ["convert", _s(i.root / "none.star"), _s(i.root / "out.box"), "--box-size", "20"]

    @add("convert", "not a STAR file", "ROOT/junk.star")
    def _(i): return ["convert", _s(i.file("junk.star", b"\x00\x01garbage")), _s(i.root / "o.box"),
                      "--box-size", "20"]

    @add("convert", "`--to` unknown", "'pdf'")
    def _(i): return ["convert", _s(i.coords()), _s(i.root / "out"), "--to", "pdf"]

    @add("convert", "`--flip-y` without the micrograph height", "--micrograph-shape")
    def _(i): return ["convert", _s(i.coords() / "m0.star"), _s(i.root / "o.star"), "--flip-y"]

    @add("convert", "`--box-size nan`", "box size")
    def _(i): return ["convert", _s(i.coords() / "m0.star"), _s(i.root / "o.box"), "--box-size", "nan"]

    # sweep, compare, report, demo, match ------------------------------------------------------
    @add("sweep", "sweep file with a YAML syntax error", "ROOT/bad.yaml")
    def _(i): return ["sweep", _s(i.yaml_syntax_error())]

    @add("sweep", "sweep file not UTF-8 (Latin-1)", "ROOT/latin1.yaml")
    def _(i): return ["sweep", _s(i.latin1())]

    @add("sweep", "sweep file missing", "ROOT/none.yaml")
    def _(i): return ["sweep", _s(i.root / "none.yaml")]

    @add("compare", "not a run folder", "ROOT/empty")
    def _(i):
        (i.root / "empty").mkdir()
        return ["compare", _s(i.root / "empty")]

    @add("compare", "`-o` names a folder", "ROOT/mics")
    def _(i): return ["compare", _s(i.run()), "-o", _s(i.mics())]

    @add("report", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["report", _s(i.run()), "-o", _s(i.file())]

    @add("report", "input missing", "ROOT/none")
    def _(i): return ["report", _s(i.root / "none"), "-o", _s(i.root / "rep")]

    @add("demo", "`-o` names an existing file", "ROOT/a_file.txt")
    def _(i): return ["demo", "-o", _s(i.file()), "--tiny"]

    @add("segment", "`--batch-size` not a number (a usage error)", "--batch-size")
    def _(i): return ["segment", _s(i.run()), _s(i.mics()), "-o", _s(i.root / "seg"), "--batch-size", "abc"]

    @add("pick", "argument missing (a usage error)", "Missing argument")
    def _(i): return ["pick"]

    @add("crisp", "unknown verb (a usage error)", "nosuchverb")
    def _(i): return ["nosuchverb"]

    @add("match", "no micrograph matches a coordinate file", "no micrograph matches")
    def _(i):
        mics = i.mics()
        other = i.root / "other"
        other.mkdir()
        (i.coords() / "m0.star").rename(other / "zz.star")
        return ["match", _s(mics), _s(other)]

    return c


CASES = _cases()


# ----------------------------------------------------------------------------------------------
# running a case
# ----------------------------------------------------------------------------------------------
def run_case(case: Case, root: Path) -> tuple[int | str, list[str], str, str, list[str]]:
    """Run ``case`` in ``root``: (exit status, stderr message lines, all of stderr, expected name, argv)."""
    from crisp.cli import main

    root.mkdir(parents=True, exist_ok=True)
    argv = case.build(Inputs(root))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pytest would swallow the warnings a user sees on stderr
        try:
            status = main(argv)
        except BaseException as exc:  # noqa: BLE001 - an escaped exception is what the table records
            import traceback

            traceback.print_exc(file=err)
            status = f"raised {type(exc).__name__}"
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning)  # Python hides these by default
    shown = [w for w in caught if not issubclass(w.category, hidden)]
    text = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown)
    text += err.getvalue()
    lines = [line for line in text.strip().splitlines() if line.strip() and not _PROGRESS.match(line)]
    return status, lines, text, case.names.replace(ROOT, str(root)), argv


def _ids() -> list[str]:
    return [f"{c.verb}-{re.sub(r'[^a-z0-9]+', '-', c.what.lower()).strip('-')[:40]}" for c in CASES]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.xfail))
                                  if c.xfail else c for c in CASES], ids=_ids())
def test_bad_input_gives_one_line_naming_it(case, tmp_path):
    status, lines, text, name, _ = run_case(case, tmp_path / "case")
    assert "Traceback" not in text, text
    assert status == 2, text
    assert len(lines) == 1, text
    assert lines[0].startswith("error:"), text
    assert name in lines[0], text


def test_the_table_covers_every_verb_with_forty_cases():
    verbs = {c.verb for c in CASES}
    assert len(CASES) >= 40
    assert verbs >= {"simulate", "labels", "split", "preprocess", "train", "segment", "evaluate",
                     "tune-picker", "pick", "extract", "convert", "sweep", "compare", "report", "demo"}


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
def write_table(path: Path, work: Path) -> Path:
    """Run every case under ``work`` and write the Markdown table to ``path``."""
    rows = []
    for k, case in enumerate(CASES):
        root = work / f"case{k:02d}"
        status, lines, text, name, argv = run_case(case, root)
        ok = (status == 2 and len(lines) == 1 and lines[0].startswith("error:") and name in lines[0]
              and "Traceback" not in text)
        shown = lines[0] if len(lines) == 1 else " / ".join(lines[-3:]) if lines else "(nothing)"
        command = " ".join(["crisp", *argv])
        cells = [c.replace(str(root), "…").replace("|", "\\|") for c in (command, shown)]
        state = "ok" if ok else (f"open: {case.xfail}" if case.xfail else "FAILS")
        rows.append(f"| {case.what} | `{cells[0]}` | {status} | `{cells[1]}` | {state} |")
    header = [
        "# Bad inputs and the message each gets",
        "",
        "Generated by `python tests/test_bad_inputs.py` from the case list of `tests/test_bad_inputs.py`",
        "(each case is also a test: exit status 2, one stderr line starting with `error:` that names the",
        "file or option, no traceback). `…` stands for the case's temporary folder. Rows marked *open*",
        "are defects that another part of the core redesign fixes; their tests are `xfail(strict=True)`.",
        "",
        f"{len(CASES)} cases over {len({c.verb for c in CASES})} verbs.",
        "",
        "| bad input | command | exit | message | state |",
        "|---|---|---|---|---|",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.skipif(not os.environ.get("CRISP_WRITE_BAD_INPUTS"), reason="set CRISP_WRITE_BAD_INPUTS=1")
def test_write_table(tmp_path):
    write_table(Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md", tmp_path)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(write_table(Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md", Path(tmp)))


def test_output_where_no_file_can_be_created(tmp_path, capsys):
    """-o in a folder that takes no new files (read-only permissions, or /sys when run as root)."""
    from crisp.cli import main

    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "picks"
    else:
        target = Path("/sys/crisp-bad-input-test")
        import tempfile

        try:
            with tempfile.TemporaryFile(dir=target.parent):  # removed at once if it can be made at all
                pass
        except OSError:
            pass
        else:
            pytest.skip("/sys is writable here")
    i = Inputs(tmp_path)
    assert main(["pick", str(i.maps()), "-o", str(target), "--picker", str(i.picker())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {target}: cannot be written")
    assert not target.exists()
