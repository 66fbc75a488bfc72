"""CRISP benchmark suite (issue 7): ``s1``, ``speed`` and ``real``, each ending in one table of figures.

Each subcommand runs the existing benchmark scripts of this folder in order, each as a fresh
subprocess (its output is shown and kept in ``WORK/logs/PART.log``), reads the figures they print
or write, and ends with ONE Markdown table (part, metric, value, target, met, command) printed and
written to ``WORK/suite-NAME.md`` and ``WORK/suite-NAME.json``. The ``command`` column reproduces a
part from the repository root. The parts resume where they can: a rerun with the same ``--work``
skips finished simulations, trainings and sweep runs. Exit status 0 when every part ran (a missed
target is shown in the table, not an error), 1 when a part crashed, 0 with a message when ``real``
finds no data.

Subcommands::

    python -m benchmarks.suite s1    [--work DIR] [--quick] [--epochs N] [--crf-epochs 50] [--threads N]
    python -m benchmarks.suite speed [--work DIR] [--quick] [--run RUN] [--micrograph MRC] [--cases ...]
    python -m benchmarks.suite real  [--work DIR] [--quick] [--data DIR] [--methods disk,threshold]
                                     [--epochs N] [--disk-fraction F] [--ensemble K] [--threads N]

``s1``: benchmark S1 end to end: simulation + training + pixel metrics (``s1_segmentation.py``), the
S1 network evaluated as a run (``suite.py evaluate-run``: picker tuned on validation, pixel and
picking metrics on test), the CRF accuracy table (``crisp sweep`` from the S1 network over
crf.kind [crf, cd-crf] x crf.solver [mean-field, frank-wolfe], ``--crf-epochs`` of fine-tuning,
evaluated on test), the probability histograms of the CNN and the CRF runs
(``probability_histograms.py``), and the per-finder picking table (``picking_s1.py``).
Hours on 2 CPU cores.

``speed``: ``simulate_speed.py``, ``inference_speed.py`` (seconds per micrograph by preset and
binning), ``crf_speed.py`` (with pydensecrf2 as the reference when installed: ``pip install
crisp-em[bench]``), ``picking_speed.py`` and ``memory_4k.py`` (peak RSS through segment + pick of a
4096 x 4096 micrograph; the network is ``--run`` or, by default, the ``cpu`` preset's network with
random weights saved as a run: memory and time do not depend on the weights). About 20 minutes.

``real``: ``real_data.py`` (labels by disk and threshold, training, pixel and picking metrics on
EMPIAR-10017), ``picking_s1.py`` on the disk-label run (each finder tuned and scored) and
``picking_real_masks.py`` (the finders on the expert masks). With ``--ensemble K`` (K >= 2), K - 1
more disk-label runs with training seeds 1 .. K-1 (``real_data.py --train-seed``, same split) and
``real_ensemble.py`` on all K (each alone and their mean map). Needs ``../shared/data/empiar10017-dev``.
The best recipes so far (``benchmarks/README.md``): ``real --methods threshold --epochs 100`` and
``real --methods disk --epochs 100 --disk-fraction 0.5 [--ensemble 3]``.

``--quick`` shrinks everything (1024 px micrographs, 1 epoch, 1 repeat, small patches) so that each
subcommand finishes in minutes; it checks that the suite runs, its figures mean nothing, and its
part folders are ``WORK/PART-quick`` so they never mix with a full run's. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import REPO
from crisp.run import Run

BENCH = REPO / "benchmarks"
REAL_DATA = REPO.parent / "shared" / "data" / "empiar10017-dev"
INVOCATION: list[str] = []  # the suite's own arguments, for the table's header
CRF_GRID = {"crf.kind": ["crf", "cd-crf"], "crf.solver": ["mean-field", "frank-wolfe"]}


@dataclass
class Row:
    """One figure of the final table."""

    part: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None
    command: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _crisp_command() -> list[str]:
    exe = Path(sys.executable).parent / "crisp"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("crisp")
    return [found] if found else [sys.executable, "-c", "from crisp.cli import main; main()"]


def _display(argv: list[str]) -> str:
    """A command as a person would type it from the repository root."""
    shown = []
    for arg in argv:
        if arg == sys.executable:
            arg = "python"
        elif arg.endswith("/crisp") and Path(arg).parent == Path(sys.executable).parent:
            arg = "crisp"
        elif arg.startswith(str(BENCH) + os.sep):
            arg = os.path.relpath(arg, REPO)
        shown.append(arg)
    return shlex.join(shown)


def _float(text: Any) -> float | None:
    """The number ``text`` is (None when it is not one, e.g. a header cell)."""
    try:
        return float(str(text).strip())
    except ValueError:
        return None


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Suite:
    """Runs parts as subprocesses, collects rows, writes the final table."""

    def __init__(self, name: str, work: Path, quick: bool):
        self.name, self.work, self.quick = name, work, quick
        self.invocation = shlex.join(["python", "-m", "benchmarks.suite", *INVOCATION])
        self.rows: list[Row] = []
        self.failed: list[str] = []
        self.started = time.time()
        self.load_start = os.getloadavg()
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def folder(self, part: str) -> Path:
        """The part's work folder (``WORK/PART``, ``WORK/PART-quick`` with ``--quick``)."""
        return self.work / (f"{part}-quick" if self.quick else part)

    def add(self, part: str, metric: str, value: Any, target: str = "", met: bool | None = None,
            command: str = "", data: dict[str, Any] | None = None) -> None:
        met = None if self.quick else met
        self.rows.append(Row(part, metric, _fmt(value), target, met, command, dict(data or {})))

    def check(self, part: str, metric: str, value: float | None, op: str, bound: float, unit: str = "",
              command: str = "", shown: str | None = None, note: str = "") -> None:
        """A row with a numeric target ``value op bound`` (op: '<=' or '>=')."""
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        sign = "≤" if op == "<=" else "≥"
        target = f"{sign} {bound:g}{unit}" + (f" ({note})" if note else "")
        self.add(part, metric, shown if shown is not None else value, target, met, command,
                 data={"value": value})

    def run(self, part: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[bool, str, str]:
        """Run ``argv`` from the repository root, echo and log its output; (ok, output, command)."""
        command = _display(argv)
        log = self.work / "logs" / f"{part}.log"
        print(f"\n=== {self.name}/{part}: {command}", flush=True)
        child_env = dict(os.environ, **(env or {}))
        child_env.setdefault("TQDM_MININTERVAL", "5")
        load0, start = os.getloadavg()[0], time.perf_counter()
        lines = []
        with open(log, "w", encoding="utf-8") as handle:
            handle.write(f"$ {command}\n")
            proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=child_env, bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                handle.write(line)
                lines.append(line)
            rc = proc.wait()
        seconds = time.perf_counter() - start
        load1 = os.getloadavg()[0]
        self.add(part, "wall time of the part (s)", f"{seconds:.0f} (load average {load0:.1f} → {load1:.1f})",
                 command=command, data={"seconds": seconds, "load": [load0, load1]})
        if rc != 0:
            self.failed.append(part)
            self.add(part, "FAILED", f"exit status {rc}; see {log}", command=command)
            print(f"=== {part} FAILED (exit {rc}); log: {log}", flush=True)
        return rc == 0, "".join(lines), command

    def skip(self, part: str, reason: str) -> None:
        self.add(part, "skipped", reason)
        print(f"=== {self.name}/{part}: skipped ({reason})", flush=True)

    def finish(self, notes: list[str] | None = None) -> int:
        load = os.getloadavg()
        title = f"CRISP benchmark suite: {self.name}" + (" (quick: a smoke run, figures not meaningful)"
                                                         if self.quick else "")
        minutes = (time.time() - self.started) / 60
        header = [f"## {title}", "", f"`{self.invocation}`", "",
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.started))}, {minutes:.0f} min; "
                  f"{os.cpu_count()} CPU cores; load average at start {self.load_start[0]:.1f} / "
                  f"{self.load_start[1]:.1f} / {self.load_start[2]:.1f}, at end {load[0]:.1f} / "
                  f"{load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min). Commands run from the repository root; "
                  f"work folder {self.work}.", ""]
        header += [f"- {n}" for n in notes or []] + ([""] if notes else [])
        table = ["| part | metric | value | target | met | command |", "|---|---|---|---|---|---|"]
        last_command: dict[str, str] = {}
        for row in self.rows:
            mark = {True: "yes", False: "**NO**", None: "n/a (quick)" if self.quick and row.target else ""}
            command = row.command if row.command and last_command.get(row.part) != row.command else ""
            if row.command:
                last_command[row.part] = row.command
            cells = [row.part, row.metric, row.value, row.target, mark[row.met],
                     f"`{command}`" if command else ""]
            table.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
        missed = [r for r in self.rows if r.met is False]
        listed = ": " + "; ".join(f"{r.part} {r.metric}" for r in missed) if missed else "."
        footer = ["", f"{len(missed)} target(s) missed{listed}"]
        if self.failed:
            footer.append(f"Parts that FAILED: {', '.join(self.failed)} (logs in {self.work / 'logs'}).")
        text = "\n".join(header + table + footer) + "\n"
        print("\n" + text)
        md, js = self.work / f"suite-{self.name}.md", self.work / f"suite-{self.name}.json"
        md.write_text(text, encoding="utf-8")
        js.write_text(json.dumps({"suite": self.name, "quick": self.quick, "started": self.started,
                                  "minutes": minutes, "loadavg_start": self.load_start, "loadavg_end": load,
                                  "failed": self.failed, "notes": notes or [],
                                  "rows": [asdict(r) for r in self.rows]}, indent=2, default=str) + "\n")
        print(f"wrote {md} and {js}")
        return 1 if self.failed else 0


