"""Real RELION 3.1 (Debian's ``relion`` package, CPU) reads what CRISP writes.

Every test runs RELION's own programs (``relion_preprocess --extract``, ``relion_star_handler``,
``relion_refine``, ``relion_image_handler``) on CRISP's outputs; they skip only where
``relion_preprocess`` is absent (``.ci/run`` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from crisp.cli import main
from crisp.io.coordinates import write_autopick
from crisp.io.micrographs import write_mrc

pytestmark = pytest.mark.skipif(shutil.which("relion_preprocess") is None,
                                reason="RELION (relion_preprocess) is not installed")

X, Y, S, M = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"
BOX = 32
BG_RADIUS = 0.75 * BOX / 2  # CRISP's default background radius, given to RELION explicitly
SIZE = 256
MOVIES = Path("MotionCorr/job002/Movies")
# fractions below and above 0.5 (RELION truncates, rounding would differ by 1 px), and picks whose box
# leaves the micrograph partly (RELION pads those; CRISP skips them)
INSIDE = [(50.3, 60.6), (100.7, 120.2), (128.5, 127.5), (140.49, 90.51), (200.9, 33.3), (16.0, 239.99)]
EDGE = [(10.0, 10.0), (250.0, 128.0)]


def relion(*args: str, cwd: Path) -> str:
    """Run a RELION program in ``cwd``; its output (fails the test on a non-zero exit)."""
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


def micrographs_star(project: Path, names: list[str], path: str = "CtfFind/job003/micrographs_ctf.star",
                     pixel_size: float = 1.5) -> str:
    """A RELION 3.1 micrographs STAR (optics + micrographs) listing ``names`` (project-relative)."""
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [pixel_size], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnMicrographPixelSize": [pixel_size]})
    mics = pd.DataFrame({M: names, "rlnOpticsGroup": 1})
    (project / path).parent.mkdir(parents=True, exist_ok=True)
    starfile.write({"optics": optics, "micrographs": mics}, project / path)
    return path


def make_project(project: Path, n: int = 2) -> list[str]:
    """``n`` 256 px float32 micrographs (1.5 Å/px) under MotionCorr/job002/Movies/ and their picks
    written by CRISP into AutoPick/job005/ from the project folder."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = str(MOVIES / f"mic{i}.mrc")
        ramp = np.add.outer(np.arange(SIZE) * 0.02, np.arange(SIZE) * 0.01)  # a gradient: the ramp matters
        write_mrc(project / name, (rng.normal(size=(SIZE, SIZE)) + ramp).astype(np.float32), pixel_size=1.5)
        names.append(name)
    xy = INSIDE + EDGE
    picks = pd.concat([pd.DataFrame({M: name, X: [p[0] for p in xy], Y: [p[1] for p in xy],
                                     S: np.linspace(1, 0.5, len(xy))}) for name in names], ignore_index=True)
    write_autopick(picks, project / "AutoPick" / "job005", micrograph_paths=names)
    micrographs_star(project, names)
    return names


def relion_extract(project: Path, coord_dir: str, out: str, *extra: str) -> pd.DataFrame:
    """``relion_preprocess --extract`` as RELION 3.1's Extract job runs it (normalised, inverted, no ramp)."""
    relion("relion_preprocess", "--i", "CtfFind/job003/micrographs_ctf.star", "--coord_dir", coord_dir,
           "--coord_suffix", "_autopick.star", "--part_star", f"{out}/particles.star",
           "--part_dir", f"{out}/",
           "--extract", "--extract_size", str(BOX), "--norm", "--bg_radius", str(BG_RADIUS),
           "--white_dust", "-1", "--black_dust", "-1", "--invert_contrast", *extra, cwd=project)
    return starfile.read(project / out / "particles.star", always_dict=True)["particles"]


def image(project: Path, name: str) -> np.ndarray:
    index, stack = name.split("@")
    with mrcfile.mmap(project / stack, permissive=True) as mrc:
        return np.asarray(mrc.data[int(index) - 1], dtype=np.float32)


