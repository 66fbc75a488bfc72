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

The file's SHA-256 is checked. Before either, the cleaned atoms of every catalogued structure are
read from the structure pack shipped with CRISP, ``crisp/data/structures.npz`` (made by
:mod:`crisp.data.make_structure_pack`): coordinates relative to the centre of mass in units of
0.01 Å, elements, charges, occupancies, B-factors and anisotropic displacements, and each chain's
name and atom count, so no source file is needed at run time. The pack records each file's
SHA-256; an entry whose SHA-256 differs from the pack's (or that the pack lacks) is read from the
installed package or source archive as above.

``docs/structure_corpus.md`` lists the structures with their sources and licences;
``python -m crisp.simulate.structures --sources DIR`` re-measures every entry found in ``DIR``
(always from the files, never the pack) and reports any difference from the catalogue.

Measurements (``max_dimension_A``, ``n_atoms``, ``mass_kDa``) are taken on model 1 (restricted to
the entry's ``chains`` when the file holds several copies of the particle) after removing waters,
ligands and hydrogens (:func:`clean_structure`): the maximum dimension is the largest distance
between two remaining atoms (on their convex hull).
"""

from __future__ import annotations

import argparse
import bz2
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import tarfile
import zipfile
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

#: The structure pack shipped with CRISP (see :mod:`crisp.data.make_structure_pack`).
PACK_PATH = Path(__file__).resolve().parents[1] / "data" / "structures.npz"
#: Units of the pack's integer arrays: coordinates (Å), B-factors (Å^2), occupancies, U_ij (Å^2).
PACK_COORD_UNIT_A = 0.01
PACK_B_UNIT = 0.01
PACK_OCC_UNIT = 0.01
PACK_ANISO_UNIT = 1e-4


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


# --------------------------------------------------------------------------------------------
# the structure pack
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _read_pack(path: Path) -> tuple[dict[str, dict[str, object]], dict[str, np.ndarray]]:
    """The pack's index (name -> provenance and chains) and its arrays (all read at once: ~7 MB, 0.05 s)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CrispError(f"cannot read the structure pack: {exc}", str(path)) from exc
    index = json.loads(str(arrays.pop("index")))
    return index["structures"], arrays


def _pack_index(path: Path | None = None) -> dict[str, dict[str, object]]:
    path = PACK_PATH if path is None else path
    return _read_pack(path)[0] if path.is_file() else {}


def packed_structure_names(path: Path | None = None) -> tuple[str, ...]:
    """Names of the structures in the pack (``crisp/data/structures.npz``); empty if it is absent."""
    return tuple(_pack_index(path))


def packed_arrays(entry: StructureEntry, path: Path | None = None) -> dict[str, np.ndarray] | None:
    """The pack's arrays for ``entry`` (``xyz`` (N, 3) int16 in 0.01 Å about the centre of mass,
    ``element`` uint8 atomic numbers, ``charge`` int8, ``occ`` uint8 in 0.01, ``b`` uint16 in 0.01 Å^2,
    ``aniso`` (N, 6) int32 U11 U22 U33 U12 U13 U23 in 1e-4 Å^2 when the file has ANISOU data), or
    ``None`` when the pack lacks the entry or holds another file (SHA-256 differs)."""
    path = PACK_PATH if path is None else path
    info = _pack_index(path).get(entry.name)
    if info is None or info.get("sha256") != entry.sha256:
        return None
    arrays = _read_pack(path)[1]
    prefix = f"{entry.name}."
    return {key[len(prefix):]: arr for key, arr in arrays.items() if key.startswith(prefix)}


def structure_from_arrays(arrays: dict[str, np.ndarray], chains: Sequence[tuple[str, int]],
                          name: str = "") -> gemmi.Structure:
    """A gemmi structure (one model) holding the pack's atoms: chain by chain (``(name, n_atoms)``
    pairs, in order), each chain one residue ``UNK`` whose atoms are named by their element."""
    xyz = arrays["xyz"].astype(np.float64) * PACK_COORD_UNIT_A
    b = arrays["b"].astype(np.float64) * PACK_B_UNIT
    occ = arrays["occ"].astype(np.float64) * PACK_OCC_UNIT
    charge = arrays["charge"].tolist()
    aniso = arrays.get("aniso")
    aniso_u = None if aniso is None else aniso.astype(np.float64) * PACK_ANISO_UNIT
    elements = {z: gemmi.Element(int(z)) for z in np.unique(arrays["element"])}
    if sum(n for _, n in chains) != len(xyz):
        raise CrispError(f"the pack's chain sizes do not add up to its {len(xyz)} atoms", name)
    st = gemmi.Structure()
    st.name = name
    model = gemmi.Model(1) if _MODEL_TAKES_INT else gemmi.Model("1")
    i = 0
    for chain_name, n_atoms in chains:
        chain = gemmi.Chain(chain_name)
        residue = gemmi.Residue()
        residue.name = "UNK"
        residue.seqid = gemmi.SeqId(1, " ")
        for _ in range(n_atoms):
            atom = gemmi.Atom()
            el = elements[arrays["element"][i]]
            atom.element = el
            atom.name = el.name.upper()
            atom.pos = gemmi.Position(*xyz[i])
            atom.b_iso = b[i]
            atom.occ = occ[i]
            atom.charge = charge[i]
            if aniso_u is not None and aniso[i].any():
                atom.aniso = gemmi.SMat33f(*aniso_u[i])
            residue.add_atom(atom)
            i += 1
        chain.add_residue(residue)
        model.add_chain(chain)
    st.add_model(model)
    return st


def _model_takes_int() -> bool:
    try:
        gemmi.Model(1)
    except TypeError:
        return False
    return True


_MODEL_TAKES_INT = _model_takes_int()


@functools.lru_cache(maxsize=64)
def _packed_structure(entry: StructureEntry, path: Path) -> gemmi.Structure | None:
    arrays = packed_arrays(entry, path)
    if arrays is None:
        return None
    chains = [(str(c), int(n)) for c, n in _pack_index(path)[entry.name]["chains"]]
    return structure_from_arrays(arrays, chains, entry.name)


def load_structure(entry: StructureEntry, sources: Iterable[str | os.PathLike[str]] | None = None,
                   *, use_pack: bool = True) -> gemmi.Structure:
    """Read and clean the entry's structure.

    From the structure pack when it holds the entry (``use_pack``; atoms only: chains keep their
    names, residues and atom names are not kept), else from the file (see :func:`structure_bytes` for
    where it is looked for). The result is the caller's to change.
    """
    if use_pack:
        packed = _packed_structure(entry, PACK_PATH)
        if packed is not None:
            return packed.clone()
    return clean_structure(parse_structure(structure_bytes(entry, sources), entry.path), entry.chains)


# --------------------------------------------------------------------------------------------
# density
# --------------------------------------------------------------------------------------------
def _radius_about(st: gemmi.Structure, entry: StructureEntry, centre: np.ndarray, use_pack: bool) -> float:
    """Largest distance of an atom of ``st`` from ``centre``, Å (from the pack's array when it has
    the entry: no loop over the atoms)."""
    arrays = packed_arrays(entry) if use_pack else None
    if arrays is not None:
        xyz = arrays["xyz"] * PACK_COORD_UNIT_A
    else:
        xyz = atom_coordinates(st)
    return float(np.sqrt(np.max(np.sum((xyz - centre) ** 2, axis=1))))


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
                      sources: Iterable[str | os.PathLike[str]] | None = None,
                      use_pack: bool = True) -> np.ndarray:
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
        Folders with source archives (see :func:`structure_bytes`), read when the structure pack
        lacks the entry.
    use_pack
        Read the atoms from the structure pack when it holds the entry (coordinates within 0.01 Å of
        the file's); ``False``: always from the file.

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
    st = load_structure(entry, sources, use_pack=use_pack)
    model = st[0]
    centre = model.calculate_center_of_mass()
    extent = 2 * _radius_about(st, entry, np.array(centre.tolist()), use_pack)
    if box is None:
        box = _smooth_size(math.ceil((extent + margin_A) / pixel_size_A))
    if box < 2 or box * pixel_size_A < extent:
        raise CrispError(f"box of {box} voxels of {pixel_size_A} Å is smaller than structure {entry.name} "
                         f"({extent:.0f} Å across its centre of mass)")
    half = (box // 2) * pixel_size_A
    shift = gemmi.Vec3(half - centre.x, half - centre.y, half - centre.z)
    model.transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), shift))  # identity: U_ij unchanged
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
    """Measure the entry's file afresh (see :func:`measure`; never from the pack)."""
    return measure(load_structure(entry, sources, use_pack=False))


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