# ----------------------------------------------------------------------------------------------- s1
def run_s1(args) -> int:
    suite = Suite("s1", args.work, args.quick)
    py = sys.executable
    s1 = suite.folder("s1")
    data, run = s1 / "data", s1 / "run"

    argv = [py, "-m", "benchmarks.s1_segmentation", "--out", str(s1), "--seed", str(args.seed)]
    if args.quick:
        argv += ["--reduced", "--epochs", str(args.epochs or 1)]
    elif args.epochs:
        argv += ["--epochs", str(args.epochs)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    ok, _, command = suite.run("segmentation", argv)
    if ok:
        result = json.loads((s1 / "s1_result.json").read_text())
        targets = {"test pixel IoU": (">=", 0.85, "paper 0.923"),
                   "test pixel F1": (">=", 0.92, "paper 0.960"),
                   "training wall time (s)": ("<=", 1200.0, "20 min")}
        for key, value in result.items():
            if key in targets:
                op, bound, note = targets[key]
                suite.check("segmentation", key, _float(value), op, bound, command=command, shown=value,
                            note=note)
            else:
                suite.add("segmentation", key, value, command=command)
    if not Run(run).is_finished:
        suite.skip("crf", "no trained S1 network")
        return suite.finish()

    ok, _, command = suite.run("cnn-eval",
                               [py, "-m", "benchmarks.suite", "evaluate-run", str(run), str(data)])

    sweep_dir = s1 / "crf"
    crf_epochs = args.crf_epochs or (1 if args.quick else 50)
    grid = {"dataset": str(data), "out": str(sweep_dir), "preset": "cpu", "seed": args.seed,
            "base": {"init": str(run), "epochs": crf_epochs,
                     **({"threads": args.threads} if args.threads else {})},
            "grid": CRF_GRID, "evaluate": "test", "picker": "tune"}
    grid_file = s1 / "crf-sweep.yaml"
    import yaml

    grid_file.write_text(yaml.safe_dump(grid, sort_keys=False))
    ok_sweep, _, sweep_command = suite.run("crf", [*_crisp_command(), "sweep", str(grid_file)])
    runs = {"U-Net alone (S1 network)": run}
    for kind in CRF_GRID["crf.kind"]:
        for solver in CRF_GRID["crf.solver"]:
            runs[f"+ {kind.upper()}, {solver}"] = sweep_dir / f"kind-{kind}_solver-{solver}"
    base_iou = None
    for label, run_dir in runs.items():
        evaluation = run_dir / "evaluation" / "test.json"
        if not evaluation.is_file():
            suite.add("crf", label, "not evaluated")
            continue
        record = json.loads(evaluation.read_text())
        pixel, picking, box = record["pixel"], record.get("picking", {}), record.get("box", {})
        summary = Run(run_dir).summary()
        value = (f"IoU {pixel['iou']:.4f} / recall {pixel['recall']:.4f} / F1 {pixel['f1']:.4f} / "
                 f"pick F1 {picking.get('F1', float('nan')):.3f} / box mAP {box.get('mAP', float('nan')):.3f}"
                 f" / training {summary['wall_time_s']:.0f} s")
        metric = f"{label}: test pixel IoU / recall / F1, picking F1, box mAP, training time"
        data_ = {"pixel": pixel, "picking": picking, "box": box, "train_s": summary["wall_time_s"]}
        if base_iou is None:
            base_iou = pixel["iou"]
            suite.add("crf", metric, value, command=command, data=data_)
        else:
            suite.add("crf", metric, value, "IoU > U-Net alone (paper: CRFs gain)", pixel["iou"] > base_iou,
                      sweep_command, data=data_)

    evaluated = {label: r for label, r in runs.items() if (r / "evaluation" / "test.json").is_file()}
    if len(evaluated) > 1:
        labels = ["cnn"] + [label.split(" ", 1)[1].replace(", ", "-").lower()
                            for label in list(evaluated)[1:]]
        argv = [py, "-m", "benchmarks.probability_histograms", *map(str, evaluated.values()),
                "--out", str(s1 / "histograms.png"), "--labels", ",".join(labels)]
        ok, out, command = suite.run("histograms", argv)
        if ok:
            base_mid = None
            for line in out.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) != 4 or _float(cells[2]) is None:
                    continue
                mid = _float(cells[2])
                metric = f"{cells[0]}: fraction of test pixels with 0.1 < p < 0.9 (p ≥ 0.5: {cells[3]})"
                if base_mid is None:
                    base_mid = mid
                    suite.add("histograms", metric, cells[2], command=command, data={"middle": mid})
                else:
                    suite.add("histograms", metric, cells[2], "< U-Net alone (paper App. 7)", mid < base_mid,
                              command, data={"middle": mid})
            suite.add("histograms", "figure", str(s1 / "histograms.png"))
    else:
        suite.skip("histograms", "no evaluated CRF run")

    ok, _, command = suite.run("picking", [py, "-m", "benchmarks.picking_s1", "--work", str(s1)])
    if ok:
        for row in json.loads((s1 / "picking_s1.json").read_text()):
            params = ", ".join(f"{k} {v}" for k, v in json.loads(row["params"]).items())
            suite.add("picking", f"{row['finder']}: test box mAP / P / R / F1 at IoU 0.5 ({params})",
                      f"{row['test mAP']:.3f} / {row['P@IoU.5']:.3f} / {row['R@IoU.5']:.3f} / "
                      f"{row['F1@IoU.5']:.3f}", command=command, data=row)
            suite.add("picking", f"{row['finder']}: radius P / R / F1 / AP, s per map",
                      f"{row['P radius']:.3f} / {row['R radius']:.3f} / {row['F1 radius']:.3f} / "
                      f"{row['AP radius']:.3f}, {row['s / map']:.2f} s", command=command)
    notes = [f"S1: bundled 4JSV map, `paper` simulation preset, seed {args.seed}; `cpu` training preset; "
             f"CRF fine-tuning {crf_epochs} epochs from the S1 network "
             f"(grid file {grid_file}; `crisp compare {run} {sweep_dir}/kind-*` shows the runs side by "
             "side)."]
    return suite.finish(notes)


