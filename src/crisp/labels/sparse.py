"""Sparse and incomplete labels: seeded subsets of particles and three-valued label maps.

A dataset label map (see :mod:`crisp.dataset`) holds ``1`` (:data:`~crisp.dataset.PARTICLE`),
``0`` (:data:`~crisp.dataset.BACKGROUND`) and ``255`` (:data:`~crisp.dataset.UNLABELLED`). Annotations
are rarely complete, so "not annotated" need not mean "background":

* :func:`keep_subset` keeps a seeded random fraction of a micrograph's annotated centres, to make
  sparse training sets from full annotations (``crisp labels --keep-fraction F --seed S``);
* :func:`label_map` turns a 0/1 particle mask into a three-valued map in which only particles, and
  optionally discs the user asserts to be background, are labelled.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from crisp.dataset import BACKGROUND, PARTICLE, UNLABELLED
from crisp.errors import CrispError

BACKGROUND_MODES = ("all", "none")


def name_seed(name: str) -> int:
    """A stable 32-bit hash of a micrograph name (CRC-32 of its UTF-8 bytes), the same in every process.

    Python's ``hash`` of a string changes between processes (``PYTHONHASHSEED``); this does not.
    """
    return zlib.crc32(str(name).encode("utf-8"))


def n_kept(n: int, fraction: float) -> int:
    """How many of ``n`` centres :func:`keep_subset` keeps: ``round(fraction * n)``, at least 1 if ``n >= 1``.

    ``round`` is Python's (halves go to the even integer: 0.5 x 5 = 2.5 gives 2).
    """
    if n <= 0:
        return 0
    return min(n, max(1, round(fraction * n)))


def keep_subset(table: pd.DataFrame, fraction: float, seed: int, name: str) -> pd.DataFrame:
    """A seeded random subset of one micrograph's centres, for sparse training sets.

    The subset depends only on ``(seed, name, len(table), fraction)``: the generator is
    ``numpy.random.default_rng([seed, crc32(name)])`` (see :func:`name_seed`), so a micrograph gets
    the same subset whichever other micrographs are labelled in the same call, in another shard or in
    another process.

    Parameters
    ----------
    table
        The micrograph's centres, one row each (any columns; RELION ``rlnCoordinateX`` /
        ``rlnCoordinateY`` in pixels in ``crisp labels``).
    fraction
        Fraction of the rows to keep, ``0 < fraction <= 1``; :func:`n_kept` rows are kept
        (``round(fraction * n)``, at least one when the table is not empty).
    seed
        Non-negative integer seed (``--seed``).
    name
        The micrograph's name (its file stem in ``crisp labels``).

    Returns
    -------
    pandas.DataFrame
        The kept rows, in their original order, with a fresh 0..k-1 index; ``table`` itself (a copy)
        when ``fraction`` is 1.

    Raises
    ------
    CrispError
        ``fraction`` outside ``(0, 1]`` or a negative ``seed``.
    """
    if not 0 < fraction <= 1:
        raise CrispError(f"keep fraction must be in (0, 1] (got {fraction})")
    if int(seed) < 0:
        raise CrispError(f"seed must be a non-negative integer (got {seed})")
    n = len(table)
    if fraction == 1 or n == 0:
        return table.reset_index(drop=True)
    rng = np.random.default_rng([int(seed), name_seed(name)])
    rows = np.sort(rng.choice(n, size=n_kept(n, fraction), replace=False))
    return table.iloc[rows].reset_index(drop=True)


def label_map(particle: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """A three-valued label map in which only particles and asserted background are labelled.

    Parameters
    ----------
    particle
        0/1 (or boolean) particle mask, ``[row, column]``.
    background
        0/1 (or boolean) mask of pixels asserted to be background (e.g. discs around
        ``--background-coords``), same shape; ``None``: no pixel is asserted background.

    Returns
    -------
    numpy.ndarray
        uint8 map of the same shape: ``PARTICLE`` (1) where ``particle`` is set (particles win over
        background), else ``BACKGROUND`` (0) where ``background`` is set, else ``UNLABELLED`` (255).
    """
    particle = np.asarray(particle).astype(bool, copy=False)
    out = np.full(particle.shape, UNLABELLED, dtype=np.uint8)
    if background is not None:
        background = np.asarray(background).astype(bool, copy=False)
        if background.shape != particle.shape:
            raise CrispError(f"background mask shape {background.shape} differs from the particle mask's "
                             f"{particle.shape}")
        out[background] = BACKGROUND
    out[particle] = PARTICLE
    return out
