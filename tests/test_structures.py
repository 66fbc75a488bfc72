"""The structure catalogue (issue 18's corpus) and density maps built from its files."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crisp.errors import CrispError
from crisp.simulate import structures as S

PIXEL_A = 4.0


def _extent_A(volume: np.ndarray, pixel_A: float, fraction: float = 0.05) -> float:
    """Largest distance between voxel centres whose density exceeds ``fraction`` of the peak, Å."""
    idx = np.argwhere(volume > fraction * volume.max()).astype(float)
    return S.max_dimension(idx) * pixel_A


# --------------------------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------------------------
def test_catalogue_names_and_files_are_unique():
    names = [e.name for e in S.STRUCTURES]
    assert len(names) == len(set(names))
    assert len({(e.package, e.path) for e in S.STRUCTURES}) == len(S.STRUCTURES)
    pdb_ids = [e.pdb_id for e in S.STRUCTURES if e.pdb_id]
    assert len(pdb_ids) == len(set(pdb_ids))


def test_catalogue_entries_are_consistent():
    kinds = {"protein", "protein complex", "protein-DNA complex", "protein-RNA complex"}
    for e in S.STRUCTURES:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
        assert e.kind in kinds, e.name
        assert e.licence and "CC0" in e.licence, e.name
        assert e.path.startswith(e.archive.removesuffix(".tar.gz") + "/"), e.name
        assert e.n_atoms > 500 and 10 < e.mass_kDa * 1000 / e.n_atoms < 16, e.name  # ~13.2 Da/atom
        if e.import_package is not None:
            assert e.installed_path is not None and e.installed_path.startswith(e.import_package + "/")
        else:
            assert e.installed_path is None
        assert e.usable == (60.0 <= e.max_dimension_A <= 400.0)


def test_catalogue_has_twenty_usable_structures_of_60_to_400_A():
    usable = S.usable_structures()
    assert len(usable) >= 20
    assert all(60.0 <= e.max_dimension_A <= 400.0 for e in usable)
    assert all(e.usable for e in S.STRUCTURES)  # only usable ones are catalogued
    assert S.get_structure("4jsv").max_dimension_A == pytest.approx(170.0, abs=1.0)


def test_unknown_structure_is_a_crisp_error():
    with pytest.raises(CrispError, match="unknown structure 'nope'"):
        S.get_structure("nope")


def test_missing_file_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv(S.SOURCES_ENV, raising=False)
    monkeypatch.setattr(S, "PACK_PATH", tmp_path / "no-pack.npz")  # as if the pack were not shipped
    entry = S.get_structure("6wg6")  # only in biopython's source archive, never installed
    how = r"biopython.*pip download --no-deps --no-binary :all: biopython==1\.88"
    with pytest.raises(CrispError, match=how):
        S.structure_density(entry, PIXEL_A, sources=[tmp_path])


# --------------------------------------------------------------------------------------------
# density of a synthetic structure with a known size (runs everywhere)
# --------------------------------------------------------------------------------------------
def _strand_pdb(n_res: int, second_chain_z: float | None = None) -> str:
    """A straight poly-glycine chain A along x, 3.5 Å per residue, plus a water far away (and a
    copy of the chain, B, shifted by ``second_chain_z`` Å along z, if given)."""
    lines = []
    serial = 1
    copies = [("A", 0.0)] + ([("B", second_chain_z)] if second_chain_z is not None else [])
    for chain, z in copies:
        for i in range(n_res):
            x = 3.5 * i
            for name, el, (dx, dy, dz) in (("N", "N", (-1.2, 0.5, 0.0)), ("CA", "C", (0.0, 0.0, 0.0)),
                                           ("C", "C", (1.2, 0.5, 0.0)), ("O", "O", (1.2, 1.7, 0.0))):
                lines.append(f"ATOM  {serial:5d}  {name:<3s} GLY {chain}{i + 1:4d}    "
                             f"{x + dx:8.3f}{dy:8.3f}{z + dz:8.3f}  1.00 20.00          {el:>2s}")
                serial += 1
        lines.append("TER")
    water = f"{500.0:8.3f}{0.0:8.3f}{0.0:8.3f}"
    lines.append(f"HETATM{serial:5d}  O   HOH W   1    {water}  1.00 20.00           O")
    return "\n".join(lines + ["END", ""])


@pytest.fixture()
def strand_entry(tmp_path):
    text = _strand_pdb(30).encode()
    path = "fakepkg-1.0/fakepkg/data/strand.pdb"
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_bytes(text)
    base = S.get_structure("4jsv")
    entry = replace(base, name="strand", pdb_id=None, package="fakepkg", version="1.0", path=path,
                    archive="fakepkg-1.0.tar.gz", import_package=None,
                    sha256=hashlib.sha256(text).hexdigest())
    return entry, tmp_path


def test_synthetic_structure_is_measured_and_mapped(strand_entry):
    entry, src = strand_entry
    m = S.remeasure(entry, [src])
    # the water at x = 500 Å is removed; extreme atoms: N of residue 1 and O of residue 30
    expected = float(np.hypot(3.5 * 29 + 1.2 + 1.2, 1.7 - 0.5))
    assert m["max_dimension_A"] == pytest.approx(expected, abs=0.1)
    assert m["n_atoms"] == 120 and m["kind"] == "protein"
    vol = S.structure_density(entry, PIXEL_A, sources=[src])
    assert vol.dtype == np.float32 and vol.ndim == 3 and len(set(vol.shape)) == 1
    assert vol.min() >= 0
    box = vol.shape[0]
    assert box * PIXEL_A >= expected + 20 and box % 2 == 0
    # the strand lies along x, the last array axis (z, y, x): its projection on x is a plateau
    # whose half-height width is the strand's length; across it, only a few voxels
    profile = vol.sum(axis=(0, 1))
    length_A = np.count_nonzero(profile > 0.5 * profile.max()) * PIXEL_A
    assert length_A == pytest.approx(expected, abs=2 * PIXEL_A)
    assert np.count_nonzero(vol.sum(axis=(1, 2)) > 0.5 * vol.sum(axis=(1, 2)).max()) <= 3
    # centre of mass at voxel box // 2
    zz, yy, xx = np.indices(vol.shape)
    centre = [float((a * vol).sum() / vol.sum()) for a in (zz, yy, xx)]
    assert centre == pytest.approx([box // 2] * 3, abs=0.5)
    assert _extent_A(vol, PIXEL_A) == pytest.approx(expected, abs=3 * PIXEL_A)


def test_changed_file_is_refused(strand_entry):
    entry, src = strand_entry
    with pytest.raises(CrispError, match="SHA-256"):
        S.structure_density(replace(entry, sha256="0" * 64), PIXEL_A, sources=[src])


def test_bad_pixel_size_and_small_box_are_refused(strand_entry):
    entry, src = strand_entry
    with pytest.raises(CrispError, match="pixel size"):
        S.structure_density(entry, 0.0, sources=[src])
    with pytest.raises(CrispError, match="smaller than structure"):
        S.structure_density(entry, PIXEL_A, box=10, sources=[src])


# --------------------------------------------------------------------------------------------
# a real catalogue entry, when its package (or source archive) is here
# --------------------------------------------------------------------------------------------
def _available_entry() -> S.StructureEntry | None:
    for entry in sorted(S.STRUCTURES, key=lambda e: e.n_atoms):
        try:
            S.structure_bytes(entry)
        except CrispError:
            continue
        return entry
    return None


def test_real_structure_density_matches_its_recorded_size():
    entry = _available_entry()
    if entry is None:
        pytest.skip(f"no catalogued structure installed or in ${S.SOURCES_ENV} (e.g. pip install pdbfixer)")
    assert S.remeasure(entry) == {"max_dimension_A": entry.max_dimension_A, "n_atoms": entry.n_atoms,
                                  "mass_kDa": entry.mass_kDa, "kind": entry.kind}
    vol = S.structure_density(entry, PIXEL_A)
    assert _extent_A(vol, PIXEL_A) == pytest.approx(entry.max_dimension_A, abs=3 * PIXEL_A)


def test_bundled_reference_map_is_reproduced_from_pdbfixer():
    entry = S.get_structure("4jsv")
    try:
        S.structure_bytes(entry)
    except CrispError:
        pytest.skip(f"pdbfixer 1.12.0 not installed and its source archive not in ${S.SOURCES_ENV}")
    import mrcfile

    ref = mrcfile.read(Path(S.__file__).parents[1] / "data" / "reference_map.mrc")
    vol = S.structure_density(entry, 3.54, box=64, blur_B=600.0, use_pack=False)
    np.testing.assert_allclose(vol, ref, rtol=0, atol=1e-5 * float(ref.max()))


def test_chains_select_one_copy(tmp_path):
    text = _strand_pdb(30, second_chain_z=200.0).encode()
    path = "fakepkg-1.0/fakepkg/data/two.pdb"
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_bytes(text)
    entry = replace(S.get_structure("4jsv"), name="two", package="fakepkg", version="1.0", path=path,
                    archive="fakepkg-1.0.tar.gz", import_package=None,
                    sha256=hashlib.sha256(text).hexdigest())
    whole = S.remeasure(entry, [tmp_path])
    assert whole["n_atoms"] == 240 and whole["kind"] == "protein complex"
    assert whole["max_dimension_A"] > 200.0
    one = S.remeasure(replace(entry, chains=("A",)), [tmp_path])
    assert one["n_atoms"] == 120 and one["kind"] == "protein"
    assert one["max_dimension_A"] == pytest.approx(float(np.hypot(3.5 * 29 + 2.4, 1.2)), abs=0.1)
    with pytest.raises(CrispError, match=r"chains \['Z'\] are not in the structure"):
        S.remeasure(replace(entry, chains=("Z",)), [tmp_path])


def test_catalogue_chain_selections_are_recorded():
    tric = S.get_structure("4v8r")
    assert len(tric.chains) == 16 and tric.max_dimension_A < 200  # one TRiC of the two in the file
    assert S.get_structure("3kpr").chains == ("A", "B", "C", "D", "E")


# --------------------------------------------------------------------------------------------
# the structure pack (crisp/data/structures.npz): no source archive needed
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def no_sources(tmp_path, monkeypatch):
    """No source folder and none in the environment: only the pack can provide a structure."""
    monkeypatch.delenv(S.SOURCES_ENV, raising=False)
    return [tmp_path / "empty"]


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_pack_holds_every_catalogued_structure_with_its_provenance():
    assert S.PACK_PATH.is_file() and S.PACK_PATH.stat().st_size <= 5_000_000
    assert S.packed_structure_names() == tuple(e.name for e in S.STRUCTURES)
    index = S._pack_index()
    for entry in S.STRUCTURES:
        info = index[entry.name]
        assert (info["sha256"], info["package"], info["version"], info["path"]) == (
            entry.sha256, entry.package, entry.version, entry.path), entry.name
        assert sum(n for _, n in info["chains"]) == info["n_atoms"] == entry.n_atoms, entry.name
        if entry.chains:
            assert sorted(c for c, _ in info["chains"]) == sorted(entry.chains), entry.name


def test_packed_atoms_give_the_catalogued_sizes_and_masses():
    """Each packed structure's maximum dimension, atom count and mass are the catalogue's (which
    were measured on the files), and the coordinates are centred on the centre of mass."""
    for entry in S.STRUCTURES:
        arrays = S.packed_arrays(entry)
        assert arrays is not None, entry.name
        xyz = arrays["xyz"].astype(float) * S.PACK_COORD_UNIT_A
        assert set(np.unique(arrays["element"])) <= {6, 7, 8, 15, 16}, entry.name  # C N O P S
        assert len(xyz) == entry.n_atoms, entry.name
        assert S.max_dimension(xyz) == pytest.approx(entry.max_dimension_A, abs=0.06), entry.name
        st = S.load_structure(entry, [])
        mass = sum(a.element.weight for ch in st[0] for r in ch for a in r) / 1000.0
        assert mass == pytest.approx(entry.mass_kDa, abs=0.06), entry.name
        centre = np.array(st[0].calculate_center_of_mass().tolist())
        assert np.abs(centre).max() < 0.01, entry.name


def test_bundled_reference_map_is_reproduced_from_the_pack(no_sources):
    """No source archive: the 4JSV density from the pack matches the bundled map to 1e-3 of its peak."""
    import mrcfile

    ref = mrcfile.read(Path(S.__file__).parents[1] / "data" / "reference_map.mrc")
    vol = S.structure_density(S.get_structure("4jsv"), 3.54, box=64, blur_B=600.0, sources=no_sources)
    assert vol.shape == ref.shape == (64, 64, 64)
    assert _relative_difference(vol, ref) < 1e-3


def test_pack_density_matches_the_file_density():
    entry = _available_entry()
    if entry is None:
        pytest.skip(f"no catalogued structure installed or in ${S.SOURCES_ENV} (e.g. pip install pdbfixer)")
    for pixel_A in (4.0, 7.0):
        packed = S.structure_density(entry, pixel_A)
        from_file = S.structure_density(entry, pixel_A, use_pack=False)
        assert packed.shape == from_file.shape
        assert _relative_difference(packed, from_file) < 1e-3


def test_stale_pack_entry_is_not_used(no_sources):
    """An entry whose file differs from the one packed (SHA-256) is read from the file, not the pack."""
    entry = replace(S.get_structure("4jsv"), sha256="0" * 64)
    assert S.packed_arrays(entry) is None
    with pytest.raises(CrispError, match="not available"):
        S.structure_density(entry, PIXEL_A, sources=no_sources)


def test_absent_pack_lists_nothing(tmp_path):
    assert S.packed_structure_names(tmp_path / "none.npz") == ()


def test_pack_round_trip_of_a_synthetic_structure(strand_entry, tmp_path, monkeypatch):
    """make_pack writes a pack from which the density equals the file's (to the quantisation)."""
    from crisp.data import make_structure_pack as M

    entry, src = strand_entry
    out = M.make_pack([src], tmp_path / "pack.npz", entries=[entry])
    assert S.packed_structure_names(out) == ("strand",)
    arrays = S.packed_arrays(entry, out)
    assert arrays is not None and arrays["xyz"].dtype == np.int16 and arrays["element"].dtype == np.uint8
    assert sorted(np.unique(arrays["element"]).tolist()) == [6, 7, 8]
    assert np.all(arrays["b"] == 2000) and np.all(arrays["occ"] == 100)  # B 20.00 Å^2, occupancy 1.00
    st = S.load_structure(entry, [src], use_pack=False)
    xyz = S.atom_coordinates(st) - np.array(st[0].calculate_center_of_mass().tolist())
    assert np.abs(arrays["xyz"] * S.PACK_COORD_UNIT_A - xyz).max() <= S.PACK_COORD_UNIT_A / 2 + 1e-9
    monkeypatch.setattr(S, "PACK_PATH", out)
    packed = S.structure_density(entry, 2.0, sources=[tmp_path / "empty"])
    from_file = S.structure_density(entry, 2.0, sources=[src], use_pack=False)
    assert _relative_difference(packed, from_file) < 1e-3


def test_pack_refuses_coordinates_out_of_range(tmp_path):
    """Two chains 700 Å apart put atoms 350 Å from the centre: beyond int16 in 0.01 Å units."""
    from crisp.data import make_structure_pack as M

    text = _strand_pdb(3, second_chain_z=700.0).encode()
    path = "fakepkg-1.0/fakepkg/data/far.pdb"
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_bytes(text)
    entry = replace(S.get_structure("4jsv"), name="far", package="fakepkg", version="1.0", path=path,
                    archive="fakepkg-1.0.tar.gz", import_package=None, chains=(),
                    sha256=hashlib.sha256(text).hexdigest())
    with pytest.raises(CrispError, match="out of the range of int16"):
        M.pack_entry(entry, [tmp_path])
