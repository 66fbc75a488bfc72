"""``crisp segment-and-pick``: one pass per micrograph from the micrograph to its coordinates.

Each micrograph is read, binned and normalised as the run's network saw its training data, segmented
on the network's grid (:class:`crisp.inference.Predictor`: one forward when it fits the memory
budget), and picked on that grid (:func:`crisp.picking.files.pick_map`) with coordinates scaled back
to the micrograph's pixels (Fourier binning puts grid pixel ``j`` at micrograph coordinate
``j * N / M``). No full-size map is made or written: ``save_maps="grid"`` writes the map at the
network's grid, ``save_maps="full"`` resampled to the micrograph's size (what ``crisp segment``
writes).

The output folder has the layout of ``crisp pick`` (:mod:`crisp.picking.files`): per-micrograph
``NAME_autopick.star`` (RELION's AutoPick layout for micrographs of a RELION project), the
``autopick.star`` index written from the batch records, ``picker.yaml``, and ``maps/NAME.mrc`` when
maps are saved. It runs on the batch engine (verb ``segment-and-pick``; settings: the run's
identity, the picker's settings and the options that change the output), so reruns skip what is
done and refuse other settings, shards share one folder, and ``--workers`` distribute the items.
In one process the next micrograph of the work list is read and binned in a background thread
while the network works on the current one (``prefetch``). Picks on the network's grid agree with
picks on the upsampled full-size map within a pixel on well-resolved blobs; on the EMPIAR-10017
micrographs their median distance was 1.5 px (the finder's internal block averaging falls on other
grids), with the same F1 (benchmarks/README.md, "Inference (issue 16)").

Where the binning and normalisation run is ``prepare_on`` (:data:`PREPARE_ON`): ``cpu`` is the reference
(:func:`crisp.patches.prepare_image`, numpy/scipy); ``device`` does the same arithmetic in PyTorch on the
network's device (:func:`crisp.preprocess_torch.prepare_on_device`: only the micrograph's raw pixels
cross to a GPU, and the binned image goes to the network without coming back); ``auto`` (the default) is
``device`` when the network runs on CUDA, else ``cpu``, so that CPU runs keep the reference's maps bit
for bit. The two agree to float rounding (maps within about 1e-5, the same picks:
tests/test_preprocess_torch.py), like the backends, so it is not a recorded setting. The prefetch
thread reads the next micrograph either way, and prepares it where ``prepare_on`` says.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from crisp.errors import CrispError
from crisp.predict import (
    NetworkItems,
    check_backend,
    check_diameter,
    check_diameter_pixel_sizes,
    run_identity,
    tiling_setting,
    upsample_to,
)

VERB = "segment-and-pick"
SAVE_MAPS = (None, "grid", "full")
#: where a micrograph is binned and normalised (see the module docstring)
PREPARE_ON = ("auto", "cpu", "device")
MAPS_DIR = "maps"


def segment_pick_settings(run_dir: str | os.PathLike[str], picker, *, threshold: float | None,
                          formats: Iterable[str], box_size_px: float | None, pixel_size: float | None,
                          tta: bool | None, overlap: int | None, max_tile_px: int | None,
                          save_maps: str | None, diameter_A: float | None = None,
                          diameter_px: float | None = None) -> dict:
    """The settings that decide the outputs (the batch manifest's settings)."""
    from crisp.picking.files import pick_settings
    from crisp.predict import diameter_setting

    return {"run": run_identity(run_dir),
            "picker": pick_settings(picker, threshold=threshold, formats=formats, box_size_px=box_size_px),
            "pixel_size": pixel_size, "tta": tta, "overlap": overlap, "tiling": tiling_setting(max_tile_px),
            "save_maps": save_maps, **diameter_setting(diameter_A, diameter_px)}


class SegmentPicker(NetworkItems):
    """The function of one ``segment-and-pick`` item (picklable; loads the network once per process).

    Returns the item's record: the micrograph's name, the number of picks, the shapes, where the
    micrograph was prepared (``prepared_on``: ``cpu`` or the device) and the seconds of each stage
    (``read``, ``prepare`` = bin + normalise, ``network``, ``pick``, ``write``; on a GPU, ``prepare``
    ends when the normalisation's statistics reach the host, ``network`` when the map does).
    """

    def __init__(self, run_dir, picker, *, names: dict[str, str], formats: set[str], threshold: float | None,
                 box_size_px: float | None, save_maps: str | None, prefetch: bool = False,
                 prepare_on: str = "auto", **options) -> None:
        super().__init__([run_dir], **options)
        if prepare_on not in PREPARE_ON:
            raise CrispError(f"--prepare-on must be one of {', '.join(PREPARE_ON)} (got {prepare_on!r})")
        self.picker, self.names, self.formats = picker, names, formats
        self.threshold, self.box_size_px, self.save_maps = threshold, box_size_px, save_maps
        self.prefetch = prefetch
        self.prepare_on = prepare_on
        self._order = list(names)
        self._executor = None
        self._pending: dict[str, object] = {}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_executor"], state["_pending"] = None, {}
        return state

    def _read_and_prepare(self, stem: str) -> tuple:
        """Read micrograph ``stem`` and make the network's input: ``(header, image, seconds)`` (the
        header's ``shape`` and ``pixel_size``; the micrograph's pixels are dropped at once)."""
        from crisp.io.micrographs import read_micrograph

        ((config, predictor),) = self.models()
        path = self.names[stem]
        start = time.perf_counter()
        mic = read_micrograph(path, pixel_size=self.pixel_size)
        read = time.perf_counter() - start
        device = self.preparation_device(predictor)
        if device is None:
            image = self.network_input(config, mic, path)
        else:
            image = self.device_input(config, mic, path, device)
        prepare = time.perf_counter() - start - read
        header = SimpleNamespace(shape=mic.shape, pixel_size=mic.pixel_size)  # pixels no longer needed
        return header, image, {"read": round(read, 4), "prepare": round(prepare, 4)}

    def preparation_device(self, predictor):
        """The torch device the micrograph is prepared on, or None for the CPU reference
        (:data:`PREPARE_ON`: ``auto`` is the network's device when that is a CUDA device)."""
        if self.prepare_on == "device" or (self.prepare_on == "auto" and predictor.device.type == "cuda"):
            return predictor.device
        return None

    def device_input(self, config, mic, path, device):
        """:meth:`network_input` computed on ``device`` (:func:`crisp.preprocess_torch.prepare_on_device`):
        a float32 tensor there."""
        from crisp.preprocess_torch import prepare_on_device

        return prepare_on_device(mic.data, self.binning(config, mic, path), config.normalize, device)

    def _start_next(self, stem: str) -> None:
        """Read and prepare the micrograph after ``stem`` (in the work list) in a background thread."""
        if not self.prefetch or stem not in self._order:
            return
        index = self._order.index(stem) + 1
        if index >= len(self._order) or self._order[index] in self._pending:
            return
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crisp-prefetch")
        following = self._order[index]
        self._pending[following] = self._executor.submit(self._read_and_prepare, following)

    def _input(self, stem: str) -> tuple:
        future = self._pending.pop(stem, None)
        if future is not None:
            try:
                mic, image, seconds = future.result()
                return mic, image, {**seconds, "prefetched": True}
            except Exception:  # noqa: BLE001 - read it again here, where its error belongs to the item
                pass
        return self._read_and_prepare(stem)

    def __call__(self, item, staging) -> dict:
        from crisp.io.micrographs import pixel_size_ratio, write_mrc
        from crisp.picking.files import NAME, _write_picks, pick_map
        from crisp.predict import micrograph_diameter_px

        ((config, predictor),) = self.models()
        mic, image, seconds = self._input(item.name)
        self._start_next(item.name)  # the next micrograph is read and binned while the network runs
        start = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal start
            now = time.perf_counter()
            seconds[stage] = round(now - start, 4)
            start = now

        prob = np.clip(predictor.foreground(image), 0.0, 1.0)
        lap("network")
        name = self.names[item.name]
        if config.particle_diameter_px is not None:  # the diameter given: the finder's settings scale with it
            diameter = micrograph_diameter_px(self.diameter_A, self.diameter_px, mic.pixel_size, name)
        else:
            diameter = self.picker.diameter_px * pixel_size_ratio(self.picker.pixel_size, mic.pixel_size)
        scale = (mic.shape[0] / prob.shape[0], mic.shape[1] / prob.shape[1])
        picks = pick_map(prob, self.picker, diameter, scale=scale, shape=mic.shape, threshold=self.threshold)
        picks.insert(0, NAME, name)
        lap("pick")
        box = float(self.box_size_px) if self.box_size_px is not None else round(diameter)
        _write_picks(picks, item.name, name, staging, self.formats, box, diameter)
        if self.save_maps is not None:
            target = staging.path(item.outputs[-1])
            if self.save_maps == "full":
                write_mrc(target, upsample_to(prob, mic.shape), pixel_size=mic.pixel_size, dtype=np.float16)
            else:
                grid_pixel = None if mic.pixel_size is None else mic.pixel_size * scale[1]
                write_mrc(target, prob, pixel_size=grid_pixel, dtype=np.float16)
        lap("write")
        return {"micrograph": name, "n_picks": len(picks), "shape": list(mic.shape),
                "grid_shape": list(prob.shape), "diameter_px": round(float(diameter), 4),
                "tiled": predictor.tile_px(image.shape) is not None,
                "backend": predictor.backend,
                "prepared_on": "cpu" if isinstance(image, np.ndarray) else str(image.device),
                "seconds": seconds}


def segment_and_pick_files(run_dir: str | os.PathLike[str],
                           micrograph_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                           out_dir: str | os.PathLike[str], *, picker=None, threshold: float | None = None,
                           formats: Iterable[str] = ("star",), box_size_px: float | None = None,
                           save_maps: str | None = None, pixel_size: float | None = None,
                           tta: bool | None = None, overlap: int | None = None,
                           max_tile_px: int | None = None, threads: int | None = None, batch_size: int = 8,
                           prefetch: bool | None = None, backend: str = "auto", prepare_on: str = "auto",
                           overwrite: bool = False, keep_going: bool = False,
                           shard: tuple[int, int] | None = None, progress: bool = True,
                           diameter_A: float | None = None, diameter_px: float | None = None):
    """Segment and pick every micrograph in one pass (module docstring); coordinates as ``crisp pick``.

    Parameters
    ----------
    run_dir
        The training run.
    micrograph_paths
        Micrograph files, folders or glob patterns (:func:`crisp.io.micrographs.list_micrographs`).
    out_dir
        ``PICKS_DIR`` (the layout of :mod:`crisp.picking.files`, plus ``maps/`` with ``save_maps``).
    picker
        A :class:`crisp.picking.tune.PickerConfig` (default: the run's ``picker.yaml``).
    threshold, formats, box_size_px
        As in :func:`crisp.picking.files.pick_files`.
    save_maps
        None (no map), ``"grid"`` (``maps/NAME.mrc`` at the network's grid, float16, its pixel size in
        the header) or ``"full"`` (resampled to the micrograph's size, as ``crisp segment``).
    pixel_size, tta, overlap, max_tile_px, threads, batch_size, backend
        As in :func:`crisp.predict.segment_files`.
    prefetch
        Read and bin the next micrograph of the work list in a background thread while the network
        works on the current one (does not change the outputs). None: on when the batch runs in
        this process, off with ``--workers``/``--scheduler`` (items reach workers in another order).
    prepare_on
        Where each micrograph is binned and normalised (:data:`PREPARE_ON`, module docstring):
        ``cpu`` (the reference), ``device`` (in PyTorch on the network's device) or ``auto`` (the
        device when the network runs on CUDA, else the CPU).
    overwrite, keep_going, shard, progress
        As in :func:`crisp.batch.run_batch`.
    diameter_A, diameter_px
        The particle diameter for a diameter-scaled run (a general model), as in
        :func:`crisp.predict.segment_files`. The picker then finds particles of that diameter: its
        finder settings (relative to the diameter) are used as they are and its ``diameter_px`` is
        not (on the network's grid the particle spans the run's ``particle_diameter_px``).

    Returns
    -------
    crisp.picking.files.PickResult

    Raises
    ------
    CrispError
        A bad run, no picker, bad inputs or output folder, other settings without ``overwrite``,
        or failed micrographs (after the others, with ``keep_going``).
    """
    from crisp.batch import Item, run_batch
    from crisp.io.micrographs import list_micrographs
    from crisp.picking.files import PICK_FORMATS, _outputs, finish_picks
    from crisp.picking.registry import get_finder
    from crisp.run import Run

    if save_maps not in SAVE_MAPS:
        raise CrispError(f"--save-maps must be grid or full (got {save_maps!r})")
    if max_tile_px is not None and max_tile_px < 1:
        raise CrispError(f"--max-tile-px must be positive (got {max_tile_px})")
    if threads is not None and threads < 1:
        raise CrispError(f"--threads must be at least 1 (got {threads})")
    check_backend(backend)
    if prepare_on not in PREPARE_ON:
        raise CrispError(f"--prepare-on must be one of {', '.join(PREPARE_ON)} (got {prepare_on!r})")
    from crisp.models.bundled_names import check_writable

    check_writable(out_dir, "picks")
    run = Run.load(run_dir)
    check_diameter(run.config, diameter_A, diameter_px, run.path)
    if picker is None:
        picker = run.picker()
        if picker is None:
            raise CrispError(f"the run has no {run.picker_path.name} (run crisp tune-picker, or give "
                             "--picker)", run.path)
    get_finder(picker.finder)
    picker.finder_params()
    formats = {f.strip().lower() for f in formats if f.strip()} | {"star"}
    unknown = sorted(formats - set(PICK_FORMATS))
    if unknown:
        raise CrispError(f"unknown coordinate format(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(PICK_FORMATS)})")
    single = isinstance(micrograph_paths, (str, os.PathLike))
    sources = [micrograph_paths] if single else list(micrograph_paths)
    paths = list_micrographs(sources)
    if run.config.particle_diameter_px is not None:
        check_diameter_pixel_sizes(paths, diameter_A, pixel_size)
    settings = segment_pick_settings(run_dir, picker, threshold=threshold, formats=formats,
                                     box_size_px=box_size_px, pixel_size=pixel_size, tta=tta, overlap=overlap,
                                     max_tile_px=max_tile_px, save_maps=save_maps, diameter_A=diameter_A,
                                     diameter_px=diameter_px)
    from crisp.batch import select_shard
    from crisp.distributed import current_execution

    if prefetch is None:
        prefetch = current_execution() == (None, None)
    names = {p.stem: str(p) for p in paths}
    order = [i.name for i in select_shard([Item(p.stem) for p in paths], shard)]  # run_batch's order
    names = {stem: names[stem] for stem in order}
    fn = SegmentPicker(run_dir, picker, names=names, formats=formats, threshold=threshold,
                       box_size_px=box_size_px, save_maps=save_maps, pixel_size=pixel_size, overlap=overlap,
                       tta=tta, batch_size=batch_size, max_tile_px=max_tile_px, threads=threads,
                       prefetch=prefetch, backend=backend, prepare_on=prepare_on, diameter_A=diameter_A,
                       diameter_px=diameter_px)
    if settings["run"]["checkpoint_sha256"] is None:
        fn.preload(0)  # not a complete run: its error before the output folder is touched
    items = []
    for p in paths:
        outputs = _outputs(p.stem, str(p), formats)
        if save_maps is not None:
            outputs = (*outputs, f"{MAPS_DIR}/{p.stem}.mrc")
        items.append(Item(p.stem, inputs=(p,), outputs=outputs))
    out = Path(out_dir)
    batch = run_batch(VERB, items, fn, out, settings, overwrite=overwrite, keep_going=keep_going,
                      progress=progress, shard=shard, input_dirs=[s for s in sources if Path(s).is_dir()])
    return finish_picks(out, picker, batch)
