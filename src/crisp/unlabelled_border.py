"""The unannotated border of real micrographs, whose background labels training does not trust.

Pickers and annotators (CryoPPP, RELION's and cryoSPARC's extraction) leave out particles whose box
would cross an edge of the micrograph. Labels made from such coordinates call the particles of a
band along every edge background, and a network trained on them learns to suppress real particles
near the edges, well inside the band where annotations start. (EMPIAR-10017: no annotated centre
lies within 131 px of an edge; a network trained on these labels recalled 73 % of the annotated
particles at 150-200 px from an edge against 92-96 % further in.)

Training can ignore the background labels of that band: the loss and the validation metrics skip
those pixels (label :data:`IGNORE`), while particle labels inside the band still count. The band
is ``margin + radius`` wide, where ``margin`` is the smallest distance of an annotated centre to
an edge: particles centred closer than the margin are not annotated, and their discs reach one
radius further in. With ``"auto"`` the margin is measured on the training coordinates, and no band
is used when annotations come within a particle radius of the edges (complete annotations,
simulated data).

Distances follow :func:`crisp.picking.base.drop_near_border`: pixel centres at integer coordinates
``0 .. n - 1``, the distance of ``x`` to the vertical edges ``min(x, n - 1 - x)``, in pixels of the
original micrograph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

from crisp.dataset import DatasetFolder
from crisp.errors import CrispError

IGNORE = 255
"""Label value of pixels that the loss and the validation metrics skip."""

BorderSetting = float | Literal["auto"] | None


def edge_distance(shape: tuple[int, int], original_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Distance of every pixel centre of a (binned) grid to the nearest edge, in original pixels.

    Parameters
    ----------
    shape
        ``(rows, columns)`` of the grid.
    original_shape
        ``(rows, columns)`` of the micrograph the grid was binned from (default: ``shape``). Binned
        pixel ``i`` of ``m`` covers original pixels ``i * n / m`` to ``(i + 1) * n / m``; its centre
        is at original coordinate ``(i + 0.5) * n / m - 0.5``.
    """
    original_shape = shape if original_shape is None else original_shape

    def axis(m: int, n: int) -> np.ndarray:
        centre = (np.arange(m) + 0.5) * (n / m) - 0.5
        return np.minimum(centre, n - 1 - centre)

    rows = axis(shape[0], original_shape[0])
    cols = axis(shape[1], original_shape[1])
    return np.minimum(rows[:, None], cols[None, :])


def annotation_margin_px(folder: DatasetFolder, names: Iterable[str]) -> float | None:
    """Smallest distance of an annotated centre to an edge of its micrograph (pixels); None if none.

    Reads ``coordinates/NAME.star`` and the micrograph's shape from its MRC header.
    """
    import mrcfile

    from crisp.io.coordinates import read_coordinates

    smallest = None
    for name in names:
        coords_path, mic_path = folder.coordinates(name), folder.micrograph(name)
        if not coords_path.is_file():
            raise CrispError(f"no coordinates for micrograph '{name}' (needed to measure the "
                             "annotated border)", coords_path)
        table = read_coordinates(coords_path)
        if len(table) == 0:
            continue
        with mrcfile.open(mic_path, header_only=True, permissive=True) as mrc:
            rows, cols = int(mrc.header.ny), int(mrc.header.nx)
        x = table["rlnCoordinateX"].to_numpy(np.float64)
        y = table["rlnCoordinateY"].to_numpy(np.float64)
        edge = float(np.min(np.minimum(np.minimum(x, cols - 1 - x), np.minimum(y, rows - 1 - y))))
        smallest = edge if smallest is None else min(smallest, edge)
    return smallest


def resolve_border(setting: BorderSetting, folder: DatasetFolder, names: Iterable[str],
                   diameter_px: float | None) -> float:
    """Width (original pixels) of the band whose background labels are ignored; 0 for none.

    ``None`` or 0: none. A number: that width. ``"auto"``: ``margin + radius`` with the margin of
    :func:`annotation_margin_px` over ``names``, or 0 when the margin is at most one radius.
    """
    if setting is None:
        return 0.0
    if setting != "auto":
        width = float(setting)
        if not width >= 0:
            raise CrispError(f"the unlabelled border must be 'auto' or a width >= 0 px (got {setting})")
        return width
    if not diameter_px:
        raise CrispError("unlabelled border 'auto' needs the particle diameter, which the dataset's "
                         "labels.yaml or simulation.yaml does not record; give a width in pixels",
                         folder.root)
    margin = annotation_margin_px(folder, names)
    radius = diameter_px / 2.0
    if margin is None or margin <= radius:
        return 0.0
    return margin + radius


def mark_unlabelled_border(mask: np.ndarray, width_px: float,
                           original_shape: tuple[int, int] | None = None) -> np.ndarray:
    """A copy of a 0/1 mask whose background pixels within ``width_px`` of an edge are :data:`IGNORE`.

    ``mask`` may be binned from a micrograph of ``original_shape``; ``width_px`` is in original pixels.
    """
    out = np.asarray(mask, dtype=np.uint8).copy()
    if width_px <= 0:
        return out
    near = edge_distance(out.shape, original_shape) < width_px
    out[near & (out == 0)] = IGNORE
    return out
