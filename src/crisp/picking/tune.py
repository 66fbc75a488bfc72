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

Sparse annotations (the user annotated only some of the particles, e.g. 20 %) make precision, and
so mAP and F1, unmeasurable: a pick away from every annotated centre may be an unannotated particle,
and those scores reward finders that pick little. Given ``expected_particles`` = N (particles per
micrograph the user expects, Topaz's knob), :func:`tune_picker` scores every setting and edge margin
instead by the *recall at N* of the annotated centres (:func:`crisp.metrics.picking.recall_at_n`:
on each validation map the N highest-scoring picks, after the edge margin, matched one-to-one
within half the particle diameter), keeps the highest (ties: the first tried), and sets the
threshold to the score of the N-th pick, the median over the validation maps, so ``crisp pick``
keeps about N picks per micrograph. :attr:`PickerConfig.tuned_on` says which way a picker was tuned.
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
from crisp.metrics.picking import box_map, recall_at_n
from crisp.picking.base import drop_near_border
from crisp.picking.registry import available_finders, get_finder, make_params

NAME = "rlnMicrographName"
BORDER_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(16))
"""Edge exclusions tried by :func:`tune_picker`, as fractions of the particle diameter (0 to 1.5)."""
TUNED_ON_FULL = "full annotation: box mAP"
""":attr:`PickerConfig.tuned_on` of a picker tuned on fully annotated validation micrographs."""


