"""Particle extraction: one ``.mrcs`` stack per micrograph and a RELION 3.1+ ``particles.star``.

Layout written under ``OUT``::

    OUT/particles.star           data_optics (one optics group) + data_particles
    OUT/Particles/NAME.mrcs      float32 stack, pixel size (Å) of the extracted images in the header
    OUT/crisp-batch.json         the batch manifest (settings); OUT/.crisp-batch/ per-micrograph records

Box convention (exactly RELION 3.1's ``relion_preprocess --extract``, checked against it in
``tests/test_relion.py``): a pick at ``(x, y)`` (x = column, y = row, pixels of the original
micrograph) is truncated to whole pixels ``xi = (long int) x``, ``yi = (long int) y`` (towards zero,
not rounded: a pick at 100.7 is cut around pixel 100), and image ``k`` of the stack is
``micrograph[yi - box//2 : yi - box//2 + box, xi - box//2 : xi - box//2 + box]``, so the pick lies
at pixel ``(box//2, box//2)`` of its image up to the truncated fraction. Image ``k`` (1-based) of
``NAME.mrcs`` is the ``k``-th kept pick of that micrograph in table order.

Edge policy: picks whose box leaves the micrograph are skipped and counted
(``ExtractionResult.n_outside``). RELION differs here: it also extracts boxes that leave the
micrograph partly (filling the missing pixels with the nearest edge pixel) and skips only boxes
entirely outside it, so RELION gives the same images as CRISP for every pick CRISP keeps, plus one
edge-padded image per pick within ``box / 2`` of an edge.

Each image is optionally binned by Fourier cropping (box / bin pixels), then normalised as RELION
does with ``--norm --no_ramp``: zero mean and unit standard deviation of the background, the pixels
farther than ``bg_radius_px`` (default 0.75 * box / 2, RELION's default) from the centre (no plane
is fitted and subtracted first, which RELION does unless ``--no_ramp``), then contrast-inverted by
default (RELION's ``--invert_contrast``: white particles, as RELION's 3D work needs; after
normalisation, so the background stays at mean 0, std 1). With the same box, ``--bg_radius``,
``--invert_contrast`` and ``--no_ramp``, RELION 3.1's images equal CRISP's to float precision.

Paths: RELION resolves ``rlnImageName`` and ``rlnMicrographName`` relative to the folder it runs
in (its project folder). Both are written relative to ``project_dir`` (``crisp extract
--project-dir``, default the working folder; :func:`extract_particles` defaults to ``OUT``), with
``..`` where a file lies outside it, so running RELION in ``project_dir`` finds both the stacks and
the micrographs. cryoSPARC's Import Particle Stack takes ``OUT/particles.star`` as the particle meta
path and the folder the image names are relative to as the particle data path.

Extraction runs on the batch engine (:mod:`crisp.batch`, verb ``extract``; manifest
``OUT/crisp-batch.json``, records in ``OUT/.crisp-batch/``): one item per micrograph, its output
its stack. A rerun skips stacks done with the same settings and picks, refuses other settings or
picks naming what differs (unless ``overwrite``), and redoes a micrograph whose file changed;
``particles.star`` is written last, from every micrograph done in ``OUT``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crisp.atomic import atomic_path
from crisp.errors import CrispError
from crisp.io.micrographs import read_micrograph, write_mrc

X, Y, FOM, NAME = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
STACK_DIR = "Particles"
STAR_NAME = "particles.star"
# per-particle columns copied from the picks table when present (CTF and picking metadata)
CARRIED_COLUMNS = ("rlnAutopickFigureOfMerit", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                   "rlnCtfBfactor", "rlnCtfScalefactor", "rlnPhaseShift", "rlnCtfMaxResolution",
                   "rlnCtfFigureOfMerit", "rlnClassNumber", "rlnAnglePsi")


@dataclass
class ExtractionResult:
    """What :func:`extract_particles` did.

    Attributes
    ----------
    star_path
        The ``particles.star`` written.
    n_particles
        Particles in the star file (all stacks).
    n_outside
        Picks skipped because their box leaves the micrograph.
    n_below_threshold
        Picks skipped because their score is below the threshold.
    n_unmatched_picks
        Picks of micrographs not among the given micrograph files.
    per_micrograph
        Stack name -> number of particles (this run's work list, done now or before).
    skipped_existing
        Stacks done before with the same settings and not rewritten (resumed run).
    failed
        Micrograph stem -> error, for micrographs that failed (with ``keep_going``).
    """

    star_path: Path
    n_particles: int = 0
    n_outside: int = 0
    n_below_threshold: int = 0
    n_unmatched_picks: int = 0
    per_micrograph: dict[str, int] = field(default_factory=dict)
    skipped_existing: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def box_corners(x: np.ndarray, y: np.ndarray, box_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner (column, row) of each box, as RELION 3.1's extraction places it.

    RELION casts each coordinate to an integer (``(long int) x``: truncation towards zero), then
    subtracts half the box: ``x0 = trunc(x) - box_px // 2``, ``y0 = trunc(y) - box_px // 2``.

    Parameters
    ----------
    x, y
        Pick positions (column, row) in pixels of the micrograph.
    box_px
        Box side in pixels.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x0, y0)``, int64 pixels.
    """
    xi = np.trunc(np.asarray(x, dtype=np.float64)).astype(np.int64)
    yi = np.trunc(np.asarray(y, dtype=np.float64)).astype(np.int64)
    return xi - box_px // 2, yi - box_px // 2


def inside(x0: np.ndarray, y0: np.ndarray, box_px: int, shape: tuple[int, int]) -> np.ndarray:
    """Whether each box with top-left corner ``(x0, y0)`` lies entirely within ``shape`` (ny, nx)."""
    return (x0 >= 0) & (y0 >= 0) & (x0 + box_px <= shape[1]) & (y0 + box_px <= shape[0])


def cut_boxes(image: np.ndarray, x0: np.ndarray, y0: np.ndarray, box_px: int) -> np.ndarray:
    """Stack of ``box_px`` squares with the given top-left corners (all must lie inside)."""
    if len(x0) == 0:
        return np.zeros((0, box_px, box_px), np.float32)
    return np.stack([image[r:r + box_px, c:c + box_px] for r, c in zip(y0.tolist(), x0.tolist(), strict=True)]
                    ).astype(np.float32, copy=False)


def fourier_crop_stack(stack: np.ndarray, out_px: int) -> np.ndarray:
    """Bin each image of a stack to ``out_px`` square by Fourier cropping (mean preserved)."""
    if stack.shape[-1] == out_px:
        return stack
    try:
        from crisp.preprocess import fourier_resize
    except ImportError:  # pragma: no cover - the preprocessing module is part of the package
        fourier_resize = None
    if fourier_resize is not None:
        return fourier_resize(stack, (stack.shape[0], out_px, out_px))
    import scipy.signal

    out = scipy.signal.resample(stack, out_px, axis=1)
    return scipy.signal.resample(out, out_px, axis=2).astype(np.float32)


def background_mask(box_px: int, bg_radius_px: float) -> np.ndarray:
    """True outside the circle of ``bg_radius_px`` around pixel ``(box_px//2, box_px//2)``."""
    yy, xx = np.mgrid[:box_px, :box_px] - box_px // 2
    return xx * xx + yy * yy > bg_radius_px * bg_radius_px


def normalise_stack(stack: np.ndarray, bg_radius_px: float | None = None) -> np.ndarray:
    """RELION-style normalisation: background (outside ``bg_radius_px``) to mean 0, std 1.

    ``bg_radius_px`` defaults to 0.75 * box / 2 (RELION's default background circle). Images with
    a flat background (std 0) are only centred.
    """
    box = stack.shape[-1]
    radius = 0.75 * box / 2 if bg_radius_px is None else bg_radius_px
    mask = background_mask(box, radius)
    if not mask.any():
        raise CrispError(f"the background circle (radius {radius} px) leaves no background in a {box} px box")
    bg = stack[:, mask]
    mean = bg.mean(axis=1, dtype=np.float64)
    std = bg.std(axis=1, dtype=np.float64)
    std[std == 0] = 1.0
    return ((stack - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def _match_micrographs(micrographs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]
                       ) -> dict[str, Path]:
    from crisp.io.coordinates.pairing import micrographs_by_stem

    return micrographs_by_stem(micrographs)


def _picks_digest(picks: pd.DataFrame) -> str:
    """SHA-256 (first 16 hex digits) of a picks table's names, columns and values."""
    import hashlib

    table = picks.reset_index(drop=True)
    digest = hashlib.sha256("\x1f".join(map(str, table.columns)).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def extraction_settings(box_px: int, bin_factor: int, *, invert: bool, threshold: float | None,
                        pixel_size: float | None, voltage: float, cs: float, amplitude_contrast: float,
                        bg_radius_px: float | None, picks: pd.DataFrame) -> dict:
    """Every setting that decides the stacks and ``particles.star`` (the batch's settings).

    ``picks`` enters as a digest of the table, so other picks into the same folder are refused
    instead of being mixed with stacks of the earlier ones.
    """
    out_px = box_px // bin_factor
    return {"box_px": box_px, "bin_factor": bin_factor, "out_px": out_px,
            "normalisation": "relion-background", "corners": "relion-truncate", "invert": bool(invert),
            "bg_radius_px": 0.75 * out_px / 2 if bg_radius_px is None else float(bg_radius_px),
            "threshold": threshold, "pixel_size": pixel_size, "voltage": float(voltage), "cs": float(cs),
            "amplitude_contrast": float(amplitude_contrast), "picks": _picks_digest(picks)}


@dataclass
class _Plan:
    """One micrograph's share of the extraction, decided from headers before any pixel is read."""

    path: Path
    table: pd.DataFrame  # the kept picks, in table order
    x0: np.ndarray
    y0: np.ndarray
    shape: tuple[int, int]


def extract_particles(micrographs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
                      picks: pd.DataFrame, out_dir: str | os.PathLike[str], box_px: int, *,
                      bin_factor: int = 1, invert: bool = True, threshold: float | None = None,
                      pixel_size: float | None = None, voltage: float = 300.0, cs: float = 2.7,
                      amplitude_contrast: float = 0.1, bg_radius_px: float | None = None,
                      progress: bool = True, overwrite: bool = False, keep_going: bool = False,
                      shard: tuple[int, int] | None = None,
                      input_dirs: Iterable[str | os.PathLike[str]] = (),
                      project_dir: str | os.PathLike[str] | None = None) -> ExtractionResult:
    """Extract particle images into per-micrograph ``.mrcs`` stacks and write ``particles.star``.

    Runs on the batch engine (:func:`crisp.batch.run_batch`, verb ``extract``): one item per
    micrograph with at least one particle to extract, whose output is its stack; the settings are
    :func:`extraction_settings`. Which picks are kept (threshold, boxes inside the micrograph) and
    the pixel size are decided from the headers before anything is written. ``particles.star`` is
    written after the batch from every micrograph done in the folder (so shards of one work list
    give one file).

    Parameters
    ----------
    micrographs
        Folder of micrographs, one file, or a list of files; paired with the picks'
        ``rlnMicrographName`` by :func:`crisp.io.coordinates.micrograph_stem`.
    picks
        Picks table: ``rlnMicrographName``, ``rlnCoordinateX`` (column), ``rlnCoordinateY`` (row) in
        pixels of the original micrograph; optional score and CTF columns (copied to the star file).
    out_dir
        Output folder (see the module docstring for the layout); not an input folder.
    box_px
        Box side in pixels of the original micrograph (even).
    bin_factor
        Integer binning by Fourier cropping; the extracted images are ``box_px / bin_factor`` pixels
        (must be an even integer) of ``pixel_size * bin_factor`` Å.
    invert
        Multiply by -1 after normalisation (default; RELION's ``--invert_contrast``: white
        particles on black, as RELION's 3D work expects). ``False`` keeps the micrograph's contrast.
    threshold
        Keep only picks with ``rlnAutopickFigureOfMerit >= threshold``.
    pixel_size
        Å per pixel of the micrographs; default from their headers (must then agree).
    voltage, cs, amplitude_contrast
        Optics values (kV, mm, fraction) for the optics block.
    bg_radius_px
        Background radius in pixels of the extracted (binned) image; default 0.75 * box / 2.
    progress
        Show a progress bar.
    overwrite
        Recompute every stack, also when ``out_dir`` holds stacks of other settings or picks
        (without it, those are refused naming the setting that differs).
    keep_going
        Go on after a micrograph fails (they are listed at the end); default: stop at the first.
    shard
        ``(I, N)``: extract only the I-th of N shares of the micrographs.
    input_dirs
        Further folders the inputs came from (e.g. the picks' folder); ``out_dir`` may not be one.
    project_dir
        The folder RELION will run in: ``rlnImageName`` and ``rlnMicrographName`` are written
        relative to it (with ``..`` where needed). Default: ``out_dir`` itself.

    Returns
    -------
    ExtractionResult

    Raises
    ------
    CrispError
        Bad box or binning, no picks matching the micrographs, a missing or inconsistent pixel
        size, unreadable micrographs, other settings in ``out_dir`` without ``overwrite``, failed
        micrographs.
    """
    from crisp.batch import Item, Staging, read_records, run_batch
    from crisp.io.coordinates import group_by_micrograph
    from crisp.io.micrographs import read_header_pixel_size, read_micrograph_shape

    box_px = int(box_px)
    bin_factor = int(bin_factor)
    if box_px < 4 or box_px % 2:
        raise CrispError(f"box size must be an even number of pixels >= 4 (got {box_px})")
    if bin_factor < 1 or box_px % bin_factor or (box_px // bin_factor) % 2:
        raise CrispError(f"binning factor {bin_factor} must divide the box size {box_px} into an even size")
    if pixel_size is not None and not pixel_size > 0:
        raise CrispError(f"pixel size must be positive (got {pixel_size})")
    out_px = box_px // bin_factor
    out = Path(out_dir)
    result = ExtractionResult(star_path=out / STAR_NAME)
    lookup = _match_micrographs(micrographs)
    if len(picks) == 0:
        raise CrispError("no picks to extract")
    groups = group_by_micrograph(picks)
    matched = [stem for stem in groups if stem in lookup]
    result.n_unmatched_picks = int(sum(len(g) for s, g in groups.items() if s not in lookup))
    if not matched:
        raise CrispError(f"none of the {len(groups)} micrograph name(s) of the picks matches a micrograph "
                         f"file (e.g. '{next(iter(groups))}')")
    plans: dict[str, _Plan] = {}
    pixel_sizes: set[float] = set()
    for stem in matched:
        table = groups[stem]
        if threshold is not None:
            if FOM not in table.columns:
                raise CrispError(f"a threshold was given but the picks have no {FOM} column")
            keep = table[FOM].to_numpy(dtype=np.float64) >= threshold
            result.n_below_threshold += int((~keep).sum())
            table = table[keep].reset_index(drop=True)
        mic_px = pixel_size or read_header_pixel_size(lookup[stem])
        if mic_px is None:
            raise CrispError("no pixel size in the header; give one (--pixel-size)", lookup[stem])
        pixel_sizes.add(round(float(mic_px), 4))
        shape = read_micrograph_shape(lookup[stem])
        x0, y0 = box_corners(table[X].to_numpy(), table[Y].to_numpy(), box_px)
        ok = inside(x0, y0, box_px, shape)
        result.n_outside += int((~ok).sum())
        if ok.any():
            plans[stem] = _Plan(lookup[stem], table[ok].reset_index(drop=True), x0[ok], y0[ok], shape)
    if len(pixel_sizes) > 1:
        raise CrispError(f"the micrographs have different pixel sizes ({sorted(pixel_sizes)} Å); "
                         "extract them separately or give --pixel-size")
    if not plans:
        raise CrispError(f"no particle could be extracted ({result.n_outside} boxes left the micrograph, "
                         f"{result.n_below_threshold} picks were below the threshold)")
    settings = extraction_settings(box_px, bin_factor, invert=invert, threshold=threshold,
                                   pixel_size=pixel_size, voltage=voltage, cs=cs,
                                   amplitude_contrast=amplitude_contrast, bg_radius_px=bg_radius_px,
                                   picks=picks)
    items = [Item(stem, inputs=(plan.path,), outputs=(f"{STACK_DIR}/{stem}.mrcs",), data=plan)
             for stem, plan in plans.items()]

    def extract_one(item: Item, staging: Staging) -> dict:
        plan: _Plan = item.data
        mic = read_micrograph(plan.path, pixel_size=pixel_size)
        if mic.shape != plan.shape:
            raise CrispError(f"the header says {plan.shape[1]} x {plan.shape[0]} px but the image is "
                             f"{mic.shape[1]} x {mic.shape[0]} px", plan.path)
        stack = cut_boxes(mic.data, plan.x0, plan.y0, box_px)
        stack = normalise_stack(fourier_crop_stack(stack, out_px), bg_radius_px)
        if invert:
            stack = -stack
        write_mrc(staging.path(item.outputs[0]), stack, pixel_size=mic.pixel_size * bin_factor,
                  dtype=np.float32)
        return {"micrograph": str(plan.path), "n_particles": len(plan.table)}

    folders = list(input_dirs)
    if isinstance(micrographs, (str, os.PathLike)) and Path(micrographs).is_dir():
        folders.append(micrographs)
    batch = run_batch("extract", items, extract_one, out, settings, overwrite=overwrite,
                      keep_going=keep_going, progress=progress, shard=shard, input_dirs=folders)
    result.skipped_existing = len(batch.skipped)
    result.failed = dict(batch.failed)
    result.per_micrograph = {stem: int(batch.records[stem]["n_particles"]) for stem in batch.names
                             if stem in batch.records}
    done = read_records(out)
    base = Path(project_dir) if project_dir is not None else out
    rows = [_particle_rows(stem, plans[stem], out, base) for stem in plans
            if done.get(stem, {}).get("status") == "done" and (out / STACK_DIR / f"{stem}.mrcs").is_file()]
    if rows:
        particles = pd.concat(rows, ignore_index=True)
        mic_px = pixel_sizes.pop()
        optics = pd.DataFrame({
            "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnMicrographOriginalPixelSize": [mic_px], "rlnVoltage": [float(voltage)],
            "rlnSphericalAberration": [float(cs)], "rlnAmplitudeContrast": [float(amplitude_contrast)],
            "rlnImagePixelSize": [mic_px * bin_factor], "rlnImageSize": [out_px],
            "rlnImageDimensionality": [2], "rlnCtfDataAreCtfPremultiplied": [0],
        })
        write_particles_star(result.star_path, optics, particles)
        result.n_particles = len(particles)
    batch.raise_failures()
    return result


def project_path(path: str | os.PathLike[str], project_dir: str | os.PathLike[str]) -> str:
    """``path`` as RELION run in ``project_dir`` finds it: relative to it (``..`` where needed), in
    POSIX form."""
    rel = os.path.relpath(Path(path).absolute(), Path(project_dir).absolute())
    return Path(rel).as_posix()


def _particle_rows(stem: str, plan: _Plan, out: Path, project_dir: Path) -> pd.DataFrame:
    """The ``data_particles`` rows of one micrograph's stack (image k = k-th kept pick); both paths
    relative to ``project_dir``."""
    table = plan.table
    stack_rel = project_path(out / STACK_DIR / f"{stem}.mrcs", project_dir)
    part = pd.DataFrame({
        "rlnImageName": [f"{k:06d}@{stack_rel}" for k in range(1, len(table) + 1)],
        NAME: project_path(plan.path, project_dir),
        X: table[X].to_numpy(dtype=np.float64),
        Y: table[Y].to_numpy(dtype=np.float64),
    })
    for column in CARRIED_COLUMNS:
        if column in table.columns:
            part[column] = table[column].to_numpy()
    part["rlnOpticsGroup"] = 1
    return part


def write_particles_star(path: str | os.PathLike[str], optics: pd.DataFrame, particles: pd.DataFrame) -> Path:
    """Write a RELION 3.1+ particles file (``data_optics`` then ``data_particles``) atomically."""
    import starfile

    path = Path(path)
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp)
    return path


MAP_DTYPES = ("float32", "uint8", "float16")
UINT8_MAP_SCALE = 127
"""A probability ``p`` is stored as ``round(p * 127)`` in ``uint8`` maps (MRC mode 0, which readers
take as signed or unsigned bytes alike for 0-127)."""


def write_probability_map(path: str | os.PathLike[str], prob: np.ndarray, dtype: str = "float32",
                          pixel_size: float | None = None) -> Path:
    """Write a foreground-probability map in a storage type its reader can take, atomically.

    Parameters
    ----------
    path
        Destination ``.mrc``.
    prob
        Probabilities in [0, 1], shape (ny, nx).
    dtype
        ``float32`` (MRC mode 2, 4 bytes per pixel: read by every RELION and MRC reader);
        ``uint8`` (MRC mode 0, 1 byte per pixel: ``round(p * 127)``, so divide by
        :data:`UINT8_MAP_SCALE` to get probabilities back); ``float16`` (MRC mode 12, 2 bytes per
        pixel: CRISP's own maps, read by RELION 4+ but not by RELION 3.1).
    pixel_size
        Å per pixel for the header.

    Returns
    -------
    Path

    Raises
    ------
    CrispError
        Unknown ``dtype``, or values outside [0, 1] (not a probability map).
    """
    key = str(dtype).lower()
    if key not in MAP_DTYPES:
        raise CrispError(f"unknown map storage type '{dtype}' (choose from {', '.join(MAP_DTYPES)})", path)
    prob = np.asarray(prob, dtype=np.float32)
    if not np.isfinite(prob).all() or (prob.size and (prob.min() < 0 or prob.max() > 1)):
        raise CrispError("probability map values must be finite and within [0, 1] (is this a micrograph?)",
                         path)
    if key == "uint8":
        data = np.rint(prob * UINT8_MAP_SCALE).astype(np.int8)
        return write_mrc(path, data, pixel_size=pixel_size, dtype=np.int8)
    return write_mrc(path, prob, pixel_size=pixel_size, dtype=np.dtype(key))


def convert_probability_maps(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                             out_dir: str | os.PathLike[str], dtype: str = "float32") -> list[Path]:
    """Rewrite probability maps (e.g. ``crisp segment``'s float16 maps) in another storage type.

    Parameters
    ----------
    inputs
        A folder of ``*.mrc`` maps, one map, or a list of maps.
    out_dir
        Output folder (not the input folder): ``out_dir/NAME.mrc`` per map, pixel size kept.
    dtype
        See :func:`write_probability_map`.

    Returns
    -------
    list of Path
        The maps written.

    Raises
    ------
    CrispError
        No maps, a missing map, ``out_dir`` the maps' folder, values outside [0, 1].
    """
    from crisp.io.micrographs import read_micrograph

    if isinstance(inputs, (str, os.PathLike)) and Path(inputs).is_dir():
        folder = Path(inputs)
        paths = sorted(p for p in folder.glob("*.mrc") if not p.name.startswith("."))
        if not paths:
            raise CrispError("no probability maps (*.mrc) in the folder", folder)
    else:
        paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    out = Path(out_dir)
    for path in paths:
        if not path.is_file():
            raise CrispError("file not found", path)
        if (out / path.name).absolute() == path.absolute() or (
                out.exists() and (out / path.name).resolve() == path.resolve()):
            raise CrispError("the output folder is the maps' folder; give another one", out)
    written = []
    for path in paths:
        image = read_micrograph(path)
        written.append(write_probability_map(out / path.name, image.data, dtype, pixel_size=image.pixel_size))
    return written