def by_position(particles: pd.DataFrame) -> dict[tuple[str, float, float], str]:
    return {(Path(m).name, round(float(x), 3), round(float(y), 3)): name for m, x, y, name in
            zip(particles[M], particles[X], particles[Y], particles["rlnImageName"], strict=True)}


def assert_same_particles(project: Path, ours: pd.DataFrame, theirs: pd.DataFrame, n_edge: int) -> None:
    """Every CRISP particle is a RELION particle with the same image; RELION has ``n_edge`` more
    (boxes leaving the micrograph partly, which RELION pads and CRISP skips)."""
    ours_at, theirs_at = by_position(ours), by_position(theirs)
    assert len(theirs) == len(ours) + n_edge
    assert set(ours_at) <= set(theirs_at)
    for key, name in ours_at.items():
        np.testing.assert_allclose(image(project, name), image(project, theirs_at[key]), atol=2e-5,
                                   err_msg=str(key))


def test_relion_extraction_gives_crisps_particles(tmp_path, monkeypatch):
    project = tmp_path / "project"
    make_project(project)
    monkeypatch.chdir(project)
    # RELION finds CRISP's picks in AutoPick/job005/Movies/ (the micrographs' folders mirrored)
    assert (project / "AutoPick/job005/Movies/mic0_autopick.star").is_file()
    theirs = relion_extract(project, "AutoPick/job005/", "Extract/relion", "--no_ramp")
    assert main(["extract", str(MOVIES), "AutoPick/job005", "-o", "Extract/crisp", "--box", str(BOX)]) == 0
    ours = starfile.read(project / "Extract/crisp/particles.star", always_dict=True)["particles"]
    assert len(ours) == 2 * len(INSIDE)
    assert_same_particles(project, ours, theirs, n_edge=2 * len(EDGE))
    # CRISP's normalisation is RELION's --no_ramp: with the ramp (RELION's default) the images differ
    ramped = by_position(relion_extract(project, "AutoPick/job005/", "Extract/ramp"))
    name = ours["rlnImageName"].iloc[0]
    key = next(iter(by_position(ours.iloc[:1])))
    assert np.abs(image(project, name) - image(project, ramped[key])).max() > 0.05
    # --no-invert: RELION without --invert_contrast
    plain = tmp_path / "plain"
    assert main(["extract", str(MOVIES), "AutoPick/job005", "-o", str(plain), "--box", str(BOX),
                 "--no-invert", "--project-dir", str(project)]) == 0
    plain_star = starfile.read(plain / "particles.star", always_dict=True)["particles"]
    np.testing.assert_allclose(image(project, plain_star["rlnImageName"].iloc[0]), -image(project, name),
                               atol=1e-6)


def test_particles_star_resolves_from_the_project_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    names = make_project(project)
    monkeypatch.chdir(tmp_path)  # CRISP runs elsewhere; --project-dir names the RELION project
    assert main(["extract", str(project / MOVIES), str(project / "AutoPick/job005"), "-o",
                 str(project / "Extract/job007"), "--box", str(BOX), "--project-dir", str(project)]) == 0
    particles = starfile.read(project / "Extract/job007/particles.star", always_dict=True)["particles"]
    assert set(particles[M]) == set(names)  # as RELION lists them
    assert particles["rlnImageName"].iloc[0] == "000001@Extract/job007/Particles/mic0.mrcs"
    relion("relion_star_handler", "--i", "Extract/job007/particles.star", "--o", "handled.star", cwd=project)
    assert len(starfile.read(project / "handled.star", always_dict=True)["particles"]) == len(particles)
    data = refine_2d(project, "Extract/job007/particles.star", "Class2D/job008/run")
    assert len(data) == len(particles) and set(data["rlnClassNumber"]) <= {1, 2}


