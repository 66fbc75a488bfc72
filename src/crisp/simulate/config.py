"""Settings of ``crisp simulate``: :class:`SimulationConfig`, the presets and :func:`make_config`."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import field_validator, model_validator

from crisp.config import StageConfig, validate_config
from crisp.errors import CrispError

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

