"""Tiled inference: probability maps of whole micrographs from a patch-based network.

:func:`predict_probabilities` (the one tiler, :mod:`crisp.tiling`, also used by the CRF refinement of
whole maps) cuts an image into overlapping square patches, runs a model on batches of them and blends
the outputs with a smooth weight window.

:func:`segment_files` applies a trained run (:mod:`crisp.run`) to micrograph files, as one batch
(:func:`crisp.batch.run_batch`, one item per micrograph): each is binned and normalised as in
training, its foreground probability (softmax class 1 of the refined output) is predicted
(:class:`crisp.inference.Predictor`: one forward when it fits the memory budget, else tiles),
resampled to the original pixel grid and written as a float16 MRC. The output folder records the
settings that decide the maps (each run's identity, ``tta``, ``overlap``, ``pixel_size``, tiling), so a
rerun skips what is done and refuses other settings (another or a retrained run) unless ``overwrite``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from crisp.errors import CrispError
from crisp.tiling import _starts, blend_window, dihedral_mean, predict_probabilities  # noqa: F401 - re-exported

__all__ = ["blend_window", "check_diameter", "check_diameter_pixel_sizes",
           "diameter_given", "diameter_setting", "foreground_fn", "input_binning", "load_run",
           "micrograph_diameter_px", "predict_probabilities", "run_identity", "segment_files",
           "segment_settings", "tiling_setting", "upsample_to"]


def upsample_to(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a map on the binned grid back to the original pixel grid ``shape`` (bilinear).

    The binned grid is that of Fourier cropping: binned pixel ``j`` sits at original coordinate
    ``j * N / M`` (``N`` original, ``M`` binned size), pixel 0 on pixel 0. Outside the last binned
    pixel the edge value is kept.
    """
    from scipy import ndimage

    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(shape):
        return prob.copy()
    scale = [prob.shape[0] / shape[0], prob.shape[1] / shape[1]]
    return ndimage.affine_transform(prob, scale, output_shape=tuple(shape), order=1, mode="nearest")


def foreground_fn(network, device=None, tta: bool = False) -> Callable:
    """A ``model_fn`` for :func:`predict_probabilities`: softmax of the refined output, [B, 2, P, P].

    With ``tta`` (test-time augmentation) the network runs on the 8 images of each square patch
    under the dihedral group (4 rotations by 90 degrees, each with and without a left-right flip);
    each output is mapped back by the inverse transform and the 8 probability maps are averaged. The
    result is exactly equivariant to those transforms, at 8 times the cost.
    """
    import torch

    def probabilities(batch):
        return torch.softmax(network(batch)["refined"].float(), dim=1)

    def run(batch):
        batch = batch.to(device) if device is not None else batch
        return dihedral_mean(probabilities, batch) if tta else probabilities(batch)

    return run


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_run(run_dir: str | os.PathLike[str], checkpoint: str = "best.ckpt"):
    """Load a training run: its :class:`~crisp.training.config.TrainConfig` and the network in eval mode
    (a thin call of :class:`crisp.run.Run`)."""
    from crisp.run import Run

    run = Run.load(run_dir)
    return run.config, run.network(checkpoint)


def diameter_given(diameter_A: float | None, diameter_px: float | None) -> bool:
    """Whether a particle diameter is given; CrispError for a non-positive one or for both options."""
    from crisp.config import check_number

    check_number(diameter_A, "--diameter-A", gt=0)
    check_number(diameter_px, "--diameter-px", gt=0)
    if diameter_A is not None and diameter_px is not None:
        raise CrispError("give --diameter-A or --diameter-px, not both")
    return diameter_A is not None or diameter_px is not None


def check_diameter(config, diameter_A: float | None, diameter_px: float | None,
                   run: str | os.PathLike[str] | None = None) -> None:
    """Refuse a diameter the run cannot use, or a diameter-scaled run without one (before any work).

    A run with ``particle_diameter_px`` (a general model) needs exactly one of ``diameter_A`` (with the
    micrographs' pixel size) and ``diameter_px``; a run without it takes neither.
    """
    given = diameter_given(diameter_A, diameter_px)
    if config.particle_diameter_px is not None and not given:
        raise CrispError("the model works at a fixed scale per particle diameter: give --diameter-A "
                         "(with the pixel size from the header or --pixel-size) or --diameter-px", run)
    if config.particle_diameter_px is None and given:
        raise CrispError("the run is not diameter-scaled (its config has no particle_diameter_px): drop "
                         "--diameter-A/--diameter-px (it is resampled by its pixel size)", run)


