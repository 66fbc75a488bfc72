"""Read micrographs (MRC, TIFF, PNG, JPG) into float32 arrays; write MRC atomically.

Arrays are indexed ``[row, column]`` = ``[y, x]`` exactly as :mod:`mrcfile` returns them. Pixel
sizes are in Å. TIFF/PNG/JPG files carry no usable pixel size: give it with ``pixel_size``.

Storage types written by :func:`write_mrc`:

=========================  ==========================================================
array dtype                MRC mode
=========================  ==========================================================
float32 / float64          2 (float32)
float16                    12 (float16)
int8                       0 (int8)
uint8, bool                0 (int8) when max <= 127 (0/1 masks), else 6 (uint16)
int16                      1 (int16)
uint16                     6 (uint16)
other integers             1 or 6 when the values fit, else 2 (float32, exact to 2**24)
=========================  ==========================================================
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from crisp.atomic import atomic_path
from crisp.errors import CrispError

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".st")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
MICROGRAPH_SUFFIXES = MRC_SUFFIXES + IMAGE_SUFFIXES
_MRC_DTYPES = (np.float32, np.float16, np.int8, np.int16, np.uint16)
_FLOAT32_EXACT = 2**24


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
        """(ny, nx) in pixels."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def _check_finite(data: np.ndarray, path: Path) -> None:
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise CrispError(f"contains {bad} NaN or infinite pixel values", path)


def _check_pixel_size(pixel_size: float | None, path: Path | str | None) -> None:
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise CrispError(f"pixel size must be a positive number of Å (got {pixel_size})", path)