def refine_2d(project: Path, star: str, out: str, iterations: int = 2) -> pd.DataFrame:
    """``relion_refine`` 2D classification (K = 2, small) on ``star``, run in ``project``; its data table."""
    (project / out).parent.mkdir(parents=True, exist_ok=True)
    relion("relion_refine", "--i", star, "--o", out, "--K", "2", "--iter", str(iterations),
           "--tau2_fudge", "2",
           "--particle_diameter", "40", "--zero_mask", "--oversampling", "1", "--psi_step", "12",
           "--offset_range", "3", "--offset_step", "2", "--j", "1", "--pad", "1",
           "--dont_combine_weights_via_disc", cwd=project)
    return starfile.read(project / f"{out}_it{iterations:03d}_data.star", always_dict=True)["particles"]


def test_every_convert_star_flavour_is_read_by_relion(tmp_path, monkeypatch):
    """Each STAR flavour `crisp convert` writes, read by the RELION 3.1 program that consumes it."""
    project = tmp_path / "project"
    make_project(project)
    monkeypatch.chdir(project)
    assert main(["extract", str(MOVIES), "AutoPick/job005", "-o", "Extract/job007", "--box", str(BOX)]) == 0
    n = 2 * len(INSIDE)
    # particles: RELION 3.1 (optics block kept) and RELION 3.0 (one table, which RELION converts)
    for version in ("3.1", "3.0"):
        out = f"conv/particles{version}.star"
        assert main(["convert", "Extract/job007/particles.star", out, "--star-version", version]) == 0
        relion("relion_star_handler", "--i", out, "--o", f"handled{version}.star", cwd=project)
        handled = starfile.read(project / f"handled{version}.star", always_dict=True)
        assert len(handled["particles"]) == n and handled["optics"]["rlnImagePixelSize"].iloc[0] == 1.5
        assert len(refine_2d(project, out, f"Class2D/conv{version}/run", iterations=1)) == n
    # coordinates: an AutoPick folder (per-micrograph files mirroring Movies/ + autopick.star), and a
    # single table of one micrograph's picks, both read by RELION's extraction
    assert main(["convert", "AutoPick/job005/autopick.star", "conv/folder", "--micrographs",
                 str(MOVIES)]) == 0
    assert len(relion_extract(project, "conv/folder/", "Extract/fromfolder", "--no_ramp")) == 2 * (
        len(INSIDE) + len(EDGE))
    for i in range(2):
        assert main(["convert", f"AutoPick/job005/Movies/mic{i}_autopick.star",
                     f"conv/single/Movies/mic{i}_single.star"]) == 0
    relion("relion_preprocess", "--i", "CtfFind/job003/micrographs_ctf.star", "--coord_dir", "conv/single/",
           "--coord_suffix", "_single.star", "--part_star", "Extract/single/particles.star", "--part_dir",
           "Extract/single/", "--extract", "--extract_size", str(BOX), cwd=project)
    single = starfile.read(project / "Extract/single/particles.star", always_dict=True)["particles"]
    assert len(single) == 2 * (len(INSIDE) + len(EDGE))


