"""Writing a simulated dataset folder (``crisp simulate``) on the batch engine, and its preview figure.

One batch item per micrograph index ``i`` (name ``{prefix}_{i:04d}``): :func:`simulate_micrograph`
with the micrograph's own random generator, written into ``micrographs/``, ``masks/``,
``instances/``, ``coordinates/`` (and ``clean/``). The folder's batch manifest
(:mod:`crisp.batch`) records every setting but ``count``, so a rerun skips what is done, makes
more micrographs when ``count`` grows, and refuses other settings unless ``overwrite``. After the
batch, ``simulation.yaml`` (every setting, the density used, the SNR and seeding rules) and
``preview.png`` are written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crisp.config import save_yaml, to_plain
from crisp.errors import CrispError
from crisp.io.micrographs import write_mrc
from crisp.simulate.config import SimulationConfig
from crisp.simulate.physics import (
    Reference,
    SimulatedMicrograph,
    load_reference,
    read_defocus_table,
    simulate_micrograph,
)

SIMULATION_FILE = "simulation.yaml"
PREVIEW_FILE = "preview.png"
VERB = "simulate"
_NOT_SETTINGS = ("count",)  # more or fewer micrographs of the same simulation may be asked for later


def micrograph_name(config: SimulationConfig, index: int) -> str:
    """Name of micrograph ``index`` of ``config``: ``{prefix}_{index:04d}``."""
    return f"{config.prefix}_{index:04d}"


def simulation_settings(config: SimulationConfig) -> dict[str, Any]:
    """The settings that decide a simulated micrograph (every value of ``config`` but ``count``)."""
    return {k: v for k, v in to_plain(config).items() if k not in _NOT_SETTINGS}


def _output_paths(folder, name: str, save_clean: bool) -> dict[str, Path]:
    paths = {"instances": folder.instances(name), "mask": folder.mask(name),
             "coordinates": folder.coordinates(name), "micrograph": folder.micrograph(name)}
    if save_clean:
        paths["clean"] = folder.clean(name)
    return paths


def _write_star(path: Path, df) -> None:
    from crisp.io.coordinates import write_coordinates

    write_coordinates(df, path, fmt="star")


def _write_files(paths: dict[str, Path], sim: SimulatedMicrograph, pixel_size: float) -> None:
    write_mrc(paths["instances"], sim.instances, pixel_size=pixel_size, dtype=np.int16)
    write_mrc(paths["mask"], sim.mask, pixel_size=pixel_size, dtype=np.uint8)
    _write_star(paths["coordinates"], sim.truth)
    if "clean" in paths:
        write_mrc(paths["clean"], sim.clean_ctf, pixel_size=pixel_size, dtype=np.float32)
    write_mrc(paths["micrograph"], sim.noisy, pixel_size=pixel_size, dtype=np.float32)


def write_simulated(folder, sim: SimulatedMicrograph, pixel_size: float, save_clean: bool) -> None:
    """Write one simulated micrograph into a dataset folder (each file atomically).

    Outside the batch engine (e.g. a benchmark); :func:`simulate_dataset` writes through the engine.
    """
    _write_files(_output_paths(folder, sim.name, save_clean), sim, pixel_size)


def plot_preview(dataset: str | os.PathLike[str], name: str, path: str | os.PathLike[str],
                 max_size: int = 1024) -> Path:
    """PNG of one simulated micrograph: as written; low-passed with the mask outlined and the true
    centres marked; the instance map. Reads the dataset's files, so it works on any finished folder."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from crisp.atomic import atomic_path
    from crisp.dataset import DatasetFolder
    from crisp.io.coordinates import read_coordinates
    from crisp.io.micrographs import read_micrograph
    from crisp.preprocess import block_mean, lowpass
    from crisp.report import display_image

    folder = DatasetFolder(Path(dataset))
    noisy = read_micrograph(folder.micrograph(name)).data
    mask = read_micrograph(folder.mask(name)).data
    instances = read_micrograph(folder.instances(name)).data
    truth = read_coordinates(folder.coordinates(name))
    shown, factor = display_image(noisy, max_size)
    smooth, _ = display_image(lowpass(noisy, sigma_px=2.0 * factor), max_size)
    f = int(factor)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.3))
    axes[0].imshow(shown, cmap="gray")
    axes[0].set_title(f"{name} (as written)", fontsize=9)
    axes[1].imshow(smooth, cmap="gray")
    axes[1].contour(block_mean(mask, f), levels=[0.5], colors=["#2ca02c"], linewidths=0.7)
    axes[1].plot(truth["rlnCoordinateX"] / factor, truth["rlnCoordinateY"] / factor, "+", color="#d62728",
                 markersize=6)
    axes[1].set_title("low-passed; green: mask, red: true centres", fontsize=9)
    axes[2].imshow(np.ma.masked_equal(instances[::f, ::f], 0), cmap="tab20", interpolation="nearest")
    axes[2].set_title(f"instances (1..{int(instances.max())})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _check_room(config: SimulationConfig, reference: Reference) -> None:
    """A cheap feasibility check: random sequential placement jams near 55 % disk coverage."""
    d = (1 - config.max_overlap) * reference.diameter_px
    usable = max(0.0, config.width_px - reference.diameter_px) * max(0.0, config.height_px
                                                                      - reference.diameter_px)
    if config.particles[1] * math.pi * d * d / 4 > 0.4 * usable:
        raise CrispError(f"{config.particles[1]} particles {reference.diameter_px:.0f} px wide do not fit "
                         f"in {config.width_px} x {config.height_px} pixels; ask for fewer particles, a "
                         "larger micrograph or a larger pixel size")


def simulate_dataset(out_dir: str | os.PathLike[str], config: SimulationConfig, progress: bool = True,
                     preview: bool = False, *, overwrite: bool = False, keep_going: bool = False,
                     shard: tuple[int, int] | None = None) -> list[str]:
    """Simulate ``config.count`` micrographs into the dataset folder ``out_dir`` (a batch).

    Everything is validated (settings, map, defocus file, room for the particles) before anything
    is written. Micrographs already made with the same settings are skipped, so an interrupted run
    resumes; other settings (anything but ``count``) are refused unless ``overwrite``.

    Parameters
    ----------
    out_dir
        The dataset folder (see :mod:`crisp.dataset`).
    config
        The simulation.
    progress
        Show a progress bar.
    preview
        Write ``preview.png`` (:func:`plot_preview` of the first micrograph) when it is absent or
        the first micrograph was (re)made now.
    overwrite
        Recompute every micrograph, also those made with other settings.
    keep_going
        Go on with the other micrographs when one fails (then raise one error listing the failures).
    shard
        ``(I, N)``: make only the I-th of N shares of the micrographs (:func:`crisp.batch.select_shard`).

    Returns
    -------
    list of str
        Names of the micrographs of this run's work list (all of them, or the shard's), in order.

    Raises
    ------
    CrispError
        Bad settings or inputs, other settings in ``out_dir`` without ``overwrite``, failed items.
    """
    from crisp import __version__
    from crisp.batch import Item, Staging, run_batch, select_shard
    from crisp.dataset import DatasetFolder

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CrispError("output exists and is not a folder", out)
    table = None if config.defocus_file is None else read_defocus_table(config.defocus_file,
                                                                         config.defocus_column)
    reference = load_reference(config)
    _check_room(config, reference)
    folder = DatasetFolder(out)
    inputs = tuple(Path(p) for p in (config.map, config.defocus_file) if p is not None)
    items = []
    for index in range(config.count):
        name = micrograph_name(config, index)
        paths = _output_paths(folder, name, config.save_clean).values()
        outputs = tuple(str(p.relative_to(out)) for p in paths)
        items.append(Item(name, inputs=inputs, outputs=outputs, data=index))

    def make_one(item: Item, staging: Staging) -> dict:
        sim = simulate_micrograph(reference, config, item.data, table)
        final = _output_paths(folder, item.name, config.save_clean)
        _write_files({key: staging.path(str(path.relative_to(out))) for key, path in final.items()}, sim,
                     config.pixel_size)
        first = sim.truth.iloc[0]
        return {"index": item.data, "n_particles": len(sim.truth), "label_threshold": sim.threshold,
                "defocus_u_A": float(first["rlnDefocusU"]), "defocus_v_A": float(first["rlnDefocusV"]),
                "defocus_angle_deg": float(first["rlnDefocusAngle"])}

    result = run_batch(VERB, items, make_one, out, simulation_settings(config), overwrite=overwrite,
                       keep_going=keep_going, progress=progress, shard=shard)
    record = {"crisp_version": __version__, "config": to_plain(config), "reference": reference.source,
              "snr_definition": "var(noise-free CTF-applied micrograph) / var(noise)",
              "seeding": "micrograph i uses numpy SeedSequence(seed, spawn_key=(i,))"}
    save_yaml(out / SIMULATION_FILE, record)
    first = items[0].name
    if preview and first in result.records and (first in result.done or not (out / PREVIEW_FILE).exists()):
        plot_preview(out, first, out / PREVIEW_FILE)
    result.raise_failures()
    return [item.name for item in select_shard(items, shard)] if shard else [item.name for item in items]