def _open_mrc(path: Path, header_only: bool = False):
    """Open an MRC file strictly; translate mrcfile's errors into CrispError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mrcfile.open(path, mode="r", permissive=False, header_only=header_only)
    except (ValueError, OSError, EOFError) as err:
        message = str(err)
        if "Map ID string" in message or "header" in message.lower():
            raise CrispError(f"not an MRC file, or its header is corrupt ({message})", path) from None
        if "Expected" in message and "bytes" in message:
            raise CrispError(f"truncated MRC file ({message})", path) from None
        raise CrispError(f"not a readable MRC file ({message})", path) from None


def _read_mrc(path: Path) -> tuple[np.ndarray, float | None]:
    with _open_mrc(path) as mrc:
        data = mrc.data
        voxel = float(mrc.voxel_size.x)
        is_stack = bool(mrc.is_image_stack() or mrc.is_volume_stack())
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
        data = data.astype(np.float32, copy=True)
    pixel_size = voxel if np.isfinite(voxel) and voxel > 0 else None
    return data, pixel_size


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise CrispError("TIFF file holds no image", path)
        series = tif.series[0]
        axes = series.axes
        data = series.asarray()
    if "S" in axes:  # colour samples (RGB/RGBA) of a grayscale rendering: average the colour channels
        data = np.moveaxis(data, axes.index("S"), -1)
        data = data[..., :3].astype(np.float32).mean(axis=-1)
    data = np.squeeze(data)
    if data.ndim > 2:
        raise CrispError(f"holds a stack of {data.shape[0]} images (shape {data.shape}); "
                         "expected a single micrograph", path)
    return np.squeeze(data)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        n_frames = getattr(img, "n_frames", 1)
        if n_frames > 1:
            raise CrispError(f"holds {n_frames} frames; expected a single micrograph", path)
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
        elif img.mode == "LA":
            img = img.convert("L")
        img.load()
        data = np.asarray(img)
    if data.ndim == 3:  # RGB(A) rendering of a grayscale image: average the colour channels
        data = data[..., :3].astype(np.float32).mean(axis=-1)
    return data


def _read_image(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        data = _read_tiff(path) if suffix in (".tif", ".tiff") else _read_pil(path)
    except CrispError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad or truncated file
        raise CrispError(f"not a readable {suffix[1:].upper()} image, or truncated ({err})", path) from None
    data = np.asarray(data)
    if data.ndim != 2:
        raise CrispError(f"holds an array of shape {data.shape}; expected one 2-D image", path)
    return data.astype(np.float32, copy=True)


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in MICROGRAPH_SUFFIXES:
        raise CrispError(
            f"unknown micrograph format '{suffix}' (expected one of {', '.join(MICROGRAPH_SUFFIXES)})", path)
    return suffix


def read_micrograph(path: str | os.PathLike[str], pixel_size: float | None = None) -> Micrograph:
    """Read one micrograph as float32.

    Parameters
    ----------
    path
        MRC (modes 0, 1, 2, 6, 12: int8, int16, float32, uint16, float16), TIFF, PNG or JPG
        (8- or 16-bit grayscale; RGB renderings are averaged over the colour channels).
        A 3-D MRC is accepted when it holds a single section.
    pixel_size
        Å per pixel. Overrides the header; required in practice for TIFF/PNG/JPG, which carry
        none. An MRC whose header says 0 (unset) gets ``None`` unless this is given.

    Returns
    -------
    Micrograph
        ``data`` float32 of shape (ny, nx) with values as stored (no scaling).

    Raises
    ------
    CrispError
        Missing file, unknown extension, unreadable, non-MRC or truncated file, a stack or
        volume, non-finite values, or a non-positive ``pixel_size``. The message names the file.
    """
    path = Path(path)
    _check_pixel_size(pixel_size, path)
    if not path.is_file():
        raise CrispError("file not found" if not path.exists() else "is not a file", path)
    suffix = _check_suffix(path)
    if suffix in MRC_SUFFIXES:
        data, header_pixel_size = _read_mrc(path)
    else:
        data, header_pixel_size = _read_image(path), None
    if data.size == 0:
        raise CrispError(f"holds an empty image of shape {data.shape}", path)
    _check_finite(data, path)
    return Micrograph(data=data, pixel_size=pixel_size or header_pixel_size, path=path)


def read_header_pixel_size(path: str | os.PathLike[str]) -> float | None:
    """Pixel size in Å from an MRC header (None when the header says 0); reads only the header.

    TIFF/PNG/JPG files give None (they carry no pixel size).
    """
    path = Path(path)
    if not path.is_file():
        raise CrispError("file not found", path)
    if _check_suffix(path) not in MRC_SUFFIXES:
        return None
    with _open_mrc(path, header_only=True) as mrc:
        voxel = float(mrc.voxel_size.x)
    return voxel if np.isfinite(voxel) and voxel > 0 else None


def median_pixel_size(paths: Iterable[str | os.PathLike[str]]) -> float | None:
    """Median pixel size (Å) in the headers of a set of files; None when any of them lacks one.

    Warns when the sizes differ by more than 1 % (then the median stands for them all). Rounded to
    1e-6 Å, so that a value written to YAML reads back equal.
    """
    sizes = [read_header_pixel_size(p) for p in paths]
    if not sizes or any(size is None for size in sizes):
        return None
    median = float(np.median(sizes))
    if max(sizes) > 1.01 * min(sizes):
        warnings.warn(f"pixel sizes differ: {min(sizes):.4g}-{max(sizes):.4g} Å; using the median "
                      f"{median:.4g} Å", stacklevel=2)
    return round(median, 6)


def pixel_size_ratio(reference: float | None, pixel_size: float | None) -> float:
    """``reference / pixel_size``: how many pixels of ``pixel_size`` one ``reference`` pixel spans.

    1.0 when either is unknown (None) or the two agree within 1 %, so that sizes read from
    different headers of the same data do not trigger a resampling.
    """
    if reference is None or pixel_size is None:
        return 1.0
    ratio = reference / pixel_size
    return 1.0 if abs(ratio - 1.0) <= 0.01 else ratio


def read_micrograph_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(ny, nx) of a micrograph from its header, without reading the pixels.

    Raises
    ------
    CrispError
        Missing or unreadable file, or a file holding several sections.
    """
    path = Path(path)
    if not path.is_file():
        raise CrispError("file not found", path)
    suffix = _check_suffix(path)
    try:
        if suffix in MRC_SUFFIXES:
            with _open_mrc(path, header_only=True) as mrc:
                nx, ny, nz = int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)
            if nz != 1:
                raise CrispError(f"holds {nz} sections; expected a single micrograph", path)
            return ny, nx
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with Image.open(path) as img:
            nx, ny = img.size
        return int(ny), int(nx)
    except CrispError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise CrispError(f"not a readable micrograph ({err})", path) from None