def evaluate_run_main(args) -> int:
    """Tune the picker on the validation maps and evaluate a run on ``--subset`` (what crisp sweep does)."""
    from crisp.workflow.evaluate_run import evaluate_run, evaluation_path, run_picker

    if evaluation_path(args.run, args.subset).is_file() and not args.overwrite:
        print(f"{evaluation_path(args.run, args.subset)} exists (done before)")
        return 0
    picker = run_picker(args.run, args.dataset)
    record = evaluate_run(args.run, args.dataset, args.subset, picker=picker, overwrite=args.overwrite)
    print(json.dumps(record, indent=2))
    return 0


# -------------------------------------------------------------------------------------------- speed
def _simulate_micrograph(suite: Suite, size: int, seed: int) -> Path | None:
    """One simulated micrograph (paper preset, ``size`` px square) for memory_4k."""
    folder = suite.folder("speed") / f"micrograph-{size}"
    particles = max(4, round(150 * size**2 / 4096**2))
    argv = [*_crisp_command(), "simulate", "-o", str(folder), "--preset", "paper", "--count", "1",
            "--size", str(size), "--particles", str(particles), "--seed", str(seed)]
    ok, _, _ = suite.run("micrograph", argv)
    found = sorted((folder / "micrographs").glob("*.mrc")) if ok else []
    return found[0] if found else None