def check_diameter_pixel_sizes(paths, diameter_A: float | None, pixel_size: float | None) -> None:
    """``--diameter-A`` needs each micrograph's pixel size: the ``pixel_size`` override, or the MRC
    header's. Refuses the first micrograph without one (JPG/PNG/TIFF, or a header holding 0), before
    the output folder is touched."""
    if diameter_A is None or pixel_size is not None:
        return
    from crisp.io.micrographs import read_header_pixel_size

    for path in paths:
        micrograph_diameter_px(diameter_A, None, read_header_pixel_size(path), path)


def micrograph_diameter_px(diameter_A: float | None, diameter_px: float | None, pixel_size: float | None,
                           path: str | os.PathLike[str] | None = None) -> float:
    """The particle diameter in pixels of one micrograph: ``diameter_px``, or ``diameter_A`` divided by
    its pixel size (Å/px; CrispError when unknown)."""
    if diameter_px is not None:
        return float(diameter_px)
    if pixel_size is None:
        raise CrispError("no pixel size to convert --diameter-A to pixels: give --pixel-size, or the "
                         "diameter in pixels with --diameter-px", path)
    return float(diameter_A) / float(pixel_size)


def input_binning(config, pixel_size: float | None, diameter_px: float | None = None) -> float:
    """Resampling factor that brings a micrograph to the pixel size the network was trained at.

    Parameters
    ----------
    config
        The run's :class:`~crisp.train.TrainConfig`: ``bin`` (training binning) and ``pixel_size``
        (Å per pixel of the training micrographs before binning, None when unknown).
    pixel_size
        Å per pixel of the micrograph to segment (None when unknown).
    diameter_px
        The particle diameter in pixels of the micrograph, for a diameter-scaled run (one with
        ``config.particle_diameter_px``; :func:`check_diameter`).

    Returns
    -------
    float
        ``bin * config.pixel_size / pixel_size`` (> 1 bins, < 1 upsamples), so the network sees
        ``bin * config.pixel_size`` Å per pixel whatever the input; ``config.bin`` itself when either
        pixel size is unknown or the two agree within 1 %. For a diameter-scaled run,
        ``diameter_px / config.particle_diameter_px``: the particle spans ``particle_diameter_px`` on
        the network's grid.
    """
    from crisp.io.micrographs import pixel_size_ratio

    if config.particle_diameter_px is not None:
        if diameter_px is None:
            raise CrispError("the run is diameter-scaled: give --diameter-A or --diameter-px")
        return float(diameter_px) / float(config.particle_diameter_px)
    return float(config.bin) * pixel_size_ratio(config.pixel_size, pixel_size)


def run_identity(run_dir: str | os.PathLike[str]) -> dict:
    """What identifies a run's maps: its resolved folder and SHA-256 digests of its config and weights
    (a bundled model: its name instead of the folder, :mod:`crisp.models.bundled`).

    Another run, or the same folder retrained (new ``best.ckpt``) or reconfigured, gets another
    identity, so :func:`segment_files` refuses to mix its maps with the old ones. A file that does not
    exist is recorded as None (loading the run then fails with its own message).
    """

    from crisp.models.bundled_names import resolve_run
    from crisp.models.bundled_names import sha256 as digest
    from crisp.run import BEST, Run

    run = Run(resolve_run(run_dir))
    identity = {"path": str(run.path.resolve()), "config_sha256": digest(run.config_path),
                "checkpoint_sha256": digest(run.checkpoint_path(BEST))}
    if run.bundled is not None:  # by name and digests: the same model wherever CRISP is installed
        identity = {"bundled": run.bundled, **identity}
        del identity["path"]
    return identity


def check_backend(backend: str) -> None:
    """Refuse an unknown ``--backend`` before any work (:data:`crisp.inference.predictor.BACKENDS`)."""
    from crisp.inference.predictor import BACKENDS

    if backend not in BACKENDS:
        raise CrispError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")