def list_micrographs(folder_or_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                     ) -> list[Path]:
    """Expand a folder, a glob pattern, a file, or a list of these to micrograph files.

    Parameters
    ----------
    folder_or_files
        A folder (its files with a micrograph extension, not recursive; hidden files such as
        unfinished ``.name.part.mrc`` are skipped), a glob pattern (``mics/*.mrc``), one file, or a
        list of any of these.

    Returns
    -------
    list of Path
        Sorted, without duplicates.

    Raises
    ------
    CrispError
        A named file or folder that does not exist, a named file with an unsupported extension,
        or nothing found.
    """
    items = [folder_or_files] if isinstance(folder_or_files, (str, os.PathLike)) else list(folder_or_files)
    found: set[Path] = set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.iterdir()
                         if p.is_file() and not p.name.startswith(".")
                         and p.suffix.lower() in MICROGRAPH_SUFFIXES)
        elif path.is_file():
            _check_suffix(path)
            found.add(path)
        elif glob.has_magic(str(item)):
            found.update(Path(p) for p in glob.glob(str(item))
                         if Path(p).is_file() and Path(p).suffix.lower() in MICROGRAPH_SUFFIXES)
        else:
            raise CrispError("no such file or folder", path)
    if not found:
        shown = items[0] if len(items) == 1 else f"{len(items)} inputs"
        raise CrispError(f"no micrographs found (expected files ending in {', '.join(MICROGRAPH_SUFFIXES)})",
                         shown if isinstance(shown, (str, os.PathLike)) else None)
    return sorted(found)


def _storage_array(arr: np.ndarray, path: Path) -> np.ndarray:
    """Convert ``arr`` to a dtype mrcfile stores without loss (see the module docstring)."""
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype in _MRC_DTYPES:
        return arr
    if arr.dtype == np.uint8:
        # mrcfile would store uint8 as mode 6 (uint16, 2 bytes per pixel); 0/1 masks fit mode 0
        return arr.astype(np.int8) if arr.size == 0 or int(arr.max()) <= 127 else arr.astype(np.uint16)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            return arr.astype(np.int16)
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            return arr.astype(np.uint16)
        if max(abs(lo), abs(hi)) > _FLOAT32_EXACT:
            raise CrispError(f"integer values up to {max(abs(lo), abs(hi))} do not fit any MRC mode exactly",
                             path)
        return arr.astype(np.float32)
    if np.iscomplexobj(arr):
        raise CrispError("cannot write complex values as a micrograph", path)
    return arr.astype(np.float32)


def write_mrc(path: str | os.PathLike[str], data: np.ndarray, pixel_size: float | None = None,
              dtype: np.dtype | type | None = None) -> Path:
    """Write a 2-D image (or a stack) to MRC atomically, with the pixel size in the header.

    Parameters
    ----------
    path
        Destination; written under a temporary name first, then renamed, so a failed write
        leaves no file under ``path``.
    data
        Array of shape (ny, nx) or (n, ny, nx) (written as an image stack).
    pixel_size
        Å per pixel for the header (0 = unset when None).
    dtype
        Storage type (float32, float16, uint8, int8, int16, uint16); default: ``data``'s own.
        Either way the array is stored as in the table of the module docstring; uint8 data (masks)
        go to mode 0 when their maximum is at most 127, and read back to the same values.

    Returns
    -------
    Path
        The final path.

    Raises
    ------
    CrispError
        Data that is not 2-D or 3-D, a non-positive pixel size, or values no MRC mode can hold.
    """
    path = Path(path)
    _check_pixel_size(pixel_size, path)
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise CrispError(f"cannot write an array of shape {arr.shape} as MRC (expected 2-D or 3-D)", path)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    arr = np.ascontiguousarray(_storage_array(arr, path))
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr)
            if arr.ndim == 3:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size) if pixel_size else 0.0
    return path