def run_speed(args) -> int:
    suite = Suite("speed", args.work, args.quick)
    py = sys.executable
    speed = suite.folder("speed")
    speed.mkdir(parents=True, exist_ok=True)
    notes = []

    argv = [py, "-m", "benchmarks.simulate_speed"] + (["--cases", "small,1k", "--repeats", "1"] if args.quick
                                                      else ["--repeats", "2"])
    ok, out, command = suite.run("simulate", argv)
    if ok:
        targets = {"1k": (2.0, None), "paper-4k": (15.0, 3.0)}
        lines = out.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("----")), len(lines))
        for line in lines[start + 1:]:
            t = line.split()
            if len(t) != 9:
                continue
            case, size, particles = t[0], t[1], t[3]
            sim_s, write_s, peak = float(t[6]), float(t[7]), float(t[8])
            label = f"{case} ({size}, {particles} particles)"
            seconds_target, memory_target = targets.get(case, (None, None))
            if seconds_target:
                suite.check("simulate", f"{label}: s per micrograph", sim_s, "<=", seconds_target, " s",
                            command)
            else:
                suite.add("simulate", f"{label}: s per micrograph", sim_s, command=command)
            suite.add("simulate", f"{label}: write s / load s (once)", f"{write_s:.2f} / {float(t[5]):.2f}",
                      command=command)
            if memory_target:
                suite.check("simulate", f"{label}: peak RSS (GB)", peak, "<=", memory_target, " GB", command)
            else:
                suite.add("simulate", f"{label}: peak RSS (GB)", peak, command=command)

    inference_json = speed / "inference.json"
    argv = [py, "-m", "benchmarks.inference_speed", "--json", str(inference_json)]
    if args.quick:
        argv += ["--size", "1024", "--cases", args.cases or "cpu:4,paper:4", "--repeats", "1"]
    else:
        argv += ["--cases", args.cases] if args.cases else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    ok, _, command = suite.run("inference", argv)
    if ok:
        record = json.loads(inference_json.read_text())
        for row in record["rows"]:
            label = f"{row['preset']} bin {row['bin']}"
            if "error" in row:
                suite.add("inference", f"{label}: FAILED", row["error"], command=command)
                continue
            suite.add("inference", f"{label} ({row['network']}, {row['patches']} patches of "
                      f"{row['patch_px']} px): s per {row['micrograph']} micrograph "
                      f"(load {row['load_s']:.1f} s once)",
                      f"{row['s_per_micrograph']:.2f} (predict {row['predict_s']:.2f}, bin+normalise "
                      f"{row['bin+normalise_s']:.2f})", command=command, data=row)
            suite.add("inference", f"{label}: peak RSS (GB)", row["peak_rss_gb"], command=command)
        notes.append(f"inference: random-weight networks, torch threads "
                     f"{record['rows'][0].get('threads', '?')}, median of {record['repeats']} after a "
                     "warm-up, "
                     f"{record['micrograph']}.")

    argv = [py, "-m", "benchmarks.crf_speed"] + (["--size", "128", "--repeats", "1"] if args.quick
                                                 else ["--repeats", "5"])
    ok, out, command = suite.run("crf", argv)
    if ok:
        size = 128 if args.quick else 512
        memory = False
        ours = ref = None
        for line in out.splitlines():
            if line.startswith("Peak memory"):
                memory = True
                continue
            if memory:
                m = re.match(r"^(crisp .+?)\s+(-?\d+)$", line)
                if m:
                    suite.check("crf", f"{m[1]}, {2 * size}² x 2 classes: peak memory above imports (MB)",
                                float(m[2]), "<=", 1024, " MB", command, shown=m[2])
                continue
            m = re.match(r"^((?:crisp|pydensecrf) .+?)\s+(\d+)\s+(nan|[\d.]+)\s*(.*)$", line)
            if not m:
                continue
            name, threads, seconds, note = m[1], int(m[2]), float(m[3]), m[4].strip()
            metric = f"{name}, {threads} thread(s), {size}² patch, 5 iterations: s"
            metric += f" ({note})" if note else ""
            basic = name.startswith("crisp") and "decoder" not in name and "backward" not in name
            if name == "crisp crf mean-field" and threads == 1:
                ours = seconds
            if name.startswith("pydensecrf"):
                ref = seconds
            if basic and threads == 1:
                suite.check("crf", metric, seconds, "<=", 0.5, " s", command)
            else:
                suite.add("crf", metric, "not installed" if seconds != seconds else seconds, command=command)
        if ours is not None and ref is not None and ref == ref:
            suite.check("crf", "crisp CRF mean-field / pydensecrf (same kernels, 1 thread)", ours / ref,
                        "<=", 2.0, "×", command, shown=f"{ours / ref:.2f}")
        elif ref is None or ref != ref:
            notes.append("pydensecrf2 is not installed (pip install 'crisp-em[bench]'): no reference "
                         "CRF time.")

    argv = [py, "-m", "benchmarks.picking_speed"]
    argv += ["--repeats", "1", "--size", "512"] if args.quick else []
    ok, out, command = suite.run("picking", argv)
    if ok:
        size = 512 if args.quick else 1024
        bounds = {"grid-nms": 0.1, "crocker-grier": 0.1, "contour": 0.3}
        for line in out.splitlines():
            t = line.split()
            if len(t) != 6 or t[0] not in bounds or _float(t[3]) is None:
                continue
            suite.check("picking", f"{t[0]}, d = {t[1]} px ({t[2]} particles, recall {t[5]}): "
                        f"s per {size}² map", float(t[3]), "<=", bounds[t[0]], " s", command,
                        shown=f"{float(t[3]):.3f}")

    micrograph = args.micrograph or _simulate_micrograph(suite, 1024 if args.quick else 4096, 1)
    if args.run is not None:
        run, network = args.run, f"the run {args.run}"
    else:
        from benchmarks.inference_speed import make_random_run

        run = speed / "random-cpu-run"
        if not Run(run).checkpoint_path().is_file():
            make_random_run("cpu", 4, run)
        network = "the `cpu` preset's network (U-Net ResNet-18, bin 4) with random weights (seed 0)"
    if micrograph is None:
        suite.skip("memory", "no micrograph")
    else:
        argv = [py, "-m", "benchmarks.memory_4k", str(run), str(micrograph), "--work", str(speed / "mem4k")]
        ok, out, command = suite.run("memory", argv)
        if ok:
            for line in out.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) != 2 or cells[0] in ("quantity", "---"):
                    continue
                if cells[0] == "peak RSS through segment + pick (GB)":
                    suite.check("memory", cells[0], _float(cells[1]), "<=", 4.0, " GB", command,
                                shown=cells[1], note="4096² micrograph")
                else:
                    suite.add("memory", cells[0], cells[1], command=command)
            suite.add("memory", "network", network)
    return suite.finish(notes)


