"""The simulated training corpus of the general particle-picking model (``crisp simulate-corpus``).

The general model works at a fixed scale, :data:`GENERAL_DIAMETER_PX` pixels per particle
diameter, so every micrograph is simulated directly at that scale. Micrograph ``i`` (name
``{prefix}_{i:06d}``) draws everything from its own generator, :func:`micrograph_rng` ``(seed, i)``,
in this order (every draw is recorded in the item's batch record and in ``corpus.csv``):

1. **Structure.** With probability ``phantom_fraction`` an ASPIRE Gaussian-blob phantom (a name of
   ``phantoms``; its diameter ``d_A`` uniform in ``phantom_diameter_A``), else a catalogued atomic
   structure (:mod:`crisp.simulate.structures`; ``d_A`` = its maximum dimension).
2. **Scale.** A jitter ``j`` log-uniform in ``jitter`` (users' diameters are approximate); the pixel
   size is ``p = d_A / (GENERAL_DIAMETER_PX * j)`` Å, so the particle is ``28 j`` pixels across. The
   density is built at ``p`` (gemmi for structures; phantoms are generated in a box that makes their
   measured diameter ``28 j`` px) for this micrograph only.
3. **Nuisances drawn before the particles**: ice crystals and aggregates (with probabilities
   ``p_ice_crystal``, ``p_aggregate``; :mod:`crisp.simulate.nuisances`). True particle centres are
   never placed on an ice crystal or an aggregate (nor within a particle radius of one).
4. **Particles.** A target area fraction uniform in ``coverage`` gives ``n = coverage * area /
   (pi r^2)`` particles, placed at random at least ``(1 - max_overlap) * 28 j`` px apart
   (``max_overlap`` uniform in its range), centres at least a quarter diameter from the edges; as
   many as fit are kept. Orientations uniformly random (ASPIRE); projections scaled so that the
   projection along z peaks at 1.
5. **Carbon** (probability ``p_carbon``): a film beyond a straight edge or a circular hole's edge.
6. **CTF**: defocus uniform in ``defocus_A`` plus astigmatism uniform in ``astigmatism_A`` (angle
   uniform), ``voltage_kV``, ``cs_mm``, amplitude contrast uniform in its range, and a B-factor
   envelope ``exp(-B s^2 / 4)`` (B uniform in ``bfactor_A2``). Applied to all projected density
   (particles, aggregates, carbon, ice) on an image padded by a quarter of its size on each side
   (reflection), so the periodic FFT puts no false edges at the borders.
7. **Noise**: an SNR ``snr_detector`` log-uniform in its range, defined at a detector pixel size
   ``p_det`` uniform in ``detector_pixel_A``, becomes ``snr_grid = snr_detector * (p / p_det)^2`` on the
   simulated grid (binning a detector-pixel micrograph to ``p`` divides the white-noise variance by
   the binning factor squared and keeps the signal). The SNR is the signal power per pixel of
   particle area, ``sum((s - mean(s))^2) / (n pi r^2) / var(noise)`` with ``s`` the CTF'd particles
   alone: unlike the whole-micrograph variance of ``crisp simulate`` it does not change with the
   number of particles (``snr_micrograph``, the whole-micrograph ratio, is recorded too). The noise
   is a mix of white and ``1/f^alpha`` noise (:func:`~crisp.simulate.nuisances.coloured_noise`).
8. **After the noise**: the ice crystals' absorption and an ice-thickness gradient (probability
   ``p_ice_gradient``). The micrograph is written with zero mean and unit standard deviation.

**Labels** (``label``): ``disc`` (default): discs of radius ``0.25 * 28 j`` px (half the particle
radius) at the true centres; ``footprint``: the CTF-free particle image above its Li threshold,
holes filled, joined with those discs. Ice crystals and aggregates are background (0).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage

from crisp.errors import CrispError
from crisp.simulate import nuisances
from crisp.simulate.physics import _boxes, _fill_holes, _project, ctf_2d, make_phantom, micrograph_rng

#: Particle diameter, in pixels of the network's grid, at which the general model works.
GENERAL_DIAMETER_PX = 28
#: Catalogued structures kept out of the default corpus (for the held-out-structure benchmark):
#: the bundled 4JSV map's structure, yeast enolase (70 Å) and CFTR (133 Å).
HELD_OUT_STRUCTURES = ("4jsv", "3enl", "6msm")
#: Phantoms drawn by default.
DEFAULT_PHANTOMS = tuple([f"c{n}" for n in range(3, 13)] + [f"d{n}" for n in range(2, 8)]
                         + ["t", "o", "i", "asym"])
CORPUS_FILE = "corpus.yaml"
TABLE_FILE = "corpus.csv"
PREVIEW_FILE = "preview.png"
VERB = "simulate-corpus"
LABELS = ("disc", "footprint")
DISC_RADIUS_FRACTION = 0.25  # label disc radius, fraction of the particle diameter
EDGE_MARGIN_FRACTION = 0.25  # smallest distance of a true centre from the edge, fraction of a diameter


@dataclass(frozen=True)
class CorpusConfig:
    """Settings of a simulated corpus (see the module docstring; ranges are (low, high))."""

    count: int = 100
    seed: int = 0
    size: int = 512
    prefix: str = "corpus"
    structures: tuple[str, ...] = ()
    phantoms: tuple[str, ...] = DEFAULT_PHANTOMS
    phantom_fraction: float = 0.25
    phantom_diameter_A: tuple[float, float] = (60.0, 400.0)
    jitter: tuple[float, float] = (0.8, 1.25)
    coverage: tuple[float, float] = (0.05, 0.6)
    max_overlap: tuple[float, float] = (0.0, 0.3)
    defocus_A: tuple[float, float] = (5000.0, 35000.0)
    astigmatism_A: tuple[float, float] = (0.0, 1000.0)
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: tuple[float, float] = (0.07, 0.1)
    bfactor_A2: tuple[float, float] = (50.0, 250.0)
    detector_pixel_A: tuple[float, float] = (0.8, 2.0)
    snr_detector: tuple[float, float] = (0.003, 0.05)
    noise_alpha: tuple[float, float] = (0.5, 1.5)
    p_ice_gradient: float = 0.5
    p_carbon: float = 0.2
    p_ice_crystal: float = 0.2
    p_aggregate: float = 0.25
    label: str = "disc"


def default_structures() -> tuple[str, ...]:
    """Names of the catalogue's usable structures (60-400 Å) minus :data:`HELD_OUT_STRUCTURES`."""
    from crisp.simulate.structures import usable_structures

    return tuple(e.name for e in usable_structures() if e.name not in HELD_OUT_STRUCTURES)