def test_float32_maps_are_read_by_relion_31(tmp_path):
    prob = np.random.default_rng(1).uniform(0, 1, (64, 96)).astype(np.float32)
    write_mrc(tmp_path / "seg" / "m.mrc", prob.astype(np.float16), pixel_size=2.0)  # as `crisp segment`
    done = subprocess.run(["relion_image_handler", "--i", "seg/m.mrc", "--stats"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert "does not support half-precision" in done.stdout + done.stderr  # RELION 3.1: no MRC mode 12
    for dtype, tol in (("float32", 1e-3), ("uint8", 1.0)):
        assert main(["convert-maps", str(tmp_path / "seg"), "-o", str(tmp_path / dtype),
                     "--dtype", dtype]) == 0
        with mrcfile.open(tmp_path / dtype / "m.mrc") as mrc:
            assert mrc.voxel_size.x == pytest.approx(2.0)
            stored = np.asarray(mrc.data, dtype=np.float32)
        expected = prob.astype(np.float16).astype(np.float32)
        if dtype == "uint8":
            expected = np.rint(expected * 127)
        np.testing.assert_allclose(stored, expected, atol=1e-6)
        stats = relion("relion_image_handler", "--i", f"{dtype}/m.mrc", "--stats", cwd=tmp_path)
        found = re.search(r"avg=\s*([-+.\deE]+).*maxval=\s*([-+.\deE]+)", stats)
        assert found, stats
        assert float(found.group(1)) == pytest.approx(float(expected.mean()), abs=tol), stats
        assert float(found.group(2)) == pytest.approx(float(expected.max()), abs=tol), stats


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained run (one epoch on noisy blobs) and its dataset."""
    from crisp.train import train
    from test_train import make_dataset, tiny_config

    root = tmp_path_factory.mktemp("relion-run")
    dataset = make_dataset(root / "ds", n=4, size=SIZE, n_train=2, n_val=1, radius=8)
    return train(tiny_config(epochs=1), dataset, root / "run", progress=False), dataset


def test_crisp_relion_external_job(tiny_run, tmp_path, monkeypatch):
    from crisp.config import save_yaml
    from crisp.picking.tune import PickerConfig

    run, dataset = tiny_run
    project = tmp_path / "project"
    names = []
    for i, source in enumerate(sorted((dataset / "micrographs").glob("*.mrc"))[:3]):
        name = str(MOVIES / f"mic{i}.mrc")
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, project / name)
        names.append(name)
    with mrcfile.open(project / names[0], header_only=True) as mrc:
        pixel_size = float(mrc.voxel_size.x)
    mics_star = micrographs_star(project, names, pixel_size=pixel_size)
    # picks at least box/2 from every edge, so that RELION pads none and the counts agree
    picker = PickerConfig(diameter_px=16, border_fraction=1.0, threshold=0.3)
    save_yaml(project / "picker.yaml", picker)
    monkeypatch.chdir(project)
    args = ["relion", "--in_mics", mics_star, "--o", "External/job010/", "--run", str(run), "--picker",
            "picker.yaml", "--j", "1", "--pipeline_control", "External/job010/"]
    assert main(args) == 0
    job = project / "External/job010"
    assert (job / "RELION_JOB_EXIT_SUCCESS").is_file() and not (job / "RELION_JOB_EXIT_FAILURE").exists()
    assert (job / "coords_suffix_autopick.star").read_text().strip() == mics_star
    nodes = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert nodes["rlnPipeLineNodeName"].tolist() == ["External/job010/coords_suffix_autopick.star"]
    relion("relion_star_handler", "--i", "External/job010/RELION_OUTPUT_NODES.star", "--o", "nodes.star",
           cwd=project)
    index = starfile.read(job / "autopick.star", always_dict=True)["coordinate_files"]
    assert index[M].tolist() == names
    assert index["rlnMicrographCoordinates"].tolist() == [f"External/job010/Movies/mic{i}_autopick.star"
                                                           for i in range(3)]
    picks = pd.concat([starfile.read(project / p) for p in index["rlnMicrographCoordinates"]])
    assert len(picks) > 0 and (picks[S] >= 0.3).all()
    # RELION 3.1's Extract job on the job's coordinates finds every pick; its images equal crisp extract's
    theirs = relion_extract(project, "External/job010/", "Extract/job011", "--no_ramp")
    assert main(["extract", str(MOVIES), "External/job010", "-o", "Extract/crisp", "--box", str(BOX)]) == 0
    ours = starfile.read(project / "Extract/crisp/particles.star", always_dict=True)["particles"]
    assert len(ours) == len(picks)
    assert_same_particles(project, ours, theirs, n_edge=0)
    # a rerun skips the done micrographs; a bad input leaves RELION_JOB_EXIT_FAILURE and exit status 2
    assert main(args) == 0
    (project / names[1]).unlink()
    assert main(args) == 2
    assert (job / "RELION_JOB_EXIT_FAILURE").is_file() and not (job / "RELION_JOB_EXIT_SUCCESS").exists()
