"""The physics of one synthetic micrograph: the density, particle placement, projection, CTF, noise
and labels (see :mod:`crisp.simulate` for the whole recipe)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage

from crisp._aspire import import_aspire
from crisp.errors import CrispError
from crisp.simulate.config import PHANTOM_PATTERN, SimulationConfig

REFERENCE_MAP = "reference_map.mrc"


# --------------------------------------------------------------------------------------------
# volumes
# --------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """The density used for projection, at the micrograph's pixel size.

    Attributes
    ----------
    volume
        float32 cube (L, L, L), centre at voxel L // 2, voxel size = the micrograph's pixel size.
    diameter_px
        Particle diameter used for placement, in micrograph pixels.
    scale
        Projections are divided by this (the peak of the projection along z).
    source
        What the volume is (recorded in simulation.yaml).
    """

    volume: np.ndarray
    diameter_px: float
    scale: float
    source: dict[str, Any]


def bundled_map_path() -> Path:
    """Path of the bundled reference map (4JSV; see ``crisp/data/README.md``)."""
    return Path(str(resources.files("crisp.data").joinpath(REFERENCE_MAP)))


def read_map(path: str | os.PathLike[str], pixel_size: float | None = None) -> tuple[np.ndarray, float]:
    """Read a cubic 3-D density map; return (float32 array [z, y, x], voxel size in Å).

    :func:`crisp.io.volumes.read_volume` with a voxel size required: ``pixel_size`` (Å) when given,
    else the header's.
    """
    from crisp.io.volumes import read_volume

    return read_volume(path, what="density map", voxel_size=pixel_size, voxel_size_option="--map-pixel-size")


def resample_volume(volume: np.ndarray, voxel_size: float, pixel_size: float) -> tuple[np.ndarray, float]:
    """Fourier-resample a cube to ``pixel_size`` keeping its centre voxel (L // 2) at the centre.

    The new box is ``round(L * voxel_size / pixel_size)``; the actual voxel size after resampling is
    returned (it differs from ``pixel_size`` by less than half a voxel over the box).
    """
    from crisp.preprocess import fourier_resize

    n = volume.shape[0]
    m = max(8, int(round(n * voxel_size / pixel_size)))
    if m == n:
        return volume.astype(np.float32, copy=False), voxel_size
    centred = np.fft.ifftshift(volume)  # centre voxel n // 2 -> index 0, which resampling keeps
    out = np.fft.fftshift(fourier_resize(centred, (m, m, m)))  # index 0 -> m // 2
    return np.ascontiguousarray(out, dtype=np.float32), voxel_size * n / m


def make_phantom(name: str, box: int, seed: int) -> np.ndarray:
    """An ASPIRE Gaussian-blob phantom (float32 cube of ``box``) by name: cN, dN, t, o, i, asym, legacy."""
    import_aspire()
    from aspire import volume as av

    m = PHANTOM_PATTERN.match(name.lower())
    if m is None:
        raise CrispError(f"unknown phantom '{name}' (expected cN, dN, t, o, i, asym or legacy)")
    kind, order, poly, other = m.groups()
    common = {"L": box, "C": 1, "seed": seed, "dtype": np.float32}
    if kind == "c":
        vol = av.CnSymmetricVolume(order=int(order), **common)
    elif kind == "d":
        vol = av.DnSymmetricVolume(order=int(order), **common)
    elif poly:
        vol = {"t": av.TSymmetricVolume, "o": av.OSymmetricVolume, "i": av.ISymmetricVolume}[poly](**common)
    elif other == "asym":
        vol = av.AsymmetricVolume(**common)
    else:
        vol = av.LegacyVolume(**common)
    return np.asarray(vol.generate().asnumpy()[0], dtype=np.float32)


def measure_diameter_px(volume: np.ndarray, fraction: float = 0.05) -> float:
    """Twice the largest distance from the box centre (L // 2) of a voxel above ``fraction`` of the max."""
    n = volume.shape[0]
    idx = np.argwhere(volume > fraction * float(volume.max()))
    r = np.sqrt(((idx - n // 2) ** 2).sum(axis=1)).max() if len(idx) else 1.0
    return float(2 * r + 1)


def _project(volume: np.ndarray, rotations) -> np.ndarray:
    import_aspire()
    from aspire.volume import Volume

    return np.array(Volume(volume).project(rotations).asnumpy(), dtype=np.float32, copy=True)


def load_reference(config: SimulationConfig) -> Reference:
    """Prepare the density of ``config`` (map, bundled map or phantom) at the micrograph pixel size."""
    if config.phantom is not None:
        box = 64 if config.particle_diameter_A is None else int(
            round(config.particle_diameter_A / config.pixel_size))
        box = max(16, box + box % 2)
        phantom_seed = int(np.random.SeedSequence(config.seed).generate_state(1)[0] % (2**31))
        volume = make_phantom(config.phantom, box, phantom_seed)
        source = {"kind": "phantom", "name": config.phantom, "box": box, "seed": phantom_seed}
        voxel = config.pixel_size
    else:
        path = bundled_map_path() if config.map is None else Path(config.map)
        data, map_voxel = read_map(path, config.map_pixel_size)
        volume, voxel = resample_volume(data, map_voxel, config.pixel_size)
        source = {"kind": "map", "path": "bundled:" + REFERENCE_MAP if config.map is None else str(path),
                  "map_box": int(data.shape[0]), "map_voxel_size_A": map_voxel,
                  "box": int(volume.shape[0]), "voxel_size_A": voxel}
    if config.particle_diameter_A is not None:
        diameter = config.particle_diameter_A / config.pixel_size
    else:
        diameter = measure_diameter_px(volume)
    import_aspire()
    from aspire.utils import Rotation

    top = _project(volume, Rotation(np.eye(3, dtype=np.float32)[None]))[0]
    scale = float(top.max())
    if not scale > 0:
        raise CrispError("the density's projection is not positive anywhere", config.map)
    source["diameter_px"] = round(float(diameter), 2)
    return Reference(volume=volume, diameter_px=float(diameter), scale=scale, source=source)


# --------------------------------------------------------------------------------------------
# CTF
# --------------------------------------------------------------------------------------------
def ctf_2d(shape: tuple[int, int], pixel_size: float, defocus_u: float, defocus_v: float,
           defocus_angle_deg: float, voltage_kV: float, cs_mm: float,
           amplitude_contrast: float) -> np.ndarray:
    """ASPIRE's CTF evaluated on the real-FFT frequency grid of an image of ``shape``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (ny, nx // 2 + 1), matching :func:`scipy.fft.rfft2` of the image.
        Frequencies: rows ``fftfreq(ny)``, columns ``rfftfreq(nx)`` in cycles/pixel; ASPIRE's
        ``omega`` is ``2 pi`` times those, stacked (x, y). The astigmatism angle (degrees, as
        rlnDefocusAngle) is the direction of DefocusU measured from the +x (column) axis towards the
        +y (row) axis, i.e. ``arctan2(fy, fx)``. At zero frequency the CTF is ``-amplitude_contrast``
        (ASPIRE's sign: ``sqrt(1 - A^2) sin(chi) - A cos(chi)`` with ``chi < 0`` for underfocus),
        so particles of positive density appear dark, as in real micrographs.
    """
    import_aspire()
    from aspire.operators import CTFFilter

    ny, nx = shape
    fy = np.fft.fftfreq(ny).astype(np.float32)
    fx = np.fft.rfftfreq(nx).astype(np.float32)
    omega = np.empty((2, ny, fx.size), dtype=np.float32)
    omega[0] = (2 * np.pi) * fx[None, :]
    omega[1] = (2 * np.pi) * fy[:, None]
    ctf = CTFFilter(voltage=voltage_kV, defocus_u=defocus_u, defocus_v=defocus_v,
                    defocus_ang=np.deg2rad(defocus_angle_deg), Cs=cs_mm, alpha=amplitude_contrast)
    h = ctf.evaluate(omega.reshape(2, -1), pixel_size=pixel_size)
    return np.asarray(h, dtype=np.float32).reshape(ny, fx.size)


def apply_ctf(image: np.ndarray, ctf: np.ndarray) -> np.ndarray:
    """Multiply the FFT of ``image`` (periodic) by ``ctf`` from :func:`ctf_2d`; float32 result."""
    spectrum = scipy.fft.rfft2(np.asarray(image, dtype=np.float32), workers=-1)
    spectrum *= ctf
    return scipy.fft.irfft2(spectrum, s=image.shape, workers=-1).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# one micrograph
# --------------------------------------------------------------------------------------------
@dataclass
class SimulatedMicrograph:
    """Everything simulated for one micrograph (arrays [row (y), column (x)])."""

    name: str
    noisy: np.ndarray
    clean: np.ndarray
    clean_ctf: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    truth: pd.DataFrame
    threshold: float


def micrograph_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of micrograph ``index``: independent of how many micrographs are made."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def place_particles(rng: np.random.Generator, n: int, shape: tuple[int, int], diameter_px: float,
                    max_overlap: float, max_tries: int = 200) -> np.ndarray:
    """Random integer centres (x, y), at least a radius from the edges and ``(1 - max_overlap)``
    diameters apart. Raises :class:`CrispError` when ``n`` do not fit after many tries."""
    ny, nx = shape
    margin = int(math.ceil(diameter_px / 2))
    if nx - 2 * margin < 1 or ny - 2 * margin < 1:
        raise CrispError(f"a {nx} x {ny} micrograph is too small for particles {diameter_px:.0f} px wide")
    min_dist2 = ((1 - max_overlap) * diameter_px) ** 2
    centres = np.empty((0, 2), dtype=np.int64)
    for _ in range(max_tries):
        need = n - len(centres)
        cand = np.column_stack([rng.integers(margin, nx - margin, size=4 * need, endpoint=True),
                                rng.integers(margin, ny - margin, size=4 * need, endpoint=True)])
        for c in cand:
            if len(centres) and (((centres - c) ** 2).sum(axis=1) < min_dist2).any():
                continue
            centres = np.vstack([centres, c])
            if len(centres) == n:
                return centres
    raise CrispError(f"could not place {n} particles {diameter_px:.0f} px wide without more than "
                     f"{max_overlap:.0%} overlap in {nx} x {ny} pixels; ask for fewer particles")


def _boxes(centre: np.ndarray, box: int,
           shape: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the micrograph and of a ``box`` projection whose centre L // 2 sits on ``centre``."""
    x, y = int(centre[0]), int(centre[1])
    c = box // 2
    y0, x0 = y - c, x - c
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(shape[0], y0 + box), min(shape[1], x0 + box)
    return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not touch the image border (fast, by labelling)."""
    labels, n = scipy.ndimage.label(~mask)
    if n == 0:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.zeros(n + 1, dtype=bool)
    keep[border] = True
    keep[0] = True  # label 0 = foreground
    return mask | ~keep[labels]


def _threshold(image: np.ndarray, method: str) -> float:
    import skimage.filters

    return float(getattr(skimage.filters, f"threshold_{method}")(image))


def draw_defocus(rng: np.random.Generator, config: SimulationConfig,
                 table: pd.DataFrame | None) -> tuple[float, float, float]:
    """(DefocusU, DefocusV, angle in degrees) for one micrograph."""
    if table is not None:
        row = table.iloc[int(rng.integers(len(table)))]
        value = float(row[config.defocus_column])
        full_row = {"rlnDefocusV", "rlnDefocusAngle"} <= set(table.columns)
        if config.defocus_column == "rlnDefocusU" and full_row:
            return value, float(row["rlnDefocusV"]), float(row["rlnDefocusAngle"])
        mean = value
    else:
        mean = float(rng.uniform(*config.defocus_A))
    astig = float(rng.uniform(*config.astigmatism_A))
    angle = float(rng.uniform(0.0, 180.0)) if astig > 0 else 0.0
    return mean + astig / 2, mean - astig / 2, angle


def read_defocus_table(path: str | os.PathLike[str], column: str) -> pd.DataFrame:
    """Rows of a STAR file with a positive ``column`` of defocus values (Å)."""
    from crisp.io.coordinates import read_star_tables

    path = Path(path)
    for df in read_star_tables(path, what="defocus file").values():
        if isinstance(df, pd.DataFrame) and column in df.columns:
            values = pd.to_numeric(df[column], errors="coerce")
            if values.isna().any() or not (values > 0).all():
                raise CrispError(f"column {column} holds missing, zero or negative defocus values", path)
            cols = [c for c in (column, "rlnDefocusV", "rlnDefocusAngle") if c in df.columns]
            table = df[cols].apply(pd.to_numeric, errors="coerce").reset_index(drop=True)
            if "rlnDefocusV" in table and not (table["rlnDefocusV"] > 0).all():
                raise CrispError("column rlnDefocusV holds missing, zero or negative values", path)
            return table
    raise CrispError(f"no column {column} in any data block", path)


def simulate_micrograph(reference: Reference, config: SimulationConfig, index: int,
                        defocus_table: pd.DataFrame | None = None) -> SimulatedMicrograph:
    """Simulate micrograph ``index`` of ``config`` (deterministic given the seed and index)."""
    import_aspire()
    from aspire.utils import Rotation

    rng = micrograph_rng(config.seed, index)
    shape = (config.height_px, config.width_px)
    name = f"{config.prefix}_{index:04d}"
    n = int(rng.integers(config.particles[0], config.particles[1], endpoint=True))
    centres = place_particles(rng, n, shape, reference.diameter_px, config.max_overlap)
    rot_seed = int(rng.integers(2**31))
    defocus_u, defocus_v, defocus_angle = draw_defocus(rng, config, defocus_table)

    rotations = Rotation.generate_random_rotations(n, seed=rot_seed, dtype=np.float32)
    projections = _project(reference.volume, rotations)
    projections /= np.float32(reference.scale)
    box = projections.shape[-1]

    clean = np.zeros(shape, dtype=np.float32)
    placed = []
    for k in range(n):
        dest, src = _boxes(centres[k], box, shape)
        clean[dest] += projections[k][src]
        placed.append((dest, src))
    threshold = _threshold(clean, config.threshold)

    instances = np.zeros(shape, dtype=np.int16)
    c = box // 2
    for k, (dest, src) in enumerate(placed):
        proj = projections[k]
        level = threshold if proj[c, c] > threshold else 0.5 * float(proj[c, c])
        footprint = _fill_holes(proj > level)[src]
        region = instances[dest]
        np.maximum(region, np.where(footprint, np.int16(k + 1), np.int16(0)), out=region)
    mask = _fill_holes(clean > threshold) | (instances > 0)

    ctf = ctf_2d(shape, config.pixel_size, defocus_u, defocus_v, defocus_angle, config.voltage_kV,
                 config.cs_mm, config.amplitude_contrast)
    clean_ctf = apply_ctf(clean, ctf)
    del ctf
    noise_std = math.sqrt(float(clean_ctf.var(dtype=np.float64)) / config.snr)
    noisy = rng.standard_normal(shape, dtype=np.float32)
    noisy *= np.float32(noise_std)
    noisy += clean_ctf

    angles = np.rad2deg(rotations.angles.astype(np.float64))
    truth = pd.DataFrame({
        "rlnMicrographName": f"{name}.mrc",
        "rlnCoordinateX": centres[:, 0].astype(float),
        "rlnCoordinateY": centres[:, 1].astype(float),
        "rlnAngleRot": angles[:, 0],
        "rlnAngleTilt": angles[:, 1],
        "rlnAnglePsi": angles[:, 2],
        "rlnDefocusU": defocus_u,
        "rlnDefocusV": defocus_v,
        "rlnDefocusAngle": defocus_angle,
        "rlnVoltage": config.voltage_kV,
        "rlnSphericalAberration": config.cs_mm,
        "rlnAmplitudeContrast": config.amplitude_contrast,
    })
    return SimulatedMicrograph(name=name, noisy=noisy, clean=clean, clean_ctf=clean_ctf,
                               mask=mask.astype(np.uint8), instances=instances, truth=truth,
                               threshold=threshold)

