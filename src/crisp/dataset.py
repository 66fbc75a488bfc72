"""The dataset folder that ``crisp simulate`` and ``crisp labels`` write and training reads.

Layout (one micrograph ``NAME`` shown; every file is written atomically)::

    DATASET/
      micrographs/NAME.mrc    float32, pixel size (Å) in the header
      masks/NAME.mrc          uint8 label map: 1 = particle, 0 = background, 255 = unlabelled
                              (UNLABELLED: sparse or incomplete annotations; training ignores or
                              treats these pixels as positive-unlabelled); same shape as the micrograph
      coordinates/NAME.star   true particle centres, RELION columns, pixels of the micrograph
      instances/NAME.mrc      optional, int16 instance ids (0 = background), simulated data only
      clean/NAME.mrc          optional, the noise-free micrograph, simulated data only
      split.yaml              optional manifest: seed and the train / val / test name lists
      simulation.yaml | labels.yaml   how the folder was made (every parameter and the seed)

Names are file stems; a micrograph, its mask and its coordinates share the stem.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crisp.config import read_yaml, save_yaml
from crisp.errors import CrispError

MICROGRAPHS = "micrographs"
MASKS = "masks"
COORDINATES = "coordinates"
INSTANCES = "instances"
CLEAN = "clean"
SPLIT_FILE = "split.yaml"
SUBSETS = ("train", "val", "test")
#: value of a label-map pixel that is neither asserted particle (1) nor asserted background (0)
UNLABELLED = 255
PARTICLE = 1
BACKGROUND = 0


@dataclass(frozen=True)
class DatasetFolder:
    """Paths of a dataset folder (see the module docstring for the layout)."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> DatasetFolder:
        """Open an existing dataset folder; it must hold ``micrographs/`` with at least one MRC."""
        folder = cls(Path(root))
        if not (folder.root / MICROGRAPHS).is_dir():
            raise CrispError(f"not a CRISP dataset folder (no '{MICROGRAPHS}/' inside)", folder.root)
        if not folder.names():
            raise CrispError(f"no .mrc files in '{MICROGRAPHS}/'", folder.root)
        return folder

    def names(self) -> list[str]:
        """Sorted stems of the micrographs in the folder."""
        return sorted(p.stem for p in (self.root / MICROGRAPHS).glob("*.mrc"))

    def micrograph(self, name: str) -> Path:
        return self.root / MICROGRAPHS / f"{name}.mrc"

    def mask(self, name: str) -> Path:
        return self.root / MASKS / f"{name}.mrc"

    def coordinates(self, name: str) -> Path:
        return self.root / COORDINATES / f"{name}.star"

    def instances(self, name: str) -> Path:
        return self.root / INSTANCES / f"{name}.mrc"

    def clean(self, name: str) -> Path:
        return self.root / CLEAN / f"{name}.mrc"

    @property
    def split_file(self) -> Path:
        return self.root / SPLIT_FILE

    def subset(self, which: str) -> list[str]:
        """Names in one subset (train, val, test) of ``split.yaml``; an error if none or empty."""
        if not self.split_file.is_file():
            raise CrispError("no split.yaml: run `crisp split` on the dataset first", self.root)
        names = read_split(self.split_file).subset(which)
        if not names:
            raise CrispError(f"the '{which}' subset of the split is empty", self.split_file)
        return names