def tuned_on_sparse(expected_particles: float) -> str:
    """:attr:`PickerConfig.tuned_on` of a picker tuned on sparse annotations with N expected particles."""
    return (f"sparse annotation: recall at {expected_particles:g} expected particles per micrograph "
            "(radius matching at half the diameter)")


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
        Score threshold that maximised F1 (box IoU 0.5) on the validation maps, or, when tuned on
        sparse annotations, the median score of the N-th pick per validation map; None = keep all.
    border_fraction
        Picks closer than ``border_fraction * diameter_px`` to an edge of the map are dropped
        (:func:`crisp.picking.base.drop_near_border`); 0 keeps all.
    validation
        Metrics of this setting on the validation maps: mAP, AP50, F1, ... (full annotation), or
        ``recall_at_n`` and ``picks_per_micrograph`` (sparse annotation); ``n_micrographs``.
    tuned_on
        How the picker was chosen: :data:`TUNED_ON_FULL` (box mAP against fully annotated validation
        micrographs) or :func:`tuned_on_sparse` (recall at N expected particles per micrograph, for
        sparse annotations); ``""``: not recorded (a picker written by hand, or by a CRISP before
        this field, whose ``tune-picker`` always used box mAP).
    expected_particles
        N of a picker tuned on sparse annotations (particles per micrograph); None otherwise.
    diameter_scaled
        The picker of a diameter-scaled run (:attr:`crisp.training.config.TrainConfig.particle_diameter_px`,
        set by :func:`crisp.models.bundled.export_bundled`): its finder settings (all relative to the
        diameter) are used with the particle diameter the user gives (``--diameter-A``/``--diameter-px``)
        instead of ``diameter_px``; ``crisp pick`` refuses it without one.
    """

    finder: str = "grid-nms"
    params: dict[str, Any] = Field(default_factory=dict)
    diameter_px: float = Field(gt=0)
    pixel_size: float | None = Field(None, gt=0)
    threshold: float | None = None
    border_fraction: float = Field(0.0, ge=0, le=10)
    validation: dict[str, float] = Field(default_factory=dict)
    tuned_on: str = ""
    expected_particles: float | None = Field(None, gt=0, allow_inf_nan=False)
    diameter_scaled: bool = Field(False, description="the picker of a diameter-scaled run (a bundled "
                                  "model): diameter_px is replaced by the diameter given with each use")

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
                source: str | os.PathLike[str] | None = None,
                expected_particles: float | None = None) -> tuple[PickerConfig, pd.DataFrame]:
    """Choose the finder and parameters that maximise box mAP on validation maps, then the edge margin.

    With ``expected_particles`` (sparse annotations), recall at that many picks per micrograph
    replaces box mAP (module docstring).

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
    expected_particles
        None (default): the validation micrographs are fully annotated; settings are scored by box
        mAP and the threshold maximises F1. N > 0: the annotation is sparse; settings and edge
        margins are scored by :func:`crisp.metrics.picking.recall_at_n` (the N highest-scoring picks
        of each map, matched within half the diameter) and the threshold is the median over the
        maps of the N-th pick's score (the lowest score on a map with fewer picks).

    Returns
    -------
    (PickerConfig, DataFrame)
        The best setting (highest mAP, or recall at N; ties go to the first tried: grid settings
        without edge exclusion first, then the exclusions in increasing order) and the table of
        every setting tried: ``finder``, ``params`` (JSON), one column per grid parameter,
        ``border_fraction``, then ``mAP``, ``AP50``, ``AP75``, ``precision``, ``recall``, ``F1`` (IoU
        0.5, all picks), ``best_threshold``, ``best_F1`` (full annotation) or ``recall_at_n``,
        ``threshold_at_n``, ``picks_per_micrograph`` (sparse), and ``n_picks`` (all candidates),
        ``n_truth``, ``seconds``; sorted by the decreasing score.
    """
    from tqdm import tqdm

    if not prob_maps:
        raise CrispError("no probability maps to tune the picker on")
    if not (np.isfinite(diameter_px) and diameter_px > 0):
        raise CrispError(f"particle diameter must be a positive number of pixels (got {diameter_px})")
    sparse = expected_particles is not None
    if sparse and not (np.isfinite(float(expected_particles)) and float(expected_particles) > 0):
        raise CrispError("expected particles per micrograph must be a positive number "
                         f"(got {expected_particles})")
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
    if sparse:
        key = "recall_at_n"
        metric_keys: tuple[str, ...] = ("recall_at_n", "threshold_at_n", "picks_per_micrograph", "n_picks",
                                        "n_truth")
    else:
        key = "mAP"
        metric_keys = ("mAP", "AP50", "AP75", "precision", "recall", "F1", "best_threshold", "best_F1",
                       "n_picks", "n_truth")

    def score(picks: pd.DataFrame) -> dict[str, Any]:
        if sparse:
            return recall_at_n(picks, truth, float(expected_particles), diameter_px / 2) | {
                "n_picks": len(picks)}
        return box_map(picks, truth, diameter_px)

    rows = []
    best, best_picks = None, None
    for finder, setting in tqdm(jobs, desc="tune picker", unit="setting", disable=not progress):
        start = time.perf_counter()
        picks = pick_maps(prob_maps, diameter_px, finder, setting)
        seconds = time.perf_counter() - start
        metrics = score(picks)
        rows.append({"finder": finder, "params": json.dumps(setting, sort_keys=True), **setting,
                     "border_fraction": 0.0, **{k: metrics[k] for k in metric_keys},
                     "seconds": round(seconds, 4)})
        if best is None or metrics[key] > best[key]:  # ties: the first tried, as np.argmax below
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
            metrics = score(kept)
            rows.append({**{k: best[k] for k in best if k not in metric_keys}, "border_fraction": fraction,
                         **{k: metrics[k] for k in metric_keys}})
    table = pd.DataFrame(rows)
    best = table.iloc[int(np.argmax(table[key].to_numpy()))]
    table = table.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)
    threshold = float(best["threshold_at_n" if sparse else "best_threshold"])
    if sparse:
        validation = {k: float(best[k]) for k in ("recall_at_n", "picks_per_micrograph")}
    else:
        validation = {k: float(best[k]) for k in ("mAP", "AP50", "AP75", "F1", "best_F1", "precision",
                                                  "recall")}
    config = PickerConfig(
        finder=str(best["finder"]),
        params=make_params(str(best["finder"]), json.loads(best["params"])).model_dump(),
        diameter_px=float(diameter_px),
        pixel_size=pixel_size,
        threshold=threshold if np.isfinite(threshold) else None,
        border_fraction=float(best["border_fraction"]),
        validation=validation | {"n_micrographs": float(len(prob_maps))},
        tuned_on=tuned_on_sparse(float(expected_particles)) if sparse else TUNED_ON_FULL,
        expected_particles=float(expected_particles) if sparse else None,
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