def _check_range(name: str, value: tuple[float, float], lo: float | None = None, hi: float | None = None,
                 positive: bool = False) -> None:
    a, b = value
    if not (math.isfinite(a) and math.isfinite(b)):
        raise CrispError(f"{name}: expected finite numbers, got {a}, {b}")
    if a > b:
        raise CrispError(f"{name}: the low end {a:g} is above the high end {b:g}")
    if positive and a <= 0:
        raise CrispError(f"{name}: expected positive numbers, got {a:g}")
    if lo is not None and a < lo:
        raise CrispError(f"{name}: {a:g} is below {lo:g}")
    if hi is not None and b > hi:
        raise CrispError(f"{name}: {b:g} is above {hi:g}")


def check_config(config: CorpusConfig, check_files: bool = True) -> None:
    """Refuse bad settings with a :class:`CrispError` (before anything is written).

    Checks the numbers and ranges, the label kind, the structure and phantom names, that something
    can be drawn, and (``check_files``) that every structure's file can be read.
    """
    from crisp.simulate.config import PHANTOM_PATTERN
    from crisp.simulate.structures import get_structure, packed_structure_names, structure_bytes

    if config.count < 1:
        raise CrispError(f"--count: expected at least 1 micrograph, got {config.count}")
    if config.size < 2 * GENERAL_DIAMETER_PX:
        raise CrispError(f"--size: expected at least {2 * GENERAL_DIAMETER_PX} px, got {config.size}")
    if config.label not in LABELS:
        raise CrispError(f"--label: expected one of {', '.join(LABELS)}, got {config.label!r}")
    for name in ("phantom_fraction", "p_ice_gradient", "p_carbon", "p_ice_crystal", "p_aggregate"):
        v = getattr(config, name)
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise CrispError(f"{name.replace('_', '-')}: expected a fraction in [0, 1], got {v}")
    _check_range("--snr-detector", config.snr_detector, positive=True)
    _check_range("detector pixel size", config.detector_pixel_A, positive=True)
    _check_range("phantom diameter", config.phantom_diameter_A, positive=True)
    _check_range("jitter", config.jitter, positive=True)
    _check_range("coverage", config.coverage, lo=0.0, hi=1.0, positive=True)
    _check_range("max overlap", config.max_overlap, lo=0.0, hi=0.9)
    _check_range("defocus", config.defocus_A, positive=True)
    _check_range("astigmatism", config.astigmatism_A, lo=0.0)
    _check_range("amplitude contrast", config.amplitude_contrast, lo=0.0, hi=0.99)
    _check_range("B-factor", config.bfactor_A2, lo=0.0)
    _check_range("noise exponent", config.noise_alpha, lo=0.0, hi=3.0)
    if not (config.voltage_kV > 0 and config.cs_mm >= 0):
        raise CrispError("voltage must be positive and Cs not negative")
    for name in config.phantoms:
        if PHANTOM_PATTERN.match(name.lower()) is None:
            raise CrispError(f"unknown phantom {name!r} (expected cN, dN, t, o, i, asym or legacy)")
    if config.phantom_fraction < 1 and not config.structures:
        raise CrispError("the structure list is empty: give --structures, or --phantom-fraction 1")
    if config.phantom_fraction > 0 and not config.phantoms:
        raise CrispError("the phantom list is empty but --phantom-fraction is above 0")
    entries = [get_structure(name) for name in config.structures]
    if check_files and config.phantom_fraction < 1:
        packed = set(packed_structure_names())
        for entry in entries:
            if entry.name not in packed:  # read from the installed package or a source archive
                structure_bytes(entry)