def dataset_diameter_px(root: str | os.PathLike[str]) -> float | None:
    """Particle diameter in pixels recorded by the stage that made the dataset folder.

    Looks for the first ``diameter_px`` key (top level, then nested) in ``simulation.yaml``, then
    ``labels.yaml``; None when neither records one.
    """
    def search(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("diameter_px") is not None:
                return node["diameter_px"]
            for value in node.values():
                found = search(value)
                if found is not None:
                    return found
        return None

    for name in ("simulation.yaml", "labels.yaml"):
        path = Path(root) / name
        if path.is_file():
            found = search(read_yaml(path))
            if found is not None:
                return float(found)
    return None


@dataclass(frozen=True)
class Split:
    """A fixed train / validation / test partition of micrograph names."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int

    def subset(self, which: str) -> list[str]:
        if which not in SUBSETS:
            raise CrispError(f"unknown subset '{which}' (expected one of {', '.join(SUBSETS)})")
        return list(getattr(self, which))

    def to_dict(self) -> dict:
        return {"seed": self.seed, "train": self.train, "val": self.val, "test": self.test}


def make_split(names: list[str], n_train: int, n_val: int, seed: int = 0,
               n_test: int | None = None) -> Split:
    """Shuffle ``names`` with ``seed`` and cut them into train, validation and test lists.

    Parameters
    ----------
    names
        Micrograph stems.
    n_train, n_val
        Number of training and validation micrographs (the paper: 16 and 6).
    seed
        Seed of the shuffle; the same names and seed give the same split.
    n_test
        Number of test micrographs; default all the rest.
    """
    if n_train < 1 or n_val < 0:
        raise CrispError(f"split sizes must be train >= 1 and val >= 0 (got {n_train}, {n_val})")
    rest = len(names) - n_train - n_val
    if n_test is None:
        n_test = rest
    if n_test < 0 or n_train + n_val + n_test > len(names):
        raise CrispError(
            f"cannot split {len(names)} micrographs into {n_train} train, {n_val} val "
            f"and {n_test} test")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    train = sorted(order[:n_train])
    val = sorted(order[n_train:n_train + n_val])
    test = sorted(order[n_train + n_val:n_train + n_val + n_test])
    return Split(train=train, val=val, test=test, seed=seed)


def write_split(path: str | os.PathLike[str], split: Split) -> None:
    """Write a split manifest as YAML (atomically)."""
    save_yaml(path, split.to_dict())


def read_split(path: str | os.PathLike[str]) -> Split:
    """Read a split manifest written by :func:`write_split`."""
    data = read_yaml(path)
    try:
        return Split(train=list(data["train"]), val=list(data.get("val") or []),
                     test=list(data.get("test") or []), seed=int(data.get("seed", 0)))
    except (KeyError, TypeError, ValueError) as err:
        raise CrispError(f"not a split manifest ({err})", path) from None


def read_true_centres(root: str | os.PathLike[str], names: Iterable[str], *, required: bool = True):
    """The true particle centres of the named micrographs: ``ROOT/coordinates/NAME.star``.

    This is the one reader of "the truth for these micrographs" for scoring picks (evaluation,
    picker tuning, reports, benchmarks). It reads any folder with that layout: a CRISP dataset
    folder, or a set of real micrographs with its coordinates (e.g. EMPIAR-10017).

    Parameters
    ----------
    root
        The folder holding ``coordinates/``.
    names
        Micrograph stems, in the order wanted.
    required
        True: a missing file is a :class:`CrispError` naming it. False: return None when any is missing.

    Returns
    -------
    pandas.DataFrame or None
        ``rlnMicrographName`` (the stem NAME), ``rlnCoordinateX`` (column), ``rlnCoordinateY`` (row) in
        pixels of the micrograph, the micrographs in the order of ``names``. None when ``names`` is
        empty, or when a file is missing and not ``required``.
    """
    import pandas as pd

    from crisp.io.coordinates import read_coordinates

    columns = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    folder = DatasetFolder(Path(root))
    frames = []
    for name in names:
        path = folder.coordinates(name)
        if not path.is_file():
            if required:
                raise CrispError(f"no true coordinates for micrograph '{name}'", path)
            return None
        table = read_coordinates(path, micrograph_name=name)
        table["rlnMicrographName"] = name
        frames.append(table[columns])
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def read_true_masks(root: str | os.PathLike[str], names: Iterable[str], *, required: bool = True) -> dict:
    """The true masks of the named micrographs of a dataset folder: ``ROOT/masks/NAME.mrc``.

    Parameters
    ----------
    root
        The dataset folder.
    names
        Micrograph stems, in the order wanted.
    required
        True: a missing mask is a :class:`CrispError` naming it. False: micrographs without a mask
        are left out of the result (figures that show a mask when there is one).

    Returns
    -------
    dict
        NAME -> the mask as a float32 array (1 = particle, 0 = background), in the order of ``names``.
    """
    from crisp.io.micrographs import read_micrograph

    folder = DatasetFolder(Path(root))
    masks = {}
    for name in names:
        path = folder.mask(name)
        if not path.is_file():
            if not required:
                continue
            raise CrispError(f"no true mask for micrograph '{name}'", path)
        masks[name] = read_micrograph(path).data
    return masks
