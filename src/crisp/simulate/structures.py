"""A catalogue of atomic structures shipped inside PyPI packages, and density maps built from them.

Every structure here is a PDB entry (the PDB archive is CC0) whose coordinate file is shipped in a
package on PyPI, as the bundled 4JSV map's was (:mod:`crisp.data.make_reference_map`). Nothing is
downloaded at run time: a structure is read either

1. from the installed package (``pip install PACKAGE==VERSION``), where the file is package data
   (``import_package`` is set), or
2. from the package's source archive, fetched once at install time with
   ``pip download --no-deps --no-binary :all: PACKAGE==VERSION -d DIR`` and found through
   ``sources=[DIR]`` or the environment variable ``CRISP_STRUCTURE_SOURCES`` (folders separated by
   ``os.pathsep``). A folder may hold the ``.tar.gz`` archive itself or the unpacked tree.

The file's SHA-256 is checked. ``docs/structure_corpus.md`` lists the structures with their sources
and licences; ``python -m crisp.simulate.structures --sources DIR`` re-measures every entry found in
``DIR`` and reports any difference from the catalogue.

Measurements (``max_dimension_A``, ``n_atoms``, ``mass_kDa``) are taken on model 1 (restricted to
the entry's ``chains`` when the file holds several copies of the particle) after removing waters,
ligands and hydrogens (:func:`clean_structure`): the maximum dimension is the largest distance
between two remaining atoms (on their convex hull).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import importlib.util
import io
import math
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import gemmi
import numpy as np

from crisp.errors import CrispError
from crisp.simulate.structure_catalogue import (  # noqa: F401 - re-exported
    MAX_DIMENSION_A,
    MIN_DIMENSION_A,
    SOURCES_ENV,
    STRUCTURES,
    StructureEntry,
)


# --------------------------------------------------------------------------------------------
# lookup
# --------------------------------------------------------------------------------------------
def get_structure(name: str) -> StructureEntry:
    """The catalogue entry called ``name``; :class:`CrispError` listing the names if there is none."""
    for entry in STRUCTURES:
        if entry.name == name:
            return entry
    raise CrispError(f"unknown structure {name!r}; known: {', '.join(e.name for e in STRUCTURES)}")


def usable_structures(min_A: float = MIN_DIMENSION_A, max_A: float = MAX_DIMENSION_A
                      ) -> tuple[StructureEntry, ...]:
    """Catalogue entries whose maximum dimension is within ``[min_A, max_A]`` Å."""
    return tuple(e for e in STRUCTURES if min_A <= e.max_dimension_A <= max_A)


def _source_dirs(sources: Iterable[str | os.PathLike[str]] | None) -> list[Path]:
    if sources is None:
        env = os.environ.get(SOURCES_ENV, "")
        sources = [s for s in env.split(os.pathsep) if s]
    return [Path(s) for s in sources]


def _installed_file(entry: StructureEntry) -> Path | None:
    if entry.import_package is None:
        return None
    try:
        spec = importlib.util.find_spec(entry.import_package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    candidate = site / entry.installed_path  # type: ignore[operator]
    return candidate if candidate.is_file() else None


def structure_bytes(entry: StructureEntry,
                    sources: Iterable[str | os.PathLike[str]] | None = None) -> bytes:
    """The file's bytes, from the installed package or a source archive; SHA-256 checked.

    Parameters
    ----------
    entry
        Catalogue entry.
    sources
        Folders holding source archives or unpacked trees; default: ``$CRISP_STRUCTURE_SOURCES``.

    Raises
    ------
    CrispError
        The file is in none of the places (the message says what to install or download), or its
        SHA-256 differs from the catalogue's.
    """
    found: tuple[bytes, str] | None = None
    installed = _installed_file(entry)
    if installed is not None:
        found = installed.read_bytes(), str(installed)
    dirs = _source_dirs(sources)
    for folder in dirs if found is None else ():
        unpacked = folder / entry.path
        if unpacked.is_file():
            found = unpacked.read_bytes(), str(unpacked)
            break
        archive = folder / entry.archive
        if archive.is_file():
            try:
                with tarfile.open(archive, "r:*") as tar:
                    member = tar.extractfile(entry.path)
                    if member is not None:
                        found = member.read(), f"{archive}:{entry.path}"
                        break
            except (KeyError, tarfile.TarError, OSError):
                continue
    if found is None:
        where = ", ".join(str(d) for d in dirs) or f"(none given; set {SOURCES_ENV})"
        how = (f"pip install {entry.requirement}, or " if entry.import_package else "") + (
            f"pip download --no-deps --no-binary :all: {entry.requirement} -d DIR and pass DIR as a source")
        raise CrispError(f"structure {entry.name} ({entry.path}) is not available: {how}; "
                         f"source folders searched: {where}", entry.package)
    data, origin = found
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise CrispError(f"SHA-256 {digest} of structure {entry.name} is not the catalogue's {entry.sha256} "
                         f"(a different version of {entry.package}?)", origin)
    return data


# --------------------------------------------------------------------------------------------
# reading and measuring
# --------------------------------------------------------------------------------------------
def parse_structure(data: bytes, filename: str) -> gemmi.Structure:
    """Parse PDB or mmCIF bytes (optionally .gz or .bz2, told by ``filename``) with gemmi."""
    name = filename.lower()
    if name.endswith(".gz"):
        data, name = gzip.decompress(data), name[:-3]
    elif name.endswith(".bz2"):
        data, name = bz2.decompress(data), name[:-4]
    text = data.decode("utf-8", errors="replace")
    try:
        if name.endswith(".cif"):
            st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        else:
            st = gemmi.read_pdb_string(text)
    except (RuntimeError, ValueError) as exc:
        raise CrispError(f"gemmi cannot read it: {exc}", filename) from exc
    st.name = Path(filename).name
    return st


def clean_structure(st: gemmi.Structure, chains: Sequence[str] = ()) -> gemmi.Structure:
    """Keep model 1's polymer atoms (of ``chains`` only, if given): waters, ligands, ions and
    hydrogens removed (in place). :class:`CrispError` if a chain named is absent."""
    while len(st) > 1:
        del st[len(st) - 1]
    if chains:
        present = {ch.name for ch in st[0]}
        missing = sorted(set(chains) - present)
        if missing:
            raise CrispError(f"chains {missing} are not in the structure (it has {sorted(present)})", st.name)
        for i in reversed(range(len(st[0]))):
            if st[0][i].name not in chains:
                del st[0][i]
    st.setup_entities()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    st.remove_empty_chains()
    return st


def atom_coordinates(st: gemmi.Structure) -> np.ndarray:
    """(N, 3) coordinates of model 1's atoms, Å."""
    return np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r], dtype=np.float64)


