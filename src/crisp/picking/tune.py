"""Selection of the centre finder and its parameters by box mAP (the CRISP paper's Algorithm 1).

For every finder, a grid over its two main parameters (candidate count or size, and filtering
strength; :attr:`crisp.picking.base.Finder.grid`) is tried on the validation probability maps;
each setting is scored by the box-IoU mAP of its picks against the true centres
(:func:`crisp.metrics.picking.box_map`). The best setting becomes a :class:`PickerConfig`
(``picker.yaml``) with the score threshold that maximises F1 (IoU 0.5) on the same maps.
Last, the best setting's picks are filtered by distance to the micrograph edge
(:data:`BORDER_FRACTIONS` of the diameter, :func:`crisp.picking.base.drop_near_border`) and the
exclusion with the highest mAP is kept (ties: the smallest), so a picker learns the edge margin
that the reference annotations keep (EMPIAR-10017's CryoPPP centres: none within 1.2 diameters).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from crisp.atomic import atomic_path
from crisp.config import StageConfig, load_config, save_yaml
from crisp.errors import CrispError
from crisp.metrics.picking import box_map
from crisp.picking.base import drop_near_border
from crisp.picking.registry import available_finders, get_finder, make_params

NAME = "rlnMicrographName"
BORDER_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(16))
"""Edge exclusions tried by :func:`tune_picker`, as fractions of the particle diameter (0 to 1.5)."""


class PickerConfig(StageConfig):
    """A chosen finder with its parameters: what ``crisp pick`` reads from ``picker.yaml``.

    Attributes
    ----------
    finder
        Registry name of the finder.
    params
        Its parameters (validated against the finder's params model).
    diameter_px
        Particle diameter in pixels of the original micrograph (= of the probability maps).
    pixel_size
        Å per pixel of the maps the picker was tuned on (None: unknown). ``crisp pick`` rescales
        ``diameter_px`` to maps of another pixel size.
    threshold
        Score threshold that maximised F1 (box IoU 0.5) on the validation maps; None = keep all.
    border_fraction
        Picks closer than ``border_fraction * diameter_px`` to an edge of the map are dropped
        (:func:`crisp.picking.base.drop_near_border`); 0 keeps all.
    validation
        Metrics of this setting on the validation maps (mAP, AP50, F1, ...).
    """

    finder: str = "grid-nms"
    params: dict[str, Any] = Field(default_factory=dict)
    diameter_px: float = Field(gt=0)
    pixel_size: float | None = Field(None, gt=0)
    threshold: float | None = None
    border_fraction: float = Field(0.0, ge=0, le=10)
    validation: dict[str, float] = Field(default_factory=dict)

    def finder_params(self):
        """The validated params model instance of :attr:`finder`."""
        return make_params(self.finder, self.params)


def load_picker(path: str | os.PathLike[str]) -> PickerConfig:
    """Read a ``picker.yaml``; an unknown finder or bad parameter is a :class:`CrispError`."""
    config = load_config(PickerConfig, path)
    try:
        config.finder_params()
    except CrispError as err:
        raise CrispError(err.reason, path) from None
    return config


def pick_maps(prob_maps: Mapping[str, np.ndarray], diameter_px: float, finder: str,
              params: Mapping[str, Any] | None = None, border_fraction: float = 0.0) -> pd.DataFrame:
    """Run one finder on several maps; the picks carry ``rlnMicrographName`` = the map's key.

    Picks closer than ``border_fraction * diameter_px`` to an edge of their map are dropped.
    """
    spec = get_finder(finder)
    model = make_params(finder, dict(params or {}))
    frames = []
    for name, prob in prob_maps.items():
        picks = drop_near_border(spec.function(prob, float(diameter_px), model), np.shape(prob),
                                 border_fraction * float(diameter_px))
        picks.insert(0, NAME, name)
        frames.append(picks)
    if not frames:
        return pd.DataFrame({NAME: [], "rlnCoordinateX": [], "rlnCoordinateY": [],
                             "rlnAutopickFigureOfMerit": []})
    return pd.concat(frames, ignore_index=True)


def _grid_settings(finder: str, grid: Mapping[str, list[Any]] | None) -> list[dict[str, Any]]:
    spec = get_finder(finder)
    grid = dict(spec.grid if grid is None else grid)
    unknown = sorted(set(grid) - set(spec.params_model.model_fields))
    if unknown:
        raise CrispError(f"finder '{finder}' has no parameter(s) {', '.join(unknown)} "
                         f"(it has: {', '.join(spec.params_model.model_fields)})")
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _max_value(prob_maps: Mapping[str, np.ndarray]) -> float:
    return max((float(np.max(p)) for p in prob_maps.values() if np.size(p)), default=0.0)


def tune_picker(prob_maps: Mapping[str, np.ndarray], truth: pd.DataFrame, diameter_px: float,
                finders: list[str] | None = None, grids: Mapping[str, Mapping[str, list[Any]]] | None = None,
                progress: bool = True, pixel_size: float | None = None,
                border_fractions: Sequence[float] = BORDER_FRACTIONS,
                source: str | os.PathLike[str] | None = None) -> tuple[PickerConfig, pd.DataFrame]:
    """Choose the finder and parameters that maximise box mAP on validation maps, then the edge margin.

    Parameters
    ----------
    prob_maps
        Micrograph name -> 2-D foreground-probability map (original resolution).
    truth
        True centres: ``rlnMicrographName`` (matched to the map names by file stem),
        ``rlnCoordinateX``, ``rlnCoordinateY`` in pixels.
    diameter_px
        Particle diameter in pixels (finder scale and box side of the mAP).
    finders
        Finder names to try; default all registered.
    grids
        Per finder, parameter name -> values to try (replaces the finder's default grid); the
        other parameters keep their defaults.
    progress
        Show a progress bar.
    pixel_size
        Å per pixel of the maps (recorded in the picker; None: unknown).
    border_fractions
        Edge exclusions (fractions of the diameter) tried on the best setting's picks; ``(0,)``
        or empty: none.
    source
        Where the maps came from (their folder), named in errors about the maps.

    Returns
    -------
    (PickerConfig, DataFrame)
        The best setting (highest mAP; ties go to the first tried: grid settings without edge
        exclusion first, then the exclusions in increasing order) and the table of every setting
        tried: ``finder``, ``params`` (JSON), one column per grid parameter, ``border_fraction``,
        ``mAP``, ``AP50``, ``AP75``, ``precision``, ``recall``, ``F1`` (IoU 0.5, all picks),
        ``best_threshold``, ``best_F1``, ``n_picks``, ``n_truth``, ``seconds``; sorted by decreasing
        mAP.
    """
    from tqdm import tqdm

    if not prob_maps:
        raise CrispError("no probability maps to tune the picker on")
    if not (np.isfinite(diameter_px) and diameter_px > 0):
        raise CrispError(f"particle diameter must be a positive number of pixels (got {diameter_px})")
    finders = list(finders or available_finders())
    grids = dict(grids or {})
    unknown = sorted(set(grids) - set(finders))
    if unknown:
        raise CrispError(f"grids given for finder(s) not tried: {', '.join(unknown)}")
    from crisp.io.coordinates import micrograph_stem

    stems = {micrograph_stem(n) for n in prob_maps}
    if NAME in truth.columns:
        truth = truth[truth[NAME].astype(str).map(micrograph_stem).isin(stems)]
    if len(truth) == 0:
        raise CrispError("no true centres on the given probability maps (check the micrograph names)")
    jobs = [(f, s) for f in finders for s in _grid_settings(f, grids.get(f))]
    metric_keys = ("mAP", "AP50", "AP75", "precision", "recall", "F1", "best_threshold", "best_F1",
                   "n_picks", "n_truth")
    rows = []
    best, best_picks = None, None
    for finder, setting in tqdm(jobs, desc="tune picker", unit="setting", disable=not progress):
        start = time.perf_counter()
        picks = pick_maps(prob_maps, diameter_px, finder, setting)
        seconds = time.perf_counter() - start
        metrics = box_map(picks, truth, diameter_px)
        rows.append({"finder": finder, "params": json.dumps(setting, sort_keys=True), **setting,
                     "border_fraction": 0.0, **{k: metrics[k] for k in metric_keys},
                     "seconds": round(seconds, 4)})
        if best is None or metrics["mAP"] > best["mAP"]:  # ties: the first tried, as np.argmax below
            best, best_picks = rows[-1], picks
    if all(row["n_picks"] == 0 for row in rows):
        raise CrispError(f"the probability maps mark no particle: no finder setting found a candidate on "
                         f"{len(prob_maps)} map(s) (maximum value {_max_value(prob_maps):.3g}); is the "
                         "network trained (more epochs), and are these the maps of this dataset?", source)
    margins = sorted({float(f) for f in border_fractions if f > 0})
    if margins:
        shapes = {name: np.shape(prob) for name, prob in prob_maps.items()}
        for fraction in margins:
            groups = [drop_near_border(group, shapes[name], fraction * diameter_px)
                      for name, group in best_picks.groupby(NAME, sort=False)]
            kept = pd.concat(groups, ignore_index=True) if groups else best_picks
            metrics = box_map(kept, truth, diameter_px)
            rows.append({**{k: best[k] for k in best if k not in metric_keys}, "border_fraction": fraction,
                         **{k: metrics[k] for k in metric_keys}})
    table = pd.DataFrame(rows)
    best = table.iloc[int(np.argmax(table["mAP"].to_numpy()))]
    table = table.sort_values("mAP", ascending=False, kind="stable").reset_index(drop=True)
    threshold = float(best["best_threshold"])
    config = PickerConfig(
        finder=str(best["finder"]),
        params=make_params(str(best["finder"]), json.loads(best["params"])).model_dump(),
        diameter_px=float(diameter_px),
        pixel_size=pixel_size,
        threshold=threshold if np.isfinite(threshold) else None,
        border_fraction=float(best["border_fraction"]),
        validation={k: float(best[k]) for k in ("mAP", "AP50", "AP75", "F1", "best_F1", "precision",
                                                "recall")} | {"n_micrographs": float(len(prob_maps))},
    )
    return config, table


def write_tuning(config: PickerConfig, table: pd.DataFrame, path: str | os.PathLike[str]
                 ) -> tuple[Path, Path]:
    """Write ``picker.yaml`` and the table of tried settings beside it (``<stem>_tuning.csv``)."""
    path = Path(path)
    csv_path = path.with_name(f"{path.stem}_tuning.csv")
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    save_yaml(path, config)
    return path, csv_path
