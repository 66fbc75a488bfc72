"""Read micrographs (MRC, TIFF, PNG, JPG) into float32 arrays; write MRC atomically.

Arrays are indexed ``[row, column]`` = ``[y, x]`` exactly as :mod:`mrcfile` returns them. Pixel
sizes are in Å.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from crisp.atomic import atomic_path
from crisp.errors import CrispError

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".st")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class Micrograph:
    """A 2-D image with its pixel size.

    Attributes
    ----------
    data
        float32 array of shape (ny, nx), indexed [row (y), column (x)].
    pixel_size
        Å per pixel, or None when neither the header nor the user gave one.
    path
        The file it was read from, if any.
    """

    data: np.ndarray
    pixel_size: float | None
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def _check_finite(data: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise CrispError(f"contains {bad} NaN or infinite pixel values", path)


def _read_mrc(path: Path) -> tuple[np.ndarray, float | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                data = np.asarray(mrc.data)
                voxel = float(mrc.voxel_size.x)
                is_stack = mrc.is_image_stack() or mrc.is_volume()
    except (ValueError, OSError, EOFError) as err:
        raise CrispError(f"not a readable MRC file ({err})", path) from None
    if data is None or data.ndim not in (2, 3):
        raise CrispError("MRC file holds no 2-D image", path)
    if data.ndim == 3:
        if data.shape[0] != 1:
            kind = "stack" if is_stack else "volume"
            raise CrispError(
                f"holds a {kind} of {data.shape[0]} sections; expected a single micrograph", path)
        data = data[0]
    if np.iscomplexobj(data):
        raise CrispError("holds complex values; expected a real-valued micrograph", path)
    pixel_size = voxel if voxel > 0 else None
    return data.astype(np.float32, copy=True), pixel_size


def _read_image(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                data = np.asarray(img)
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise CrispError(f"not a readable {suffix[1:].upper()} image ({err})", path) from None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        # grayscale renderings saved as RGB(A): average the colour channels
        data = data[..., :3].astype(np.float32).mean(axis=-1)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise CrispError(f"holds an array of shape {data.shape}; expected one 2-D image", path)
    return data.astype(np.float32, copy=True)


def read_micrograph(path: str | os.PathLike[str], pixel_size: float | None = None) -> Micrograph:
    """Read one micrograph as float32.

    Parameters
    ----------
    path
        MRC (modes 0, 1, 2, 6, 12: int8, int16, float32, uint16, float16), TIFF, PNG or JPG.
        A 3-D MRC is accepted when it holds a single section.
    pixel_size
        Å per pixel. Overrides the header; required in practice for TIFF/PNG/JPG, which carry
        none. An MRC whose header says 0 (unset) gets ``None`` unless this is given.

    Returns
    -------
    Micrograph

    Raises
    ------
    CrispError
        Missing file, unknown extension, unreadable or truncated file, a stack or volume,
        non-finite values, or a non-positive ``pixel_size``.
    """
    path = Path(path)
    if not path.is_file():
        raise CrispError("file not found", path)
    if pixel_size is not None and not (pixel_size > 0):
        raise CrispError(f"pixel size must be positive (got {pixel_size})", path)
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        data, header_pixel_size = _read_mrc(path)
    elif suffix in IMAGE_SUFFIXES:
        data, header_pixel_size = _read_image(path), None
    else:
        raise CrispError(
            f"unknown micrograph format '{suffix}' (expected one of "
            f"{', '.join(MRC_SUFFIXES + IMAGE_SUFFIXES)})", path)
    _check_finite(data, path)
    return Micrograph(data=data, pixel_size=pixel_size or header_pixel_size, path=path)


def write_mrc(path: str | os.PathLike[str], data: np.ndarray, pixel_size: float | None = None,
              dtype: np.dtype | type | None = None) -> Path:
    """Write a 2-D image (or a stack) to MRC atomically, with the pixel size in the header.

    Parameters
    ----------
    path
        Destination; written under a temporary name first, then renamed.
    data
        Array of shape (ny, nx) or (n, ny, nx).
    pixel_size
        Å per pixel for the header (0 = unset when None).
    dtype
        Storage type (float32, float16, uint8, int8, int16, uint16); default: ``data``'s own
        when mrcfile supports it, else float32.

    Returns
    -------
    Path
        The final path.
    """
    path = Path(path)
    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif arr.dtype not in (np.float32, np.float16, np.uint8, np.int8, np.int16, np.uint16):
        arr = arr.astype(np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(arr))
            if arr.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size) if pixel_size else 0.0
    return path
