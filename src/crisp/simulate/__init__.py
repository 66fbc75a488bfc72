"""Synthetic micrographs with pixel-level labels and true particle positions (the paper's generator).

For each micrograph ``i`` (name ``{prefix}_{i:04d}``):

1. **Particles.** A number of particles (fixed, or drawn from a range) is placed at random integer
   pixel positions: centres at least one particle radius from the edges, and at least
   ``(1 - max_overlap) * diameter`` apart, i.e. circles of the particle diameter overlap by at most
   ``max_overlap`` of a diameter (default 0.1). Orientations are uniformly random
   (:meth:`aspire.utils.Rotation.generate_random_rotations`).
2. **Projections.** The density map (an MRC file, the bundled 4JSV map, or an ASPIRE Gaussian-blob
   phantom), resampled in Fourier space to the micrograph's pixel size, is projected once per
   particle with :meth:`aspire.volume.Volume.project` at the map's box size, scaled so that the
   projection along z has a peak of 1, and added into the micrograph with the projection's centre
   pixel (``L // 2``, ASPIRE's centre) on the particle's centre. This sum is the CTF-free clean
   micrograph.
3. **CTF.** The contrast transfer function of :class:`aspire.operators.CTFFilter` (voltage kV, Cs
   mm, amplitude contrast as a fraction, defocus U/V in Å, astigmatism angle measured from the x
   (column) axis) is evaluated on the micrograph's own 2-D frequency grid and multiplied with the
   FFT of the whole micrograph (periodic boundaries), giving the noise-free micrograph.
4. **Noise.** White Gaussian noise is added at the requested signal-to-noise ratio, defined as
   ``SNR = var(noise-free CTF-applied micrograph) / var(noise)`` over the whole micrograph
   (the paper: 0.005 at 1.77 Å/px).
5. **Labels** come from the CTF-free clean micrograph: a global threshold (scikit-image
   ``threshold_<name>``, default Li) is computed on it; the **mask** is ``clean > threshold`` with
   enclosed holes filled, joined with the instance footprints; the **instance map** gives each
   particle ``k`` (ids 1..N in placement order) its own footprint, ``projection_k > threshold`` with
   holes filled. If the global threshold would leave a particle's centre outside its footprint (a
   projection that is thin at its centre), that particle's threshold is lowered to half its centre
   value, so every true centre lies inside the mask and inside its own instance. Where footprints
   overlap, the larger id wins.

Angles are written in RELION's convention the way ASPIRE writes them itself (``ImageSource``):
``rlnAngleRot, rlnAngleTilt, rlnAnglePsi`` = the ZYZ Euler angles of ASPIRE's rotation matrix
(:attr:`aspire.utils.Rotation.angles`, scipy's intrinsic ``"ZYZ"``), in degrees.

Reproducibility: micrograph ``i`` uses its own random generator,
``numpy.random.SeedSequence(seed, spawn_key=(i,))``, so it is the same whatever the number of
micrographs asked for. The dataset folder is written by the batch engine (:mod:`crisp.batch`): a rerun
skips micrographs already made with the same settings and refuses other settings.

Modules: :mod:`~crisp.simulate.config` (settings, presets), :mod:`~crisp.simulate.physics` (the density,
placement, projection, CTF, noise, labels of one micrograph), :mod:`~crisp.simulate.dataset` (the
dataset folder, the preview figure), :mod:`~crisp.simulate.corpus` (``crisp simulate-corpus``: the
general model's training corpus, many structures and phantoms at a fixed particle size in pixels,
with the nuisances of :mod:`~crisp.simulate.nuisances`).
"""

from crisp.simulate.config import (
    DEFAULT_PRESET,
    PHANTOM_PATTERN,
    PRESETS,
    THRESHOLDS,
    SimulationConfig,
    make_config,
)
from crisp.simulate.dataset import (
    PREVIEW_FILE,
    SIMULATION_FILE,
    micrograph_name,
    plot_preview,
    simulate_dataset,
    simulation_settings,
    write_simulated,
)
from crisp.simulate.physics import (
    REFERENCE_MAP,
    Reference,
    SimulatedMicrograph,
    apply_ctf,
    bundled_map_path,
    ctf_2d,
    draw_defocus,
    load_reference,
    make_phantom,
    measure_diameter_px,
    micrograph_rng,
    place_particles,
    read_defocus_table,
    read_map,
    resample_volume,
    simulate_micrograph,
)

__all__ = [
    "DEFAULT_PRESET", "PHANTOM_PATTERN", "PREVIEW_FILE", "PRESETS", "REFERENCE_MAP", "SIMULATION_FILE",
    "THRESHOLDS", "Reference", "SimulatedMicrograph", "SimulationConfig", "apply_ctf", "bundled_map_path",
    "ctf_2d", "draw_defocus", "load_reference", "make_config", "make_phantom", "measure_diameter_px",
    "micrograph_name", "micrograph_rng", "place_particles", "plot_preview", "read_defocus_table", "read_map",
    "resample_volume", "simulate_dataset", "simulate_micrograph", "simulation_settings", "write_simulated",
]
