"""Synthetic micrographs with pixel-level labels and true particle positions (the paper's generator).

For each micrograph ``i`` (name ``{prefix}_{i:04d}``):

1. **Particles.** A number of particles (fixed, or drawn from a range) is placed at random integer
   pixel positions: centres at least one particle radius from the edges, and at least
   ``(1 - max_overlap) * diameter`` apart, i.e. circles of the particle diameter overlap by at most
   ``max_overlap`` of a diameter (default 0.1). Orientations are uniformly random
   (:meth:`aspire.utils.Rotation.generate_random_rotations`).
2. **Projections.** The density map (an MRC file, the bundled 4JSV map, or an ASPIRE Gaussian-blob
   phantom), resampled in Fourier space to the micrograph's pixel size, is projected once per
   particle with :meth:`aspire.volume.Volume.project` at the map's box size, scaled so that the
   projection along z has a peak of 1, and added into the micrograph with the projection's centre
   pixel (``L // 2``, ASPIRE's centre) on the particle's centre. This sum is the CTF-free clean
   micrograph.
3. **CTF.** The contrast transfer function of :class:`aspire.operators.CTFFilter` (voltage kV, Cs
   mm, amplitude contrast as a fraction, defocus U/V in Å, astigmatism angle measured from the x
   (column) axis) is evaluated on the micrograph's own 2-D frequency grid and multiplied with the
   FFT of the whole micrograph (periodic boundaries), giving the noise-free micrograph.
4. **Noise.** White Gaussian noise is added at the requested signal-to-noise ratio, defined as
   ``SNR = var(noise-free CTF-applied micrograph) / var(noise)`` over the whole micrograph
   (the paper: 0.005 at 1.77 Å/px).
5. **Labels** come from the CTF-free clean micrograph: a global threshold (scikit-image
   ``threshold_<name>``, default Li) is computed on it; the **mask** is ``clean > threshold`` with
   enclosed holes filled, joined with the instance footprints; the **instance map** gives each
   particle ``k`` (ids 1..N in placement order) its own footprint, ``projection_k > threshold`` with
   holes filled. If the global threshold would leave a particle's centre outside its footprint (a
   projection that is thin at its centre), that particle's threshold is lowered to half its centre
   value, so every true centre lies inside the mask and inside its own instance. Where footprints
   overlap, the larger id wins.

Angles are written in RELION's convention the way ASPIRE writes them itself (``ImageSource``):
``rlnAngleRot, rlnAngleTilt, rlnAnglePsi`` = the ZYZ Euler angles of ASPIRE's rotation matrix
(:attr:`aspire.utils.Rotation.angles`, scipy's intrinsic ``"ZYZ"``), in degrees.

Reproducibility: micrograph ``i`` uses its own random generator,
``numpy.random.SeedSequence(seed, spawn_key=(i,))``, so it is the same whatever the number of
micrographs asked for; a rerun skips micrographs whose files all exist.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage
from pydantic import field_validator, model_validator

from crisp._aspire import import_aspire
from crisp.config import StageConfig, read_yaml, save_yaml, to_plain, validate_config
from crisp.errors import CrispError
from crisp.io.micrographs import write_mrc

SIMULATION_FILE = "simulation.yaml"
PREVIEW_FILE = "preview.png"
REFERENCE_MAP = "reference_map.mrc"
THRESHOLDS = ("li", "otsu", "yen", "triangle", "isodata", "mean", "minimum")
PHANTOM_PATTERN = re.compile(r"^(?:(c|d)(\d+)|(t|o|i)|(asym|legacy))$")

PRESETS: dict[str, dict[str, Any]] = {
    # quick: 24 micrographs of 512 x 512 at twice the paper's pixel size; SNR 0.02 there is the
    # paper's 0.005 after 2 x 2 binning (white noise variance / 4, signal nearly unchanged)
    "small": {"width_px": 512, "height_px": 512, "pixel_size": 3.54, "count": 24,
              "particles": (20, 20), "snr": 0.02},
    # the paper's benchmark
    "paper": {"width_px": 4096, "height_px": 4096, "pixel_size": 1.77, "count": 84,
              "particles": (150, 150), "snr": 0.005},
}
DEFAULT_PRESET = "small"


class SimulationConfig(StageConfig):
    """Settings of ``crisp simulate`` (every value is recorded in ``simulation.yaml``).

    Attributes
    ----------
    preset
        Name of the preset the values started from (recorded only).
    map
        Density map (MRC); None = the bundled 4JSV map (unless ``phantom`` is given).
    phantom
        ASPIRE Gaussian-blob phantom instead of a map: ``cN`` / ``dN`` (N-fold cyclic / dihedral),
        ``t``, ``o``, ``i``, ``asym`` or ``legacy``.
    map_pixel_size
        Voxel size of ``map`` in Å, overriding its header.
    width_px, height_px
        Micrograph size in pixels (x = columns, y = rows).
    pixel_size
        Å per pixel of the micrographs.
    count
        Number of micrographs.
    particles
        (min, max) number of particles per micrograph, drawn uniformly (inclusive); equal = fixed.
    particle_diameter_A
        Particle diameter for placement (Å); None = measured from the map (twice the largest
        distance from the box centre of a voxel above 5 % of the maximum). For phantoms it also
        sets the phantom's box size (default 64 px).
    max_overlap
        Largest allowed overlap of two particles' diameter circles, as a fraction of the diameter.
    snr
        var(noise-free CTF-applied micrograph) / var(noise).
    voltage_kV, cs_mm, amplitude_contrast
        Microscope: voltage (kV), spherical aberration (mm), amplitude contrast (fraction in [0, 1)).
    defocus_A
        (min, max) defocus in Å (underfocus positive), drawn uniformly per micrograph.
    astigmatism_A
        (min, max) of DefocusU - DefocusV in Å; the angle is uniform in [0, 180) degrees.
    defocus_file, defocus_column
        Draw defocus values from this column of a STAR file instead (e.g. rlnDefocusU of a CTF
        estimation); if the column is rlnDefocusU and the row also has rlnDefocusV and
        rlnDefocusAngle, those are used too.
    threshold
        scikit-image global threshold for the labels: li, otsu, yen, triangle, isodata, mean, minimum.
    save_clean
        Also write the noise-free CTF-applied micrograph into ``clean/``.
    seed
        Master seed.
    prefix
        Micrograph names are ``{prefix}_{index:04d}``.
    """

    preset: str | None = DEFAULT_PRESET
    map: str | None = None
    phantom: str | None = None
    map_pixel_size: float | None = None
    width_px: int = 512
    height_px: int = 512
    pixel_size: float = 3.54
    count: int = 24
    particles: tuple[int, int] = (20, 20)
    particle_diameter_A: float | None = None
    max_overlap: float = 0.1
    snr: float = 0.02
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    defocus_A: tuple[float, float] = (10000.0, 25000.0)
    astigmatism_A: tuple[float, float] = (0.0, 0.0)
    defocus_file: str | None = None
    defocus_column: str = "rlnDefocusU"
    threshold: str = "li"
    save_clean: bool = False
    seed: int = 0
    prefix: str = "synth"

    @field_validator("width_px", "height_px")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 16:
            raise ValueError(f"micrograph size must be at least 16 pixels (got {v})")
        return v

    @field_validator("pixel_size", "voltage_kV")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"must be positive (got {v})")
        return v

    @field_validator("map_pixel_size", "particle_diameter_A")
    @classmethod
    def _positive_or_none(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"must be positive (got {v})")
        return v

    @field_validator("snr")
    @classmethod
    def _snr(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"SNR must be positive and finite (got {v})")
        return v

    @field_validator("cs_mm")
    @classmethod
    def _cs(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"spherical aberration must be >= 0 mm (got {v})")
        return v

    @field_validator("amplitude_contrast")
    @classmethod
    def _ac(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"amplitude contrast must be in [0, 1) (got {v})")
        return v

    @field_validator("count")
    @classmethod
    def _count(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"at least one micrograph (got {v})")
        return v

    @field_validator("particles")
    @classmethod
    def _particles(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"particle range must satisfy 1 <= min <= max (got {v[0]}, {v[1]})")
        return v

    @field_validator("max_overlap")
    @classmethod
    def _overlap(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"overlap fraction must be in [0, 1) (got {v})")
        return v

    @field_validator("defocus_A")
    @classmethod
    def _defocus(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] and math.isfinite(v[1])):
            raise ValueError(f"defocus range must satisfy 0 < min <= max Å (got {v[0]}, {v[1]})")
        return v

    @field_validator("astigmatism_A")
    @classmethod
    def _astig(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 <= v[0] <= v[1] and math.isfinite(v[1])):
            raise ValueError(f"astigmatism range must satisfy 0 <= min <= max Å (got {v[0]}, {v[1]})")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: str) -> str:
        v = v.lower()
        if v not in THRESHOLDS:
            raise ValueError(f"unknown threshold '{v}' (expected one of {', '.join(THRESHOLDS)})")
        return v

    @field_validator("phantom")
    @classmethod
    def _phantom(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        m = PHANTOM_PATTERN.match(v)
        if not m or (m.group(2) is not None and int(m.group(2)) < (1 if m.group(1) == "c" else 2)):
            raise ValueError(f"unknown phantom '{v}' (expected cN, dN, t, o, i, asym or legacy)")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"name prefix may hold only letters, digits, '_', '.', '-' (got '{v}')")
        return v

    @model_validator(mode="after")
    def _source(self) -> SimulationConfig:
        if self.map is not None and self.phantom is not None:
            raise ValueError("give either a map or a phantom, not both")
        if self.astigmatism_A[1] >= 2 * self.defocus_A[0] and self.defocus_file is None:
            raise ValueError("astigmatism must stay below twice the smallest defocus (DefocusV > 0)")
        return self


def make_config(preset: str | None = DEFAULT_PRESET, **overrides: Any) -> SimulationConfig:
    """Build a :class:`SimulationConfig` from a preset (``small`` or ``paper``) and overrides.

    ``None`` values in ``overrides`` are ignored (they mean "not given"). An unknown preset or a bad
    value raises :class:`CrispError`.
    """
    name = DEFAULT_PRESET if preset is None else preset
    if name not in PRESETS:
        raise CrispError(f"unknown preset '{name}' (expected one of {', '.join(PRESETS)})")
    values: dict[str, Any] = {"preset": name, **PRESETS[name]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(SimulationConfig, values)


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
    """Read a cubic 3-D density map; return (float32 array [z, y, x], voxel size in Å)."""
    from crisp.io.volumes import read_volume

    data, voxel = read_volume(path, what="density map")
    voxel = pixel_size or voxel
    if voxel is None or not voxel > 0:
        raise CrispError("the header gives no voxel size; pass the map's pixel size (--map-pixel-size)",
                         path)
    return data, float(voxel)


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


# --------------------------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------------------------
def _write_star(path: Path, df: pd.DataFrame) -> None:
    from crisp.io.coordinates import write_coordinates

    write_coordinates(df, path, fmt="star")


def _outputs(folder, name: str, save_clean: bool) -> list[Path]:
    paths = [folder.instances(name), folder.mask(name), folder.coordinates(name)]
    if save_clean:
        paths.append(folder.clean(name))
    return paths + [folder.micrograph(name)]  # the micrograph is written last


def write_simulated(folder, sim: SimulatedMicrograph, pixel_size: float, save_clean: bool) -> None:
    """Write one simulated micrograph into a dataset folder (each file atomically; micrograph last)."""
    write_mrc(folder.instances(sim.name), sim.instances, pixel_size=pixel_size, dtype=np.int16)
    write_mrc(folder.mask(sim.name), sim.mask, pixel_size=pixel_size, dtype=np.uint8)
    _write_star(folder.coordinates(sim.name), sim.truth)
    if save_clean:
        write_mrc(folder.clean(sim.name), sim.clean_ctf, pixel_size=pixel_size, dtype=np.float32)
    write_mrc(folder.micrograph(sim.name), sim.noisy, pixel_size=pixel_size, dtype=np.float32)


def _check_resumable(path: Path, record: dict[str, Any]) -> None:
    if not path.is_file():
        return
    old = read_yaml(path).get("config", {})
    new = record["config"]
    diff = sorted(k for k in set(old) | set(new) if k != "count" and old.get(k) != new.get(k))
    if diff:
        raise CrispError("the folder holds a simulation with other settings "
                         f"({', '.join(diff)}); use another output folder", path)


def plot_preview(dataset: str | os.PathLike[str], name: str, path: str | os.PathLike[str],
                 max_size: int = 1024) -> Path:
    """PNG of one simulated micrograph: as written; low-passed with the mask outlined and the true
    centres marked; the instance map. Reads the dataset's files, so it works on any finished folder."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from crisp.atomic import atomic_path
    from crisp.dataset import DatasetFolder
    from crisp.io.coordinates import read_coordinates
    from crisp.io.micrographs import read_micrograph
    from crisp.preprocess import block_mean, lowpass
    from crisp.report import display_image

    folder = DatasetFolder(Path(dataset))
    noisy = read_micrograph(folder.micrograph(name)).data
    mask = read_micrograph(folder.mask(name)).data
    instances = read_micrograph(folder.instances(name)).data
    truth = read_coordinates(folder.coordinates(name))
    shown, factor = display_image(noisy, max_size)
    smooth, _ = display_image(lowpass(noisy, sigma_px=2.0 * factor), max_size)
    f = int(factor)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.3))
    axes[0].imshow(shown, cmap="gray")
    axes[0].set_title(f"{name} (as written)", fontsize=9)
    axes[1].imshow(smooth, cmap="gray")
    axes[1].contour(block_mean(mask, f), levels=[0.5], colors=["#2ca02c"], linewidths=0.7)
    axes[1].plot(truth["rlnCoordinateX"] / factor, truth["rlnCoordinateY"] / factor, "+", color="#d62728",
                 markersize=6)
    axes[1].set_title("low-passed; green: mask, red: true centres", fontsize=9)
    axes[2].imshow(np.ma.masked_equal(instances[::f, ::f], 0), cmap="tab20", interpolation="nearest")
    axes[2].set_title(f"instances (1..{int(instances.max())})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def simulate_dataset(out_dir: str | os.PathLike[str], config: SimulationConfig,
                     progress: bool = True, preview: bool = False) -> list[str]:
    """Simulate ``config.count`` micrographs into the dataset folder ``out_dir``.

    Everything is validated (settings, map, defocus file, room for the particles) before anything
    is written. Micrographs whose files all exist are skipped, so an interrupted run resumes.

    With ``preview``, ``preview.png`` (:func:`plot_preview` of the first micrograph) is written when
    absent.

    Returns
    -------
    list of str
        Names of all micrographs of the folder made by this configuration.
    """
    from tqdm import tqdm

    from crisp import __version__
    from crisp.dataset import DatasetFolder

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CrispError("output exists and is not a folder", out)
    table = None if config.defocus_file is None else read_defocus_table(config.defocus_file,
                                                                         config.defocus_column)
    reference = load_reference(config)
    # a cheap feasibility check: random sequential placement jams near 55 % disk coverage
    d = (1 - config.max_overlap) * reference.diameter_px
    usable = max(0.0, config.width_px - reference.diameter_px) * max(0.0, config.height_px
                                                                      - reference.diameter_px)
    if config.particles[1] * math.pi * d * d / 4 > 0.4 * usable:
        raise CrispError(f"{config.particles[1]} particles {reference.diameter_px:.0f} px wide do not fit "
                         f"in {config.width_px} x {config.height_px} pixels; ask for fewer particles, a "
                         "larger micrograph or a larger pixel size")
    record = {"crisp_version": __version__, "config": to_plain(config), "reference": reference.source,
              "snr_definition": "var(noise-free CTF-applied micrograph) / var(noise)",
              "seeding": "micrograph i uses numpy SeedSequence(seed, spawn_key=(i,))"}
    _check_resumable(out / SIMULATION_FILE, record)
    folder = DatasetFolder(out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(out / SIMULATION_FILE, record)
    names = []
    for index in tqdm(range(config.count), desc="simulate", unit="mic", disable=not progress):
        name = f"{config.prefix}_{index:04d}"
        names.append(name)
        if all(p.exists() for p in _outputs(folder, name, config.save_clean)):
            continue
        sim = simulate_micrograph(reference, config, index, table)
        write_simulated(folder, sim, config.pixel_size, config.save_clean)
    if preview and not (out / PREVIEW_FILE).exists():
        plot_preview(out, names[0], out / PREVIEW_FILE)
    return names