# --------------------------------------------------------------------------------------------
# one micrograph
# --------------------------------------------------------------------------------------------
@dataclass
class CorpusMicrograph:
    """One simulated corpus micrograph (arrays [row (y), column (x)], float32 unless stated).

    ``image`` is what is written (zero mean, unit std); ``signal`` the CTF'd particles alone,
    ``noise`` the noise alone (both before that normalisation); ``mask`` uint8 labels; ``excluded``
    the ice-crystal and aggregate areas (bool); ``truth`` RELION-style centres (pixels);
    ``record`` every parameter drawn.
    """

    name: str
    image: np.ndarray
    signal: np.ndarray
    noise: np.ndarray
    mask: np.ndarray
    excluded: np.ndarray
    truth: pd.DataFrame
    record: dict[str, Any]


def micrograph_name(config: CorpusConfig, index: int) -> str:
    """``{prefix}_{index:06d}``."""
    return f"{config.prefix}_{index:06d}"


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _density(config: CorpusConfig, rng: np.random.Generator, jitter: float) -> tuple[np.ndarray, dict]:
    """Draw the structure or phantom and build its density at this micrograph's pixel size."""
    target_px = GENERAL_DIAMETER_PX * jitter
    if config.phantom_fraction > 0 and (not config.structures or rng.uniform() < config.phantom_fraction):
        name = str(config.phantoms[int(rng.integers(len(config.phantoms)))])
        d_A = float(rng.uniform(*config.phantom_diameter_A))
        phantom_seed = int(rng.integers(2**31))
        measured64 = _phantom_diameter(name, 64, phantom_seed)
        box = max(16, int(round(64 * target_px / measured64 / 2)) * 2)
        volume = make_phantom(name, box, phantom_seed)
        from crisp.simulate.physics import measure_diameter_px

        info = {"kind": "phantom", "structure": name, "d_A": d_A, "phantom_seed": phantom_seed,
                "box": box, "measured_diameter_px": measure_diameter_px(volume)}
    else:
        from crisp.simulate.structures import get_structure, structure_density

        name = str(config.structures[int(rng.integers(len(config.structures)))])
        entry = get_structure(name)
        d_A = float(entry.max_dimension_A)
        volume = structure_density(entry, d_A / target_px)
        info = {"kind": "structure", "structure": name, "d_A": d_A, "phantom_seed": -1,
                "box": int(volume.shape[0]), "measured_diameter_px": float("nan")}
    return volume, info


def _phantom_diameter(name: str, box: int, seed: int) -> float:
    from crisp.simulate.physics import measure_diameter_px

    return measure_diameter_px(make_phantom(name, box, seed))