def tiling_setting(max_tile_px: int | None) -> str:
    """How the network covers a micrograph, as recorded in a batch's settings (the maps depend on it)."""
    if max_tile_px is None:
        return "whole image within the memory budget"
    return f"tiles of at most {max_tile_px} px"


def diameter_setting(diameter_A: float | None, diameter_px: float | None) -> dict:
    """The particle diameter given to a diameter-scaled run, as recorded in a batch's settings (empty
    when none is given, so that the settings of other runs read as before)."""
    if diameter_A is not None:
        return {"diameter_A": float(diameter_A)}
    if diameter_px is not None:
        return {"diameter_px": float(diameter_px)}
    return {}


def segment_settings(run_dirs: Sequence[str | os.PathLike[str]], *, pixel_size: float | None = None,
                     overlap: int | None = None, tta: bool | None = None,
                     max_tile_px: int | None = None, diameter_A: float | None = None,
                     diameter_px: float | None = None) -> dict:
    """The settings that decide ``crisp segment``'s maps (recorded in the output folder's manifest).

    Each run's :func:`run_identity` (in order; several runs are an ensemble), ``tta`` and ``overlap``
    as given (None: the run's own setting, which its config digest covers), the ``pixel_size``
    override, the tiling (:func:`tiling_setting`: whole-image maps differ slightly from tiled
    ones) and the particle diameter given to a diameter-scaled run (:func:`diameter_setting`). The
    batch size and thread count do not change the maps and are left out.
    """
    return {"runs": [run_identity(r) for r in run_dirs], "tta": tta, "overlap": overlap,
            "pixel_size": pixel_size, "tiling": tiling_setting(max_tile_px),
            **diameter_setting(diameter_A, diameter_px)}


class NetworkItems:
    """Base of the per-micrograph functions that run networks (``segment``, ``segment-and-pick``).

    Picklable (for worker processes): the networks are loaded once per process, at the first item
    it computes, and are never pickled. ``threads`` (None: the cores the process may use,
    :func:`crisp.inference.default_threads`) is set in that process when the networks are loaded.
    """

    def __init__(self, run_dirs: list, *, pixel_size: float | None, overlap: int | None, tta: bool | None,
                 batch_size: int = 8, max_tile_px: int | None = None, threads: int | None = None,
                 memory_budget: int | None = None, backend: str = "auto", diameter_A: float | None = None,
                 diameter_px: float | None = None) -> None:
        self.run_dirs, self.pixel_size, self.overlap, self.tta = list(run_dirs), pixel_size, overlap, tta
        self.diameter_A, self.diameter_px = diameter_A, diameter_px
        self.batch_size, self.max_tile_px, self.threads = batch_size, max_tile_px, threads
        self.memory_budget, self.backend = memory_budget, backend
        self._loaded: dict[int, tuple] = {}
        self._models: list[tuple] | None = None
        self._error: CrispError | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_loaded"], state["_models"] = {}, None
        return state

    def preload(self, index: int) -> None:
        """Load run ``index`` now (its errors come before the output folder is touched)."""
        if index not in self._loaded:
            self._loaded[index] = load_run(self.run_dirs[index])

    def models(self) -> list[tuple]:
        """``(config, predictor)`` per run (:class:`crisp.inference.Predictor`), loaded once."""
        if self._error is not None:  # a run that failed to load fails every item at once (--keep-going)
            raise self._error
        try:
            return self._load_models()
        except CrispError as err:
            self._error = err
            raise

    def _load_models(self) -> list[tuple]:
        if self._models is None:
            import torch

            from crisp.inference import Predictor, default_threads

            torch.set_num_threads(int(self.threads or default_threads()))
            device = _device()
            models = []
            for index in range(len(self.run_dirs)):
                self.preload(index)
                config, network = self._loaded[index]
                predictor = Predictor(network, patch_px=config.patch_px,
                                      overlap=config.val_overlap_px if self.overlap is None else self.overlap,
                                      device=device, tta=config.tta if self.tta is None else self.tta,
                                      max_tile_px=self.max_tile_px, memory_budget=self.memory_budget,
                                      batch_size=self.batch_size, backend=self.backend)
                models.append((config, predictor))
            self._models = models
        return self._models

    def binning(self, config, mic, path) -> float:
        """The resampling factor of micrograph ``mic`` for a run (:func:`input_binning`): by the pixel
        size, or for a diameter-scaled run by the particle diameter given (in the micrograph's pixels)."""
        if config.particle_diameter_px is not None:
            check_diameter(config, self.diameter_A, self.diameter_px)
            diameter = micrograph_diameter_px(self.diameter_A, self.diameter_px, mic.pixel_size, path)
            return input_binning(config, mic.pixel_size, diameter)
        if mic.pixel_size is None and config.pixel_size is not None:
            warnings.warn(f"{path}: no pixel size (give --pixel-size); binned by the run's factor "
                          f"{config.bin}, which assumes {config.pixel_size:g} Å/px as in training",
                          stacklevel=2)
        return input_binning(config, mic.pixel_size)

    def check_runs(self) -> None:
        """Refuse a diameter the runs cannot use, or a diameter-scaled run without one (reads only
        the configs; before the output folder is touched)."""
        from crisp.run import Run

        for index, run_dir in enumerate(self.run_dirs):
            if index in self._loaded:  # preloaded (an incomplete run's error comes from loading it)
                check_diameter(self._loaded[index][0], self.diameter_A, self.diameter_px, run_dir)
            else:
                run = Run.load(run_dir)
                check_diameter(run.config, self.diameter_A, self.diameter_px, run.path)

    def network_input(self, config, mic, path, factor: float | None = None) -> np.ndarray:
        """The micrograph binned (by ``factor``; None: :meth:`binning`) and normalised as the run's
        network saw its training data."""
        from crisp.patches import prepare_image

        factor = self.binning(config, mic, path) if factor is None else factor
        return prepare_image(mic.data, factor, config.normalize)