def max_dimension(xyz: np.ndarray) -> float:
    """Largest distance between two of the points ``xyz`` (N, 3), in their units."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    if len(xyz) < 2:
        return 0.0
    try:
        pts = xyz[ConvexHull(xyz).vertices] if len(xyz) > 4 else xyz
    except QhullError:  # flat or collinear points: the joggled hull keeps every extreme point
        pts = xyz if len(xyz) <= 4000 else xyz[ConvexHull(xyz, qhull_options="QJ").vertices]
    return float(pdist(pts).max())


def measure(st: gemmi.Structure) -> dict[str, object]:
    """Maximum dimension (Å), atom count, mass (kDa) and kind of a cleaned structure."""
    xyz = atom_coordinates(st)
    mass = sum(a.element.weight for ch in st[0] for r in ch for a in r) / 1000.0
    types = {ch.get_polymer().check_polymer_type() for ch in st[0]}
    nucleic = {gemmi.PolymerType.Dna: "DNA", gemmi.PolymerType.Rna: "RNA",
               gemmi.PolymerType.DnaRnaHybrid: "DNA/RNA"}
    partner = sorted({v for k, v in nucleic.items() if k in types})
    if partner:
        kind = f"protein-{'/'.join(partner)} complex"
    else:
        kind = "protein complex" if len(st[0]) > 1 else "protein"
    return {"max_dimension_A": round(max_dimension(xyz), 1), "n_atoms": len(xyz),
            "mass_kDa": round(mass, 1), "kind": kind}


def load_structure(entry: StructureEntry,
                   sources: Iterable[str | os.PathLike[str]] | None = None) -> gemmi.Structure:
    """Read and clean the entry's structure (see :func:`structure_bytes` for where it is looked for)."""
    return clean_structure(parse_structure(structure_bytes(entry, sources), entry.path), entry.chains)


# --------------------------------------------------------------------------------------------
# density
# --------------------------------------------------------------------------------------------
def _smooth_size(n: int) -> int:
    """Smallest even integer >= n whose only prime factors are 2, 3 and 5 (FFT-friendly)."""
    m = max(2, n + (n % 2))
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 2


