"""CLI verbs of the data area: ``crisp simulate``, ``crisp preprocess``, ``crisp split`` (see crisp.cli).

Heavy modules (aspire, scipy's FFT users) are imported inside the verbs so ``crisp --help`` is fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from crisp.commands.common import SCHEDULER, WORKERS, execution
from crisp.errors import CrispError

_NUMBER = r"([-+]?[0-9.]+(?:[eE][-+]?\d+)?)"
_RANGE = re.compile(rf"^\s*{_NUMBER}\s*(?:(?:-|:|,|\.\.)\s*{_NUMBER})?\s*$")


def parse_range(text: str | None, option: str, integer: bool = False) -> tuple[float, float] | None:
    """Parse ``"150"`` or ``"100-300"`` (also ``100:300``, ``100,300``) into (min, max)."""
    if text is None:
        return None
    m = _RANGE.match(text)
    if not m:
        raise CrispError(f"{option}: expected a number or a range like 100-300 (got '{text}')")
    cast = int if integer else float
    try:
        lo = cast(m.group(1))
        hi = cast(m.group(2)) if m.group(2) is not None else lo
    except ValueError:
        raise CrispError(f"{option}: expected {'whole ' if integer else ''}numbers (got '{text}')") from None
    return (lo, hi)


_SIMULATE_BOUNDS = {"size": dict(gt=0), "width": dict(gt=0), "height": dict(gt=0), "count": dict(ge=1)}
"""Bounds checked here; the other numbers only need to be finite (their ranges are checked, with the
physical quantity named, by the simulation settings)."""
_SIMULATE_OPTIONS = {"diameter": "--diameter-A", "pixel_size": "--pixel-size",
                     "map_pixel_size": "--map-pixel-size", "max_overlap": "--max-overlap",
                     "amplitude_contrast": "--amplitude-contrast"}


def _check_simulate_numbers(**values: float | None) -> None:
    """Every numeric option of ``simulate`` finite (NaN and inf pass pydantic's bounds), counts positive."""
    from crisp.config import check_number

    for key, value in values.items():
        check_number(value, _SIMULATE_OPTIONS.get(key, f"--{key}"), **_SIMULATE_BOUNDS.get(key, {}))


def register(app: typer.Typer) -> None:
    """Add this area's verbs to app."""

    @app.command("simulate")
    def simulate_cmd(
        out: Path = typer.Option(..., "-o", "--out", help="Output dataset folder."),
        preset: str | None = typer.Option(None, "--preset",
                                          help="small (default: 24 x 512^2 at 3.54 Å/px, seconds) or "
                                          "paper (84 x 4096^2 at 1.77 Å/px, 150 particles, SNR 0.005)."),
        config: Path | None = typer.Option(None, "--config", help="YAML of SimulationConfig values (or "
                                           "a simulation.yaml to repeat); options given here override it."),
        map_path: Path | None = typer.Option(None, "--map", help="Density map (MRC); default: the "
                                             "bundled 4JSV map."),
        phantom: str | None = typer.Option(None, "--phantom", help="ASPIRE Gaussian-blob phantom "
                                           "instead of a map: cN, dN, t, o, i, asym, legacy."),
        map_pixel_size: float | None = typer.Option(None, "--map-pixel-size", help="Voxel size of "
                                                    "--map in Å (overrides its header)."),
        size: int | None = typer.Option(None, "--size", help="Square micrograph size in pixels."),
        width: int | None = typer.Option(None, "--width", help="Micrograph width (x) in pixels."),
        height: int | None = typer.Option(None, "--height", help="Micrograph height (y) in pixels."),
        pixel_size: float | None = typer.Option(None, "--pixel-size", help="Å per pixel."),
        count: int | None = typer.Option(None, "--count", help="Number of micrographs."),
        particles: str | None = typer.Option(None, "--particles", help="Particles per micrograph: "
                                             "N or MIN-MAX."),
        diameter: float | None = typer.Option(None, "--diameter-A", help="Particle diameter in Å "
                                              "for placement (default: measured from the map)."),
        max_overlap: float | None = typer.Option(None, "--max-overlap", help="Largest overlap of two "
                                                 "particles' circles, fraction of a diameter (0.1)."),
        snr: float | None = typer.Option(None, "--snr", help="var(clean CTF'd) / var(noise)."),
        voltage: float | None = typer.Option(None, "--voltage", help="kV (300)."),
        cs: float | None = typer.Option(None, "--cs", help="Spherical aberration, mm (2.7)."),
        amplitude_contrast: float | None = typer.Option(None, "--amplitude-contrast",
                                                        help="Fraction in [0, 1) (0.1)."),
        defocus: str | None = typer.Option(None, "--defocus", help="Defocus in Å: D or MIN-MAX "
                                           "(10000-25000)."),
        astigmatism: str | None = typer.Option(None, "--astigmatism", help="DefocusU - DefocusV in "
                                               "Å: A or MIN-MAX (0)."),
        defocus_file: Path | None = typer.Option(None, "--defocus-file", help="STAR file of real "
                                                 "defocus values to draw from."),
        defocus_column: str | None = typer.Option(None, "--defocus-column",
                                                  help="Column of --defocus-file (rlnDefocusU)."),
        threshold: str | None = typer.Option(None, "--threshold", help="Label threshold: li, otsu, "
                                             "yen, triangle, isodata, mean, minimum."),
        save_clean: bool | None = typer.Option(None, "--save-clean/--no-save-clean",
                                               help="Also write the noise-free micrographs."),
        seed: int | None = typer.Option(None, "--seed", help="Master seed (0)."),
        prefix: str | None = typer.Option(None, "--prefix", help="Micrograph name prefix (synth)."),
        preview: bool = typer.Option(True, "--preview/--no-preview", help="Write preview.png of the "
                                     "first micrograph (mask outline, true centres, instances)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every micrograph, also "
                                       "those OUT holds from other settings."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Go on with the other micrographs "
                                        "when one fails (exit 2 at the end, listing the failures)."),
        shard: str | None = typer.Option(None, "--shard", help="I/N: make only the I-th of N shares of "
                                         "the micrographs (e.g. one cluster job each)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Simulate micrographs with pixel-level labels and true coordinates (a dataset folder).

        A rerun skips the micrographs already made with the same settings (all but --count) and
        refuses other settings unless --overwrite.
        """
        from crisp.batch import parse_shard
        from crisp.config import check_output, read_yaml
        from crisp.simulate import make_config, simulate_dataset

        shard_spec = parse_shard(shard)
        _check_simulate_numbers(size=size, width=width, height=height, pixel_size=pixel_size,
                                count=count, map_pixel_size=map_pixel_size, diameter=diameter,
                                max_overlap=max_overlap, snr=snr, voltage=voltage, cs=cs,
                                amplitude_contrast=amplitude_contrast)
        check_output(out, "folder")
        values: dict = {}
        if config is not None:
            values = read_yaml(config)
            if isinstance(values.get("config"), dict):  # a simulation.yaml written by this verb
                values = dict(values["config"])
            preset = preset or values.pop("preset", None)
            values.pop("preset", None)
        if size is not None:
            width = width if width is not None else size
            height = height if height is not None else size
        options = {
            "map": None if map_path is None else str(map_path), "phantom": phantom,
            "map_pixel_size": map_pixel_size, "width_px": width, "height_px": height,
            "pixel_size": pixel_size, "count": count,
            "particles": parse_range(particles, "--particles", integer=True),
            "particle_diameter_A": diameter, "max_overlap": max_overlap, "snr": snr,
            "voltage_kV": voltage, "cs_mm": cs, "amplitude_contrast": amplitude_contrast,
            "defocus_A": parse_range(defocus, "--defocus"),
            "astigmatism_A": parse_range(astigmatism, "--astigmatism"),
            "defocus_file": None if defocus_file is None else str(defocus_file),
            "defocus_column": defocus_column, "threshold": threshold, "save_clean": save_clean,
            "seed": seed, "prefix": prefix,
        }
        values.update({k: v for k, v in options.items() if v is not None})
        cfg = make_config(preset, **values)
        with execution(workers, scheduler):
            names = simulate_dataset(out, cfg, progress=not quiet, preview=preview, overwrite=overwrite,
                                     keep_going=keep_going, shard=shard_spec)
        typer.echo(f"{len(names)} micrographs in {out} ({cfg.width_px} x {cfg.height_px} px, "
                   f"{cfg.pixel_size} Å/px, seed {cfg.seed})")

    @app.command("simulate-corpus")
    def simulate_corpus_cmd(
        out: Path = typer.Option(..., "-o", "--out", help="Output dataset folder."),
        count: int = typer.Option(100, "--count", help="Number of micrographs."),
        seed: int = typer.Option(0, "--seed", help="Master seed."),
        size: int = typer.Option(512, "--size", help="Square micrograph size in pixels."),
        structures: str | None = typer.Option(None, "--structures", help="Comma-separated catalogue "
                                              "names (default: all usable ones but the held-out "
                                              "4jsv, 3enl, 6msm)."),
        exclude: str | None = typer.Option(None, "--exclude-structures", help="Comma-separated names "
                                           "to leave out."),
        phantom_fraction: float = typer.Option(0.25, "--phantom-fraction", help="Fraction of "
                                               "micrographs of ASPIRE phantoms."),
        snr_detector: str | None = typer.Option(None, "--snr-detector", help="SNR at the detector "
                                                "pixel size: S or LO,HI (0.003,0.05; log-uniform)."),
        label: str = typer.Option("disc", "--label", help="disc (radius a quarter diameter at the "
                                  "true centres) or footprint (thresholded particle image)."),
        prefix: str = typer.Option("corpus", "--prefix", help="Micrograph name prefix."),
        preview: bool = typer.Option(True, "--preview/--no-preview", help="Write preview.png."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every micrograph, also "
                                       "those OUT holds from other settings."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Go on when one micrograph fails."),
        shard: str | None = typer.Option(None, "--shard", help="I/N: make only the I-th of N shares."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Simulate the general model's training corpus (crisp.simulate.corpus): many structures and
        phantoms at a fixed particle size in pixels, random CTF, SNR, coloured noise, carbon, ice."""
        from crisp.batch import parse_shard
        from crisp.config import check_number, check_output
        from crisp.simulate.corpus import default_structures, make_corpus_config, simulate_corpus
        from crisp.simulate.structures import get_structure

        shard_spec = parse_shard(shard)
        check_number(count, "--count", ge=1)
        check_number(size, "--size", gt=0)
        check_number(phantom_fraction, "--phantom-fraction", ge=0, le=1)
        check_output(out, "folder")
        names = default_structures() if structures is None else tuple(
            s.strip() for s in structures.split(",") if s.strip())
        dropped = tuple(s.strip() for s in (exclude or "").split(",") if s.strip())
        for name in names + dropped:
            get_structure(name)
        cfg = make_corpus_config(count=count, seed=seed, size=size, prefix=prefix, label=label,
                                 structures=tuple(n for n in names if n not in dropped),
                                 phantom_fraction=phantom_fraction,
                                 snr_detector=parse_range(snr_detector, "--snr-detector"))
        with execution(workers, scheduler):
            made = simulate_corpus(out, cfg, progress=not quiet, preview=preview, overwrite=overwrite,
                                   keep_going=keep_going, shard=shard_spec)
        typer.echo(f"{len(made)} micrographs in {out} ({size} x {size} px, {len(cfg.structures)} structures, "
                   f"phantom fraction {phantom_fraction:g}, seed {seed})")

    @app.command("preprocess")
    def preprocess_cmd(
        inputs: list[Path] = typer.Argument(..., help="Micrographs (MRC/TIFF/PNG/JPG) or folders of them."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (float32 MRC per micrograph)."),
        bin_factor: float = typer.Option(1.0, "--bin", help="Fourier binning factor >= 1 (non-integer "
                                         "allowed)."),
        normalize: str = typer.Option("gmm", "--normalize", help="gmm (Topaz-style), zscore or none."),
        lowpass_A: float | None = typer.Option(None, "--lowpass-A", help="Gaussian low-pass: transfer "
                                               "0.5 at this resolution (Å)."),
        pixel_size: float | None = typer.Option(None, "--pixel-size", help="Å per pixel of the inputs "
                                                "(overrides the header)."),
        coords: Path | None = typer.Option(None, "--coords", help="Folder of NAME.star coordinates to "
                                           "scale to the binned micrographs (into OUT/coordinates/)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the GMM pixel subsample."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Recompute every output (also when OUT "
                                       "holds outputs of other settings, e.g. another --bin)."),
        keep_going: bool = typer.Option(False, "--keep-going", help="Record a failing micrograph and go on "
                                        "with the others (exit 2 at the end)."),
        shard: str | None = typer.Option(None, "--shard", help="I/N: only the I-th of N shares of the "
                                         "micrographs (shards may run at once into one OUT)."),
        workers: int | None = WORKERS,
        scheduler: str | None = SCHEDULER,
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Bin (Fourier crop), low-pass and normalise micrographs."""
        from crisp.batch import parse_shard
        from crisp.config import check_number, check_output, validate_config
        from crisp.preprocess import PreprocessConfig, preprocess_files

        check_number(bin_factor, "--bin", ge=1)
        check_number(lowpass_A, "--lowpass-A", gt=0)
        check_number(pixel_size, "--pixel-size", gt=0)
        check_output(out, "folder")

        cfg = validate_config(PreprocessConfig, {"bin": bin_factor, "normalize": normalize,
                                                 "lowpass_A": lowpass_A, "pixel_size": pixel_size,
                                                 "seed": seed})
        with execution(workers, scheduler):
            written = preprocess_files(inputs, out, cfg, coords_dir=coords, progress=not quiet,
                                       overwrite=overwrite, keep_going=keep_going, shard=parse_shard(shard))
        typer.echo(f"{len(written)} micrographs in {out}")

    @app.command("split")
    def split_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder (with micrographs/)."),
        train: int = typer.Option(16, "--train", help="Training micrographs (16)."),
        val: int = typer.Option(6, "--val", help="Validation micrographs (6)."),
        test: int | None = typer.Option(None, "--test", help="Test micrographs (default: the rest)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the shuffle."),
        force: bool = typer.Option(False, "--force", help="Replace an existing, different split.yaml."),
    ) -> None:
        """Write DATASET/split.yaml: a fixed, seeded train / val / test partition."""
        from crisp.dataset import DatasetFolder, make_split, read_split, write_split

        folder = DatasetFolder.open(dataset)
        split = make_split(folder.names(), train, val, seed=seed, n_test=test)
        if folder.split_file.exists() and not force:
            if read_split(folder.split_file) == split:
                typer.echo(f"{folder.split_file} already holds this split")
                return
            raise CrispError("a different split already exists; pass --force to replace it",
                             folder.split_file)
        write_split(folder.split_file, split)
        typer.echo(f"{folder.split_file}: {len(split.train)} train, {len(split.val)} val, "
                   f"{len(split.test)} test (seed {seed})")