class _Segmenter(NetworkItems):
    """The function of one ``segment`` item: the mean of the runs' maps at the original size."""

    def __call__(self, item, staging) -> dict:
        from crisp.io.micrographs import read_micrograph, write_mrc

        (path,) = item.inputs
        models = self.models()
        mic = read_micrograph(path, pixel_size=self.pixel_size)
        total = np.zeros(mic.shape, np.float32)
        factors = []
        for config, predictor in models:
            factors.append(self.binning(config, mic, path))
            prob = predictor.foreground(self.network_input(config, mic, path, factors[-1]))
            total += np.clip(upsample_to(prob, mic.shape), 0.0, 1.0)
        write_mrc(staging.path(item.outputs[0]), total / len(models), pixel_size=mic.pixel_size,
                  dtype=np.float16)
        return {"shape": list(mic.shape), "pixel_size": mic.pixel_size, "factor": factors,
                "backend": [predictor.backend for _config, predictor in models]}


def segment_files(run_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  micrograph_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                  out_dir: str | os.PathLike[str], *, overwrite: bool = False, batch_size: int = 8,
                  pixel_size: float | None = None, overlap: int | None = None,
                  tta: bool | None = None, progress: bool = True, keep_going: bool = False,
                  shard: tuple[int, int] | None = None, max_tile_px: int | None = None,
                  threads: int | None = None, backend: str = "auto", diameter_A: float | None = None,
                  diameter_px: float | None = None) -> list[Path]:
    """Write a foreground-probability map ``out_dir/NAME.mrc`` (float16) for every micrograph.

    ``run_dir`` is one training run or several (an ensemble): with several, the map is the mean
    of the runs' maps, each made as below at the original size (runs may differ in binning,
    network and pixel size).

    Each micrograph is resampled to the network's input pixel size (:func:`input_binning`: the
    run's binning, adjusted when the micrograph's pixel size differs from the training
    micrographs'), normalised as in training, predicted on that grid (in one forward when it fits the
    memory budget, else by tiles: :class:`crisp.inference.Predictor`), and resampled back to its
    original size, so the map aligns pixel for pixel with the input. The pixel size of the input
    (or ``pixel_size``) goes into the header. A micrograph without a pixel size (JPG, PNG, TIFF, or
    an MRC header of 0) is binned by the run's factor alone, with a warning when the run knows its
    pixel size. ``tta`` averages the 8 flips and rotations of every patch (:func:`foreground_fn`;
    None: the run's ``tta`` setting).

    The micrographs are one batch (:func:`crisp.batch.run_batch`, verb ``segment``, one item per
    micrograph, named by its stem): maps done with the same settings (:func:`segment_settings`)
    are skipped, other settings (another or retrained run, other ``tta``, ``overlap`` or
    ``pixel_size``) are refused naming the setting unless ``overwrite`` (then every map is
    recomputed), and the output folder may not be a folder of the micrographs. The network(s) are
    loaded once, when the first map must be computed.

    Parameters
    ----------
    run_dir
        One run folder or a list of them (an ensemble).
    micrograph_paths
        Micrograph files, folders or glob patterns (:func:`crisp.io.micrographs.list_micrographs`;
        hidden files such as unfinished ``.NAME.part.mrc`` are skipped).
    out_dir
        Output folder.
    overwrite, keep_going, shard, progress
        As in :func:`crisp.batch.run_batch`.
    batch_size
        Patches per network call (does not change the maps).
    pixel_size
        Å per pixel of the micrographs, overriding their headers.
    overlap
        Tile overlap in binned pixels (None: the run's ``val_overlap_px``).
    tta
        Test-time augmentation (None: the run's setting).
    max_tile_px
        Largest side of one forward in binned pixels (None: the whole image when it fits half the
        available memory); the run's ``patch_px`` gives the tiling of training's validation.
    threads
        torch CPU threads (None: the cores the process may use); does not change the maps.
    backend
        ``auto``, ``eager`` or ``onnx`` (:class:`crisp.inference.Predictor`); the maps agree within
        about 1e-5 (float rounding, as between thread counts), so it is not a recorded setting.
    diameter_A, diameter_px
        The particle diameter in Å (converted with each micrograph's pixel size, or ``pixel_size``)
        or in pixels of the micrographs, for a diameter-scaled run (a general model, one with
        ``particle_diameter_px``), which needs one of them; each micrograph is then resampled by
        ``diameter in its pixels / particle_diameter_px`` instead of by its pixel size. A recorded
        setting.

    Returns
    -------
    list of Path
        The probability maps, one per micrograph (of the shard), in the lister's (sorted) order.

    Raises
    ------
    CrispError
        No run, a bad run, no micrographs, two micrographs of one name, a bad output folder, other
        settings without ``overwrite``, or failed micrographs (after the others, with ``keep_going``).
    """
    from crisp.batch import Item, run_batch
    from crisp.io.micrographs import list_micrographs

    if batch_size < 1:
        raise CrispError(f"--batch-size must be at least 1 (got {batch_size})")
    run_dirs = [run_dir] if isinstance(run_dir, (str, os.PathLike)) else list(run_dir)
    if not run_dirs:
        raise CrispError("no training run to segment with")
    single = isinstance(micrograph_paths, (str, os.PathLike))
    sources = [micrograph_paths] if single else list(micrograph_paths)
    paths = list_micrographs(sources)
    if max_tile_px is not None and max_tile_px < 1:
        raise CrispError(f"--max-tile-px must be positive (got {max_tile_px})")
    check_backend(backend)
    from crisp.models.bundled_names import check_writable

    check_writable(out_dir, "maps")
    settings = segment_settings(run_dirs, pixel_size=pixel_size, overlap=overlap, tta=tta,
                                max_tile_px=max_tile_px, diameter_A=diameter_A, diameter_px=diameter_px)
    segmenter = _Segmenter(run_dirs, pixel_size=pixel_size, overlap=overlap, tta=tta, batch_size=batch_size,
                           max_tile_px=max_tile_px, threads=threads, backend=backend, diameter_A=diameter_A,
                           diameter_px=diameter_px)
    for index, identity in enumerate(settings["runs"]):
        if identity["config_sha256"] is None or identity["checkpoint_sha256"] is None:
            segmenter.preload(index)  # not a complete run: its error before the output folder is touched
    segmenter.check_runs()  # a diameter the runs cannot use, or none for a diameter-scaled run
    check_diameter_pixel_sizes(paths, diameter_A, pixel_size)
    items = [Item(p.stem, inputs=(p,), outputs=(f"{p.stem}.mrc",)) for p in paths]
    result = run_batch("segment", items, segmenter, out_dir, settings, overwrite=overwrite,
                       keep_going=keep_going, progress=progress, shard=shard,
                       input_dirs=[s for s in sources if Path(s).is_dir()])
    result.raise_failures()
    return [Path(out_dir) / f"{name}.mrc" for name in result.names]
