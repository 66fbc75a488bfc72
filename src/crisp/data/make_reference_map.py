"""Make the reference density map bundled with CRISP (``reference_map.mrc``).

Provenance
----------
Atomic model: PDB entry 4JSV (mTOR-deltaN / mLST8 complex with ATPgammaS, Yang et al., Nature 497,
217-223, 2013; two mTOR-deltaN and two mLST8 chains, ~294 kDa of non-hydrogen atoms, ~178 Å
across). PDB entries are in the public domain (CC0). The file used is the copy shipped in the source
archive of pdbfixer 1.12.0 on PyPI, at ``pdbfixer-1.12.0/pdbfixer/tests/data/4JSV.pdb``; its SHA-256
is checked below. Get it with::

    pip download pdbfixer==1.12.0 --no-binary :all: --no-deps -d /tmp/pdbfixer
    tar xzf /tmp/pdbfixer/pdbfixer-1.12.0.tar.gz -C /tmp/pdbfixer pdbfixer-1.12.0/pdbfixer/tests/data/4JSV.pdb
    python src/crisp/data/make_reference_map.py /tmp/pdbfixer/pdbfixer-1.12.0/pdbfixer/tests/data/4JSV.pdb

Map
---
Waters and ligands removed; the model's centre of mass is moved to the centre of a cubic P1 cell of
64 voxels of 3.54 Å (226.6 Å, twice the paper preset's 1.77 Å/px, so the file stays near 1 MB);
gemmi's ``DensityCalculatorX`` (X-ray form factors) puts the density on that grid with an extra
blur B = 600 Å^2 so that the map is band-limited at its Nyquist frequency (1/7.08 Å^-1, attenuation
~e^-3 there) and can be Fourier-resampled to finer pixels without aliasing. The result is written
as float32 MRC with the voxel size in the header. :mod:`crisp.simulate` resamples it to the
micrograph's pixel size.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import gemmi
import numpy as np

PDB_SHA256 = "1c9a8ad309c4b8a14e805f8fe7eafa649e45e7cd4dad081b51cbedac201d8fa1"
BOX = 64
VOXEL_A = 3.54
BLUR_B = 600.0
OUT = Path(__file__).with_name("reference_map.mrc")


def make_map(pdb_path: Path, out: Path = OUT) -> Path:
    """Compute the map from ``pdb_path`` and write it to ``out``."""
    digest = hashlib.sha256(pdb_path.read_bytes()).hexdigest()
    if PDB_SHA256 is not None and digest != PDB_SHA256:
        raise SystemExit(f"{pdb_path}: SHA-256 {digest} is not the expected {PDB_SHA256}")
    st = gemmi.read_structure(str(pdb_path))
    st.setup_entities()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    model = st[0]
    centre = model.calculate_center_of_mass()
    half = BOX * VOXEL_A / 2
    shift = gemmi.Position(half - centre.x, half - centre.y, half - centre.z)
    for chain in model:
        for residue in chain:
            for atom in residue:
                atom.pos = atom.pos + shift
    st.cell = gemmi.UnitCell(BOX * VOXEL_A, BOX * VOXEL_A, BOX * VOXEL_A, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    calc = gemmi.DensityCalculatorX()
    calc.d_min = 2 * VOXEL_A
    calc.rate = 1.0  # grid spacing d_min / (2 rate) = VOXEL_A
    calc.blur = BLUR_B
    calc.set_grid_cell_and_spacegroup(st)
    calc.put_model_density_on_grid(model)
    if calc.grid.shape != (BOX, BOX, BOX):
        raise SystemExit(f"gemmi chose a grid of {calc.grid.shape}, expected {BOX}^3")
    ccp4 = gemmi.Ccp4Map()
    ccp4.grid = gemmi.FloatGrid(np.asarray(calc.grid.array, dtype=np.float32), st.cell,
                                gemmi.SpaceGroup("P 1"))
    ccp4.update_ccp4_header(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    ccp4.write_ccp4_map(str(out))
    print(f"{out}: {BOX}^3 voxels of {VOXEL_A} Å from {pdb_path} (sha256 {digest})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdb", type=Path, help="4JSV.pdb from the pdbfixer 1.12.0 source archive")
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args()
    make_map(args.pdb, args.out)


if __name__ == "__main__":
    main()