def _projections(volume: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` projections at random orientations (scaled: projection along z peaks at 1), and the
    ZYZ Euler angles in degrees (n, 3)."""
    from aspire.utils import Rotation

    top = _project(volume, Rotation(np.eye(3, dtype=np.float32)[None]))[0]
    scale = float(top.max())
    if n == 0:
        return np.zeros((0,) + top.shape, np.float32), np.zeros((0, 3))
    rotations = Rotation.generate_random_rotations(n, seed=seed, dtype=np.float32)
    proj = _project(volume, rotations)
    proj /= np.float32(scale if scale > 0 else 1.0)
    return proj, np.rad2deg(rotations.angles.astype(np.float64))


def _paste(shape: tuple[int, int], projections: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    if len(centres) == 0:
        return out
    box = projections.shape[-1]
    for k, c in enumerate(centres):
        dest, src = _boxes(c, box, shape)
        out[dest] += projections[k][src]
    return out


def place_centres(rng: np.random.Generator, n: int, shape: tuple[int, int], diameter_px: float,
                  max_overlap: float, forbidden: np.ndarray | None = None, margin_px: float = 0.0,
                  rounds: int = 40) -> np.ndarray:
    """Up to ``n`` random integer centres (x, y), ``(1 - max_overlap) * diameter_px`` apart, at
    least ``margin_px`` from the edges and off ``forbidden`` (bool image); as many as fit."""
    ny, nx = shape
    m = int(math.ceil(margin_px))
    if nx - 2 * m < 1 or ny - 2 * m < 1 or n <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    min_d2 = ((1 - max_overlap) * diameter_px) ** 2
    placed = np.empty((n, 2), dtype=np.int64)
    k = 0
    for _ in range(rounds):
        need = n - k
        cand = np.column_stack([rng.integers(m, nx - m, size=4 * need + 8),
                                rng.integers(m, ny - m, size=4 * need + 8)])
        if forbidden is not None:
            cand = cand[~forbidden[cand[:, 1], cand[:, 0]]]
        for c in cand:
            if k and (((placed[:k] - c) ** 2).sum(axis=1) < min_d2).any():
                continue
            placed[k] = c
            k += 1
            if k == n:
                return placed
    return placed[:k].copy()


def _discs(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    """Boolean image: pixels within ``radius`` of any centre (x, y)."""
    if len(centres) == 0:
        return np.zeros(shape, dtype=bool)
    seeds = np.ones(shape, dtype=bool)
    seeds[centres[:, 1], centres[:, 0]] = False
    return scipy.ndimage.distance_transform_edt(seeds) <= radius


def _bfactor_envelope(shape: tuple[int, int], pixel_size: float, bfactor: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    s2 = (fy * fy + fx * fx) / pixel_size**2
    return np.exp(-bfactor * s2 / 4.0).astype(np.float32)


def _ctf_padded(images: list[np.ndarray], transfer: np.ndarray, pad: int) -> list[np.ndarray]:
    """Each image reflected out by ``pad`` px, multiplied by ``transfer`` in Fourier space, cropped."""
    from crisp.simulate.physics import apply_ctf

    out = []
    for image in images:
        big = np.pad(image, pad, mode="reflect") if pad else image
        res = apply_ctf(big, transfer)
        out.append(np.ascontiguousarray(res[pad:pad + image.shape[0], pad:pad + image.shape[1]]))
    return out


def simulate_corpus_micrograph(config: CorpusConfig, index: int) -> CorpusMicrograph:
    """Simulate micrograph ``index`` of the corpus (deterministic given ``config.seed`` and ``index``;
    independent of ``config.count``)."""
    import skimage.filters

    from crisp._aspire import import_aspire

    import_aspire()
    rng = micrograph_rng(config.seed, index)
    name = micrograph_name(config, index)
    shape = (config.size, config.size)
    jitter = _log_uniform(rng, *config.jitter)
    volume, info = _density(config, rng, jitter)
    diameter = GENERAL_DIAMETER_PX * jitter
    pixel_size = info["d_A"] / diameter
    radius = diameter / 2
    record: dict[str, Any] = {"index": index, **info, "jitter": jitter, "pixel_size_A": pixel_size,
                              "diameter_px": diameter}

    # nuisances that decide where particles may not go
    excluded = np.zeros(shape, dtype=bool)
    use_crystal = bool(rng.uniform() < config.p_ice_crystal)
    use_aggregate = bool(rng.uniform() < config.p_aggregate)
    use_carbon = bool(rng.uniform() < config.p_carbon)
    use_gradient = bool(rng.uniform() < config.p_ice_gradient)
    record.update({"ice_crystal": use_crystal, "aggregate": use_aggregate, "carbon": use_carbon,
                   "ice_gradient": use_gradient})
    crystal_seed, aggregate_seed, carbon_seed, gradient_seed, noise_seed = (
        int(s) for s in rng.integers(2**31, size=5))
    crystal = None
    if use_crystal:
        # the absorption is scaled by the noise std later (its level is drawn now, unit std)
        crystal = nuisances.ice_crystals(np.random.default_rng(crystal_seed), shape, diameter, 1.0)
        excluded |= crystal[2]
        record.update(crystal[3])
    agg_centres = np.zeros((0, 2), dtype=np.int64)
    if use_aggregate:
        agg_centres, agg_params = nuisances.aggregate_centres(np.random.default_rng(aggregate_seed), shape,
                                                              diameter)
        agg_centres = agg_centres[(agg_centres[:, 0] >= 0) & (agg_centres[:, 0] < shape[1])
                                  & (agg_centres[:, 1] >= 0) & (agg_centres[:, 1] < shape[0])]
        record.update(agg_params)
        excluded |= _discs(shape, agg_centres, radius)
    forbidden = scipy.ndimage.binary_dilation(excluded, iterations=int(math.ceil(radius))) if excluded.any() \
        else None

    # particles
    coverage = float(rng.uniform(*config.coverage))
    max_overlap = float(rng.uniform(*config.max_overlap))
    n_wanted = max(1, int(round(coverage * shape[0] * shape[1] / (math.pi * radius**2))))
    centres = place_centres(rng, n_wanted, shape, diameter, max_overlap, forbidden,
                            margin_px=EDGE_MARGIN_FRACTION * diameter)
    n = len(centres)
    rot_seed = int(rng.integers(2**31))
    projections, angles = _projections(volume, n + len(agg_centres), rot_seed)
    clean = _paste(shape, projections[:n], centres)
    record.update({"coverage_target": coverage, "max_overlap": max_overlap, "n_requested": n_wanted,
                   "n_particles": n, "coverage": n * math.pi * radius**2 / (shape[0] * shape[1])})
    nuisance_density = _paste(shape, projections[n:], agg_centres)
    carbon_region = None
    if use_carbon:
        density, carbon_region, params = nuisances.carbon(np.random.default_rng(carbon_seed), shape, diameter)
        nuisance_density += density
        record.update(params)
    if crystal is not None:
        nuisance_density += crystal[0]

    # CTF
    mean_defocus = float(rng.uniform(*config.defocus_A))
    astig = float(rng.uniform(*config.astigmatism_A))
    angle = float(rng.uniform(0.0, 180.0))
    amplitude = float(rng.uniform(*config.amplitude_contrast))
    bfactor = float(rng.uniform(*config.bfactor_A2))
    du, dv = mean_defocus + astig / 2, mean_defocus - astig / 2
    pad = config.size // 4
    padded = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    transfer = ctf_2d(padded, pixel_size, du, dv, angle, config.voltage_kV, config.cs_mm, amplitude)
    transfer *= _bfactor_envelope(padded, pixel_size, bfactor)
    signal, nuisance_ctf = _ctf_padded([clean, nuisance_density], transfer, pad)
    record.update({"defocus_u_A": du, "defocus_v_A": dv, "defocus_angle_deg": angle,
                   "astigmatism_A": astig, "amplitude_contrast": amplitude, "bfactor_A2": bfactor,
                   "voltage_kV": config.voltage_kV, "cs_mm": config.cs_mm})

    # noise
    p_det = float(rng.uniform(*config.detector_pixel_A))
    snr_detector = _log_uniform(rng, *config.snr_detector)
    snr_grid = snr_detector * (pixel_size / p_det) ** 2
    centred = signal - np.float32(signal.mean(dtype=np.float64))
    power = float((centred.astype(np.float64) ** 2).sum()) / (n * math.pi * radius**2) if n else 0.0
    noise_std = math.sqrt(power / snr_grid) if power > 0 else 1.0
    noise, noise_params = nuisances.coloured_noise(np.random.default_rng(noise_seed), shape, noise_std,
                                                   config.noise_alpha)
    record.update({"detector_pixel_A": p_det, "snr_detector": snr_detector, "snr_grid": snr_grid,
                   "snr_micrograph": float(signal.var(dtype=np.float64)) / noise_std**2,
                   "noise_std": noise_std, **noise_params})
    image = signal + nuisance_ctf + noise
    if crystal is not None:
        image += crystal[1] * np.float32(noise_std)
    if use_gradient:
        grad, params = nuisances.ice_gradient(np.random.default_rng(gradient_seed), shape, noise_std)
        image += grad
        record.update(params)
    std = float(image.std(dtype=np.float64))
    image = (image - np.float32(image.mean(dtype=np.float64))) / np.float32(std if std > 0 else 1.0)

    # labels and truth
    mask = _discs(shape, centres, DISC_RADIUS_FRACTION * diameter)
    if config.label == "footprint" and n:
        threshold = float(skimage.filters.threshold_li(clean))
        mask |= _fill_holes(clean > threshold)
        record["label_threshold"] = threshold
    mask &= ~excluded
    record["label"] = config.label
    truth = pd.DataFrame({
        "rlnMicrographName": f"{name}.mrc",
        "rlnCoordinateX": centres[:, 0].astype(float),
        "rlnCoordinateY": centres[:, 1].astype(float),
        "rlnAngleRot": angles[:n, 0], "rlnAngleTilt": angles[:n, 1], "rlnAnglePsi": angles[:n, 2],
        "rlnDefocusU": du, "rlnDefocusV": dv, "rlnDefocusAngle": angle,
        "rlnVoltage": config.voltage_kV, "rlnSphericalAberration": config.cs_mm,
        "rlnAmplitudeContrast": amplitude,
    })
    del carbon_region
    return CorpusMicrograph(name=name, image=image.astype(np.float32), signal=signal, noise=noise,
                            mask=mask.astype(np.uint8), excluded=excluded, truth=truth,
                            record={k: _plain(v) for k, v in record.items()})


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------------
def corpus_settings(config: CorpusConfig) -> dict[str, Any]:
    """Every setting that decides a micrograph (all of ``config`` but ``count``), plain values."""
    from crisp.config import to_plain

    return {k: to_plain(v) for k, v in asdict(config).items() if k != "count"}


def _output_paths(folder, name: str) -> dict[str, Path]:
    return {"mask": folder.mask(name), "coordinates": folder.coordinates(name),
            "micrograph": folder.micrograph(name)}


def _write_files(paths: dict[str, Path], sim: CorpusMicrograph) -> None:
    from crisp.io.coordinates import write_coordinates
    from crisp.io.micrographs import write_mrc

    pixel_size = sim.record["pixel_size_A"]
    write_mrc(paths["mask"], sim.mask, pixel_size=pixel_size, dtype=np.uint8)
    write_coordinates(sim.truth, paths["coordinates"], fmt="star")
    write_mrc(paths["micrograph"], sim.image, pixel_size=pixel_size, dtype=np.float32)


def structure_table(config: CorpusConfig) -> list[dict[str, Any]]:
    """The structures and phantoms a corpus draws from: name, source, licence, size."""
    from crisp.simulate.structures import get_structure

    rows: list[dict[str, Any]] = []
    for name in config.structures:
        e = get_structure(name)
        rows.append({"name": e.name, "kind": "structure", "pdb_id": e.pdb_id, "description": e.description,
                     "source": f"{e.requirement}: {e.path}", "licence": e.licence,
                     "max_dimension_A": e.max_dimension_A})
    if config.phantom_fraction > 0:
        for name in config.phantoms:
            rows.append({"name": name, "kind": "phantom", "pdb_id": None,
                         "description": "ASPIRE Gaussian-blob volume (aspire.volume), generated",
                         "source": "aspire (generated at run time, no data file)",
                         "licence": "GPL-3.0 (ASPIRE code); the volume is generated, not a data file",
                         "max_dimension_A": None})
    return rows


def write_table(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``corpus.csv``: one row per micrograph recorded in ``out_dir`` (sorted by index)."""
    from crisp.atomic import atomic_path
    from crisp.batch import read_records

    rows = []
    for name, record in read_records(out_dir).items():
        rows.append({"name": name, **(record.get("result") or {})})
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("index").reset_index(drop=True)
    with atomic_path(Path(out_dir) / TABLE_FILE) as tmp:
        table.to_csv(tmp, index=False)
    return table


def simulate_corpus(out_dir: str | os.PathLike[str], config: CorpusConfig, *, progress: bool = True,
                    preview: bool = True, overwrite: bool = False, keep_going: bool = False,
                    shard: tuple[int, int] | None = None) -> list[str]:
    """Simulate ``config.count`` corpus micrographs into the dataset folder ``out_dir`` (a batch).

    Settings (and the structure files) are checked before anything is written. A rerun skips the
    micrographs already made with the same settings (all but ``count``) and refuses other settings
    unless ``overwrite``. Afterwards ``corpus.yaml`` (settings, structure list with sources and
    licences, definitions), ``corpus.csv`` (every drawn parameter of every micrograph recorded so far)
    and ``preview.png`` (the first six) are written.

    Returns
    -------
    list of str
        Names of this run's work list (all, or the shard's), in order.
    """
    from crisp import __version__
    from crisp.batch import Item, Staging, run_batch, select_shard
    from crisp.config import save_yaml
    from crisp.dataset import DatasetFolder

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CrispError("output exists and is not a folder", out)
    check_config(config)
    folder = DatasetFolder(out)
    items = []
    for index in range(config.count):
        name = micrograph_name(config, index)
        outputs = tuple(str(p.relative_to(out)) for p in _output_paths(folder, name).values())
        items.append(Item(name, inputs=(), outputs=outputs, data=index))

    def make_one(item: Item, staging: Staging) -> dict:
        sim = simulate_corpus_micrograph(config, item.data)
        final = _output_paths(folder, item.name)
        _write_files({k: staging.path(str(p.relative_to(out))) for k, p in final.items()}, sim)
        return sim.record

    result = run_batch(VERB, items, make_one, out, corpus_settings(config), overwrite=overwrite,
                       keep_going=keep_going, progress=progress, shard=shard)
    record = {"crisp_version": __version__, "general_diameter_px": GENERAL_DIAMETER_PX,
              "count": config.count, "settings": corpus_settings(config),
              "structures": structure_table(config),
              "pixel_size": "d_A / (general_diameter_px * jitter), Å",
              "snr_definition": "snr_grid = snr_detector * (pixel_size / detector_pixel)^2; "
                                "snr = sum((s - mean s)^2) / (n_particles * pi * (diameter_px / 2)^2) / "
                                "var(noise), s = CTF'd particles alone; snr_micrograph = var(s) / var(noise)",
              "labels": f"{config.label}: disc radius {DISC_RADIUS_FRACTION} x diameter_px at true centres"
                        + (" joined with the Li-thresholded CTF-free particle image" if config.label ==
                           "footprint" else "") + "; ice crystals and aggregates are background (0)",
              "seeding": "micrograph i uses numpy SeedSequence(seed, spawn_key=(i,))"}
    save_yaml(out / CORPUS_FILE, record)
    table = write_table(out)
    if preview and len(table):
        from crisp.simulate.corpus_preview import plot_corpus_preview

        plot_corpus_preview(out, table, out / PREVIEW_FILE)
    result.raise_failures()
    work = select_shard(items, shard) if shard else items
    return [item.name for item in work]


def make_corpus_config(**values: Any) -> CorpusConfig:
    """A :class:`CorpusConfig` from keyword values (``None`` = default); default structures:
    :func:`default_structures`. Ranges may be given as one number (low = high)."""
    known = {f.name for f in fields(CorpusConfig)}
    unknown = set(values) - known
    if unknown:
        raise CrispError(f"unknown corpus settings: {', '.join(sorted(unknown))}")
    clean = {k: v for k, v in values.items() if v is not None}
    for k, v in list(clean.items()):
        if isinstance(getattr(CorpusConfig, k, None), tuple) and isinstance(v, (int, float)) and k not in (
                "structures", "phantoms"):
            clean[k] = (float(v), float(v))
        elif isinstance(v, list):
            clean[k] = tuple(v)
    config = CorpusConfig(**clean)
    if "structures" not in clean:
        config = replace(config, structures=default_structures())
    return config