# --------------------------------------------------------------------------------------------- real
def _real_epochs(args) -> int | None:
    """Training epochs of the ``real`` suite (None: the preset's; 1 with ``--quick``)."""
    return 1 if args.quick and args.epochs is None else args.epochs


def _real_data_argv(args, work: Path, methods: str) -> list[str]:
    """The ``real_data.py`` command of the ``real`` suite for one work folder."""
    argv = [sys.executable, "-m", "benchmarks.real_data", "--data", str(args.data), "--work", str(work),
            "--methods", methods]
    if _real_epochs(args):
        argv += ["--epochs", str(_real_epochs(args))]
    if args.disk_fraction is not None:
        argv += ["--disk-fraction", str(args.disk_fraction)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return argv


def _real_ensemble(suite: Suite, args, real: Path) -> None:
    """K - 1 more disk-label runs (training seeds 1 .. K-1) and ``real_ensemble.py`` on all K."""
    works = [real]
    for seed in range(1, args.ensemble):
        work = suite.folder(f"real-seed{seed}")
        argv = [*_real_data_argv(args, work, "disk"), "--train-seed", str(seed)]
        ok, _, _ = suite.run(f"real-seed{seed}", argv)
        if not ok:
            return
        works.append(work)
    argv = [sys.executable, "-m", "benchmarks.real_ensemble", "--data", str(args.data),
            "--work", *map(str, works), "--out", str(suite.folder("real-ensemble"))]
    ok, _, command = suite.run("real-ensemble", argv)
    if not ok:
        return
    for row in json.loads((suite.folder("real-ensemble") / "results.json").read_text())["rows"]:
        name = Path(row["maps"]).name if row["maps"].startswith("/") else row["maps"]
        suite.add("real-ensemble", f"{name}: picking P / R / AP (edge margin {row['border_fraction']:g} d)",
                  f"{row['pick_precision']:.3f} / {row['pick_recall']:.3f} / {row['pick_AP']:.3f}",
                  command=command)
        suite.check("real-ensemble", f"{name}: picking F1", row["pick_F1"], ">=", 0.90, command=command,
                    shown=f"{row['pick_F1']:.3f}")


def run_real(args) -> int:
    if not (args.data / "images").is_dir():
        print(f"real data not found at {args.data} (EMPIAR-10017 development set); nothing to do")
        return 0
    suite = Suite("real", args.work, args.quick)
    py = sys.executable
    real = suite.folder("real")
    methods = "disk" if args.quick and args.methods is None else (args.methods or "disk,threshold")
    ok, _, command = suite.run("real-data", _real_data_argv(args, real, methods))
    if ok:
        for row in json.loads((real / "results.json").read_text())["rows"]:
            m = row["method"]
            suite.add("real-data", f"{m} labels vs provided masks: IoU / F1 ({row['label_seconds']} s)",
                      f"{row['label_iou']:.3f} / {row['label_f1']:.3f}", command=command, data=row)
            if "pick_F1" not in row:
                continue
            suite.add("real-data", f"{m}: training s, test pixel IoU / F1",
                      f"{row['train_seconds']:.0f} s, {row['test_pixel_iou']:.3f} / "
                      f"{row['test_pixel_f1']:.3f}",
                      command=command)
            suite.add("real-data", f"{m}: picking P / R / AP ({row['finder']}, radius 54 px)",
                      f"{row['pick_precision']:.3f} / {row['pick_recall']:.3f} / {row['pick_AP']:.3f}",
                      command=command)
            suite.check("real-data", f"{m}: picking F1", row["pick_F1"], ">=", 0.90, command=command,
                        shown=f"{row['pick_F1']:.3f}")
    if "disk" in methods.split(",") and Run(real / "run-disk").is_finished:
        argv = [py, "-m", "benchmarks.picking_s1", "--work", str(real / "pick-disk"), "--data",
                str(real / "labels-disk"), "--run", str(real / "run-disk")]
        (real / "pick-disk").mkdir(parents=True, exist_ok=True)
        ok, _, command = suite.run("picking", argv)
        if ok:
            for row in json.loads((real / "pick-disk" / "picking_s1.json").read_text()):
                suite.add("picking", f"{row['finder']}: test box mAP / F1 at IoU 0.5 / radius F1 / s per map",
                          f"{row['test mAP']:.3f} / {row['F1@IoU.5']:.3f} / {row['F1 radius']:.3f} / "
                          f"{row['s / map']:.2f}", "radius F1 ≥ 0.93 (paper)", row["F1 radius"] >= 0.93,
                          command, data=row)
    if args.ensemble > 1 and "disk" in methods.split(",") and Run(real / "run-disk").is_finished:
        _real_ensemble(suite, args, real)
    argv = [py, "-m", "benchmarks.picking_real_masks", "--data", str(args.data)]
    ok, out, command = suite.run("expert-masks", argv)
    if ok:
        for line in out.splitlines():
            t = line.split()
            if len(t) < 9 or t[0] not in ("grid-nms", "crocker-grier", "contour") or _float(t[-1]) is None:
                continue
            mAP, ap50, p, r, f1, per_map = (float(v) for v in t[-7:-1])
            suite.add("expert-masks",
                      f"{t[0]}: test box mAP / AP50 / P / R / F1, s per map ({' '.join(t[1:-8])})",
                      f"{mAP:.3f} / {ap50:.3f} / {p:.3f} / {r:.3f} / {f1:.3f}, {per_map:.2f} s",
                      command=command)
    epochs = _real_epochs(args)
    notes = [f"EMPIAR-10017 development set at {args.data}; split 6 / 2 / 2 (seed 0); the `cpu` training "
             "preset" + (f", {epochs} epochs" if epochs else " (12 epochs)") + "."]
    return suite.finish(notes)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="suite", required=True)

    def common(p, name):
        p.add_argument("--work", type=Path, default=None,
                       help=f"work folder (default /tmp/crisp-suite-{name})")
        p.add_argument("--quick", action="store_true",
                       help="small sizes, 1 epoch: checks that the suite runs")

    p = sub.add_parser("s1", help="benchmark S1: segmentation, CRF, histograms, picking (hours)")
    common(p, "s1")
    p.add_argument("--epochs", type=int, default=None, help="S1 training epochs (default: the cpu preset's)")
    p.add_argument("--crf-epochs", type=int, default=None,
                   help="CRF fine-tuning epochs (default 50; quick: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for training")
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("speed", help="simulation, inference, CRF, picking speed; peak memory of a 4096² "
                       "micrograph")
    common(p, "speed")
    p.add_argument("--run", type=Path, default=None,
                   help="run for memory_4k (default: random-weight cpu network)")
    p.add_argument("--micrograph", type=Path, default=None, help="4096² micrograph for memory_4k "
                   "(default: one simulated with the paper preset)")
    p.add_argument("--cases", default=None, help="inference_speed.py --cases (PRESET:BIN,...)")
    p.add_argument("--threads", type=int, default=None,
                   help="inference_speed.py --threads (default: torch's default)")
    p = sub.add_parser("real", help="EMPIAR-10017: labels, training, pixel and picking metrics")
    common(p, "real")
    p.add_argument("--data", type=Path, default=REAL_DATA)
    p.add_argument("--methods", default=None, help="label methods (default disk,threshold; quick: disk)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the cpu preset's)")
    p.add_argument("--disk-fraction", type=float, default=None,
                   help="disk labels: disc radius / particle radius (real_data.py's default 1)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="K >= 2: K - 1 more disk runs with other training seeds, and their ensemble")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for training")
    p = sub.add_parser("evaluate-run", help="tune the picker on val, evaluate a run on test (a part of s1)")
    p.add_argument("run", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--subset", default="test")
    p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    INVOCATION[:] = sys.argv[1:] if argv is None else argv
    if args.suite == "evaluate-run":
        return evaluate_run_main(args)
    args.work = (args.work or Path(f"/tmp/crisp-suite-{args.suite}")).resolve()
    return {"s1": run_s1, "speed": run_speed, "real": run_real}[args.suite](args)


if __name__ == "__main__":
    raise SystemExit(main())