def structure_density(entry: StructureEntry, pixel_size_A: float, *, box: int | None = None,
                      blur_B: float | None = None, margin_A: float = 20.0,
                      sources: Iterable[str | os.PathLike[str]] | None = None) -> np.ndarray:
    """A density map of the entry's structure on a cubic grid, built with gemmi.

    As :mod:`crisp.data.make_reference_map` does for the bundled map: the cleaned model's centre
    of mass is put at voxel ``box // 2`` (ASPIRE's centre) and ``gemmi.DensityCalculatorX`` puts
    X-ray form-factor density on the grid, with an extra blur that band-limits the map at its
    Nyquist frequency (attenuation e^-3 there) so that it can be Fourier-resampled.

    Parameters
    ----------
    entry
        Catalogue entry.
    pixel_size_A
        Voxel size, Å.
    box
        Edge of the cube, voxels; default: the smallest even 2-3-5-smooth size holding the
        structure's maximum dimension plus ``margin_A``.
    blur_B
        Extra B-factor, Å^2; default ``48 * pixel_size_A**2`` (e^-3 attenuation at Nyquist).
    margin_A
        Empty space added to the maximum dimension when ``box`` is not given, Å.
    sources
        Folders with source archives (see :func:`structure_bytes`).

    Returns
    -------
    numpy.ndarray
        float32 (box, box, box) array indexed [z, y, x], non-negative.

    Raises
    ------
    CrispError
        A non-positive pixel size or box, a box smaller than the structure, or the file missing.
    """
    if not (pixel_size_A > 0 and math.isfinite(pixel_size_A)):
        raise CrispError(f"pixel size must be a positive number of Å, got {pixel_size_A}")
    st = load_structure(entry, sources)
    xyz = atom_coordinates(st)
    model = st[0]
    centre = model.calculate_center_of_mass()
    extent = 2 * float(np.max(np.linalg.norm(xyz - np.array(centre.tolist()), axis=1)))
    if box is None:
        box = _smooth_size(math.ceil((extent + margin_A) / pixel_size_A))
    if box < 2 or box * pixel_size_A < extent:
        raise CrispError(f"box of {box} voxels of {pixel_size_A} Å is smaller than structure {entry.name} "
                         f"({extent:.0f} Å across its centre of mass)")
    half = (box // 2) * pixel_size_A
    shift = gemmi.Position(half - centre.x, half - centre.y, half - centre.z)
    for chain in model:
        for residue in chain:
            for atom in residue:
                atom.pos = atom.pos + shift
    side = box * pixel_size_A
    st.cell = gemmi.UnitCell(side, side, side, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorX()
    calc.d_min = 2 * pixel_size_A * (1 + 1e-9)  # spacing a hair above the pixel: gemmi rounds up to box
    calc.rate = 1.0
    calc.blur = 48.0 * pixel_size_A**2 if blur_B is None else float(blur_B)
    calc.set_grid_cell_and_spacegroup(st)
    calc.put_model_density_on_grid(model)
    grid = np.array(calc.grid, copy=True, dtype=np.float32)  # gemmi's [x, y, z]
    if grid.shape != (box, box, box):
        raise CrispError(f"gemmi chose a grid of {grid.shape} instead of {box}^3 for structure {entry.name}; "
                         "give a box whose only prime factors are 2, 3 and 5")
    return np.ascontiguousarray(np.transpose(grid, (2, 1, 0)))


# --------------------------------------------------------------------------------------------
# re-measuring the catalogue
# --------------------------------------------------------------------------------------------
def remeasure(entry: StructureEntry, sources: Iterable[str | os.PathLike[str]] | None = None
              ) -> dict[str, object]:
    """Measure the entry's file afresh (see :func:`measure`)."""
    return measure(load_structure(entry, sources))


def main(argv: Sequence[str] | None = None) -> int:
    """Re-measure the catalogue entries found in the source folders; print differences."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--sources", nargs="*", default=None, help="folders with source archives")
    args = parser.parse_args(argv)
    bad = 0
    out = io.StringIO()
    for entry in STRUCTURES:
        try:
            got = remeasure(entry, args.sources)
        except CrispError as exc:
            print(f"{entry.name}: skipped: {exc}", file=out)
            continue
        want = {"max_dimension_A": entry.max_dimension_A, "n_atoms": entry.n_atoms,
                "mass_kDa": entry.mass_kDa, "kind": entry.kind}
        status = "ok" if got == want else f"DIFFERS: catalogue {want}, file {got}"
        bad += got != want
        print(f"{entry.name}: {status}", file=out)
    print(out.getvalue(), end="")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
