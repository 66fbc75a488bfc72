"""One resumable batch engine for every per-micrograph verb.

A batch is a list of independent :class:`Item` (usually one per micrograph), a function applied to
each item, and one output folder. The folder records what was done in a manifest, so a rerun

- skips every item already done with the same settings and unchanged inputs,
- refuses, with the name of each differing setting, to mix outputs of other settings (unless
  ``overwrite``: then everything is recomputed),
- redoes an item whose inputs changed (size or modification time) or whose outputs are missing.

Layout of an output folder ``OUT``::

    OUT/crisp-batch.json          the manifest: verb, settings, their hash, crisp version, counts
    OUT/.crisp-batch/items/N.json one record per item: status, input fingerprints, output sizes,
                                  what the item's function returned, seconds, or the error
    OUT/.crisp-batch/tmp/TOKEN/   temporary files of a running process (removed when it ends;
                                  a killed process's folder is removed by the next run)

Outputs are written by the item's function into temporary paths handed out by :class:`Staging`;
only when the function returns are they renamed onto their final names, and only then is the
item's record written. A process killed at any point therefore leaves no half-written output under
a final name, and the rerun redoes exactly the items without a record. Each item's record is its
own file, so shards of one work list (:func:`select_shard`) can run at the same time, in any order,
into the same folder.

The same work list can also be spread over processes or machines with Dask (``workers`` or
``scheduler``, or the :func:`crisp.distributed.execution` block that the CLI's ``--workers`` and
``--scheduler`` open): this process skips what is done and submits every other item as a Dask task
that runs the same per-item code (:mod:`crisp.distributed`), so the folder ends up as after a serial
run. Without either, everything
runs in this process and Dask is not imported.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crisp.distributed import check_execution, current_execution, execution  # noqa: F401 - no dask import
from crisp.errors import CrispError

MANIFEST = "crisp-batch.json"
STATE_DIR = ".crisp-batch"
_STALE_FOREIGN_TMP_S = 24 * 3600.0  # temporary folders of other hosts are removed after a day


@dataclass(frozen=True)
class Item:
    """One unit of work of a batch.

    Parameters
    ----------
    name
        Unique key of the item in its batch (a micrograph's stem); also the record's file name.
    inputs
        Files the item reads; their size and modification time are recorded, and a changed input
        makes a rerun redo the item.
    outputs
        Paths, relative to the output folder, that the item writes (all of them, every time).
    data
        Anything else the item's function needs (not recorded).
    """

    name: str
    inputs: tuple[Path, ...] = ()
    outputs: tuple[str, ...] = ()
    data: Any = None


class Staging:
    """Temporary paths for one item's outputs; :func:`run_batch` renames them when the item succeeds."""

    def __init__(self, out_dir: Path, tmp_dir: Path, item: Item) -> None:
        self.out_dir = out_dir
        self._tmp_dir = tmp_dir
        self._item = item
        self.staged: dict[str, Path] = {}

    def path(self, output: str) -> Path:
        """Temporary path for ``output`` (one of the item's outputs), with the same suffix.

        Libraries that choose a format by the file's extension (mrcfile, starfile, matplotlib)
        therefore write the right format.
        """
        if output not in self._item.outputs:
            raise ValueError(f"{output!r} is not an output of item {self._item.name!r}: {self._item.outputs}")
        if output not in self.staged:
            suffix = "".join(Path(output).suffixes[-1:])
            self.staged[output] = self._tmp_dir / f"{len(self.staged):04d}{suffix}"
        return self.staged[output]

    def final(self, output: str) -> Path:
        """The final path of ``output`` (read-only use: e.g. to name it in a record)."""
        return self.out_dir / output


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    ``records`` maps every item name of the work list (done now or before) to the dictionary its
    function returned; ``failed`` maps names to their error messages.
    """

    out_dir: Path
    verb: str
    names: list[str]
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)

    def raise_failures(self) -> None:
        """Raise one :class:`CrispError` that lists the failed items, if any."""
        if self.failed:
            shown = "; ".join(f"{n}: {m}" for n, m in list(self.failed.items())[:5])
            more = " ..." if len(self.failed) > 5 else ""
            raise CrispError(f"{len(self.failed)} of {len(self.names)} item(s) failed ({shown}{more}); "
                             "the others are done, a rerun retries the failed ones", self.out_dir)


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    """JSON text with sorted keys, no whitespace; paths and tuples as strings and lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def settings_hash(settings: dict) -> str:
    """SHA-256 (hex, first 16 digits) of the settings' canonical JSON."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


def fingerprint(path: str | os.PathLike[str]) -> dict[str, int]:
    """Size in bytes and modification time in ns of a file."""
    st = os.stat(path)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``; None for None."""
    if text is None:
        return None
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise CrispError(f"--shard must look like I/N, e.g. 2/8 (got {text!r})") from None
    if not 1 <= index <= count:
        raise CrispError(f"--shard I/N needs 1 <= I <= N (got {text!r})")
    return index, count


def select_shard(items: Sequence[Item], shard: tuple[int, int] | None) -> list[Item]:
    """The deterministic ``I``-th of ``N`` shares of ``items`` (every N-th item by sorted name)."""
    if shard is None:
        return list(items)
    index, count = shard
    ordered = sorted(items, key=lambda item: item.name)
    return ordered[index - 1::count]


def _write_json(path: Path, data: dict, tmp_dir: Path | None = None) -> None:
    """Write ``data`` as JSON atomically: through a hidden temporary beside ``path``, or through
    ``tmp_dir`` (a process's own temporary folder, removed with it when the process is killed)."""
    from crisp.atomic import write_text_atomic

    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    if tmp_dir is None:
        write_text_atomic(path, text)
        return
    tmp = tmp_dir / f"record-{uuid.uuid4().hex[:8]}.json"
    tmp.write_text(text, encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _input_key(path: str | os.PathLike[str]) -> str:
    return str(Path(path).resolve())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _differences(before: dict, after: dict) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys
            if canonical_json(before.get(k)) != canonical_json(after.get(k))]


# ------------------------------------------------------------------------------------------------
# the output folder
# ------------------------------------------------------------------------------------------------
def check_output_folder(out_dir: Path, items: Sequence[Item],
                        input_dirs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse an output folder that is a file, not writable, an input folder, or holds an input.

    No verb writes into, or over, its own inputs: the output folder may not be a folder the inputs
    were listed from, nor the folder of any input file.
    """
    from crisp.config import check_output

    check_output(out_dir, "folder")
    resolved = out_dir.resolve()
    for folder in input_dirs:
        if Path(folder).resolve() == resolved:
            raise CrispError("the output folder is an input folder; choose another output folder "
                             "(no verb writes into its own inputs)", out_dir)
    inputs = {Path(p).resolve() for item in items for p in item.inputs}
    if any(p.parent == resolved for p in inputs):
        raise CrispError("the output folder holds input files; choose another output folder "
                         "(no verb writes into its own inputs)", out_dir)
    for item in items:
        for output in item.outputs:
            if (resolved / output).resolve() in inputs:
                raise CrispError(f"output {output} would overwrite an input file", out_dir)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Remove temporary folders of processes that died, and hidden ``.NAME.part.*`` files."""
    tmp_root = out_dir / STATE_DIR / "tmp"
    host = socket.gethostname()
    if tmp_root.is_dir():
        for entry in tmp_root.iterdir():
            owner_host, _, rest = entry.name.rpartition("--")
            pid_text = rest.split("-")[0]
            mine = owner_host == host and pid_text.isdigit()
            if mine and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
                continue
            if not mine:
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime < _STALE_FOREIGN_TMP_S:
                        continue
            shutil.rmtree(entry, ignore_errors=True)
    for entry in out_dir.rglob(".*.part*"):
        if entry.is_file() and STATE_DIR not in entry.parts:
            with contextlib.suppress(OSError):
                entry.unlink()


def _open_manifest(out_dir: Path, verb: str, settings: dict, items: Sequence[Item], work: Sequence[Item],
                   overwrite: bool) -> dict:
    """Read or create the manifest; refuse other verbs or settings unless ``overwrite``.

    ``items`` is the whole work list, ``work`` the part this process does (its shard).
    """
    from crisp import __version__

    path = out_dir / MANIFEST
    digest = settings_hash(settings)
    manifest = _read_json(path) if path.exists() else None
    if path.exists() and manifest is None:
        raise CrispError(f"unreadable batch manifest {MANIFEST}; delete it or choose another folder", out_dir)
    if manifest is not None and manifest.get("verb") != verb:
        raise CrispError(f"holds the output of `crisp {manifest.get('verb')}`, not `crisp {verb}`; "
                         "choose another output folder", out_dir)
    if manifest is not None and manifest.get("settings_hash") != digest and not overwrite:
        raise _other_settings(out_dir, verb, manifest, settings)
    if manifest is None and not overwrite:
        clash = [o for item in items for o in item.outputs if (out_dir / o).exists()]
        if clash:
            # another shard may have started meanwhile: it writes the manifest before any output
            manifest = _read_json(path)
            if manifest is None or manifest.get("verb") != verb:
                raise CrispError(f"holds files that crisp did not record ({clash[0]}, ...: no {MANIFEST}); "
                                 "use --overwrite to replace them, or choose another output folder", out_dir)
            if manifest.get("settings_hash") != digest:
                raise _other_settings(out_dir, verb, manifest, settings)
    if overwrite:
        # recompute this work list; drop every output of other settings, but not the outputs that
        # other items (e.g. another shard's) made with these settings
        _forget_items(out_dir, {item.name for item in work}, digest)
    if manifest is None or manifest.get("settings_hash") != digest:
        manifest = {"verb": verb, "settings": json.loads(canonical_json(settings)), "settings_hash": digest,
                    "crisp_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_json(path, manifest)
    return manifest


def _other_settings(out_dir: Path, verb: str, manifest: dict, settings: dict) -> CrispError:
    diffs = "; ".join(_differences(manifest.get("settings") or {}, settings))
    return CrispError(f"holds outputs of `crisp {verb}` made with other settings ({diffs}); "
                      "use --overwrite to recompute them, or choose another output folder", out_dir)


def _forget_items(out_dir: Path, names: set[str], digest: str) -> None:
    """Delete the records, and the outputs they list, of ``names`` and of any other settings."""
    records = out_dir / STATE_DIR / "items"
    if not records.is_dir():
        return
    for record_path in records.glob("*.json"):
        record = _read_json(record_path) or {}
        if record_path.stem not in names and record.get("settings_hash") == digest:
            continue
        for output in record.get("outputs", {}):
            with contextlib.suppress(OSError):
                (out_dir / output).unlink()
        record_path.unlink()


def _record_path(out_dir: Path, name: str) -> Path:
    return out_dir / STATE_DIR / "items" / f"{name}.json"


def _is_done(out_dir: Path, item: Item, digest: str) -> dict | None:
    """The item's record when it is done with these settings and unchanged inputs and outputs."""
    record = _read_json(_record_path(out_dir, item.name))
    if not record or record.get("status") != "done" or record.get("settings_hash") != digest:
        return None
    try:
        if any(fingerprint(p) != record["inputs"].get(_input_key(p)) for p in item.inputs):
            return None
        if set(record["outputs"]) != set(item.outputs):
            return None
        if any(fingerprint(out_dir / o)["size"] != size for o, size in record["outputs"].items()):
            return None
    except (OSError, KeyError, AttributeError):
        return None
    return record


# ------------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------------
def run_batch(verb: str, items: Sequence[Item], fn: Callable[[Item, Staging], dict | None],
              out_dir: str | os.PathLike[str], settings: dict, *, overwrite: bool = False,
              keep_going: bool = False, progress: bool = True, shard: tuple[int, int] | None = None,
              input_dirs: Iterable[str | os.PathLike[str]] = (), unit: str = "micrograph",
              workers: int | None = None, scheduler: str | None = None) -> BatchResult:
    """Apply ``fn`` to every item not yet done and record each result in ``out_dir``.

    Parameters
    ----------
    verb
        Name of the verb (``segment``, ``pick``, ...); a folder holds the outputs of one verb.
    items
        The work list; names must be unique.
    fn
        ``fn(item, staging)`` writes each of ``item.outputs`` to ``staging.path(output)`` and returns
        a JSON-serialisable dictionary (or None) that is kept in the item's record and handed back
        in :attr:`BatchResult.records`.
    out_dir
        The output folder (created).
    settings
        Every setting that decides the outputs (JSON-serialisable); a rerun with other settings is
        refused unless ``overwrite``.
    overwrite
        Recompute every item of this work list (of this shard), and delete every output that other
        settings made in the folder; outputs of other items made with these settings are kept.
    keep_going
        Record a failing item and go on with the others (default: stop at the first failure).
    progress
        Show a progress bar.
    shard
        ``(I, N)``: do only the I-th of N deterministic shares of the work list (:func:`select_shard`).
    input_dirs
        Folders the inputs were listed from: the output folder may not be one of them.
    unit
        Unit shown by the progress bar.
    workers
        Run the items not yet done on a local Dask cluster of this many worker processes
        (:mod:`crisp.distributed`; needs ``crisp-em[cluster]``).
    scheduler
        Run them on the workers of the Dask scheduler at this address instead (the workers must see
        the input and output folders at the same paths). With neither ``workers`` nor ``scheduler``,
        those of the enclosing :func:`crisp.distributed.execution` block; with none, everything runs
        in this process.
        ``fn`` must then be picklable (cloudpickle); it is unpickled once per worker process and
        reused for every item there, so it may load a network once, at its first item.

    Returns
    -------
    BatchResult
        ``records`` holds the record of every item of this (shard's) work list that is done.

    Raises
    ------
    CrispError
        A bad output folder, other settings without ``overwrite``, duplicate item names, bad
        ``workers``/``scheduler`` or Dask not installed, or the first failing item's error (without
        ``keep_going``).
    """
    from tqdm.auto import tqdm

    if workers is None and scheduler is None:
        workers, scheduler = current_execution()
    check_execution(workers, scheduler)
    distributed = workers is not None or scheduler is not None
    if distributed:
        from crisp.distributed import require_dask

        require_dask()  # before the output folder is touched
    out = Path(out_dir)
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise CrispError(f"two inputs share the name {dupes[0]!r}; names must be unique in one output folder")
    check_output_folder(out, items, input_dirs)
    work = select_shard(items, shard)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    manifest = _open_manifest(out, verb, settings, items, work, overwrite)
    digest = manifest["settings_hash"]
    result = BatchResult(out_dir=out, verb=verb, names=[item.name for item in work])
    tmp_root = out / STATE_DIR / "tmp" / f"{socket.gethostname()}--{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if distributed:
            _run_distributed(out, work, fn, digest, result, keep_going=keep_going, workers=workers,
                             scheduler=scheduler, progress=progress, desc=verb, unit=unit)
        else:
            for item in tqdm(work, desc=verb, unit=unit, disable=not progress, mininterval=1.0):
                record = _is_done(out, item, digest)
                if record is not None:
                    result.skipped.append(item.name)
                    result.records[item.name] = record.get("result") or {}
                    continue
                error = _run_item(out, item, fn, tmp_root, digest, result)
                if error is not None and not keep_going:
                    raise error
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            tmp_root.parent.rmdir()
    _update_counts(out, manifest)
    return result


def _run_distributed(out: Path, work: Sequence[Item], fn: Callable, digest: str, result: BatchResult, *,
                     keep_going: bool, workers: int | None, scheduler: str | None, progress: bool, desc: str,
                     unit: str) -> None:
    """Skip the items done, here; run the others as Dask tasks (no cluster when none is left)."""
    from tqdm.auto import tqdm

    from crisp.distributed import completed, restore_error

    todo = []
    for item in work:
        record = _is_done(out, item, digest)
        if record is None:
            todo.append(item)
        else:
            result.skipped.append(item.name)
            result.records[item.name] = record.get("result") or {}
    if not todo:
        return
    token, order, stop = uuid.uuid4().hex[:12], {item.name: i for i, item in enumerate(todo)}, None
    runner = functools.partial(_run_remote, str(out), digest)
    with (tqdm(total=len(work), initial=len(work) - len(todo), desc=desc, unit=unit, disable=not progress,
               mininterval=1.0) as bar,
          contextlib.closing(completed(todo, fn, runner, token, workers=workers, scheduler=scheduler,
                                       name=desc)) as outcomes):
        for item, outcome in outcomes:
            bar.update()
            if outcome["status"] == "done":
                result.done.append(item.name)
                result.records[item.name] = outcome["result"]
                continue
            if outcome.get("lost"):  # no worker lived to record it
                _write_json(_record_path(out, item.name), {"name": item.name, "status": "failed",
                                                          "settings_hash": digest, "error": outcome["error"]})
            result.failed[item.name] = outcome["error"]
            if not keep_going:
                stop = restore_error(outcome.get("exception"), outcome["error"])
                break
    result.done.sort(key=order.__getitem__)
    result.failed = dict(sorted(result.failed.items(), key=lambda kv: order[kv[0]]))
    for folder in (out / STATE_DIR / "tmp").glob(f"*-{token}"):  # the workers' temporary folders
        if stop is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:  # tasks of a remote scheduler may still be writing: leave them to the next run
            with contextlib.suppress(OSError):
                folder.rmdir()
    if stop is not None:
        raise stop


def _run_remote(out: str, digest: str, item: Item, fn: Callable, token: str) -> dict:
    """One item on a Dask worker (:func:`crisp.distributed.completed`), in its own temporary folder."""
    from crisp.distributed import portable_error

    record = _is_done(Path(out), item, digest)  # a task Dask redoes because its worker died after it
    if record is not None:
        return {"status": "done", "result": record.get("result") or {}}
    result = BatchResult(out_dir=Path(out), verb="", names=[item.name])
    tmp_root = Path(out) / STATE_DIR / "tmp" / f"{socket.gethostname()}--{os.getpid()}-{token}"
    error = _run_item(Path(out), item, fn, tmp_root, digest, result)
    if error is None:
        return {"status": "done", "result": result.records[item.name]}
    return {"status": "failed", "error": result.failed[item.name], "exception": portable_error(error)}


def _run_item(out: Path, item: Item, fn: Callable, tmp_root: Path, digest: str,
              result: BatchResult) -> Exception | None:
    """Run one item in ``tmp_root``, rename its outputs, write its record; the error if it failed.

    A failure is recorded (in the record and ``result.failed``) and returned, not raised: the caller
    decides whether to stop. Every executor (this process, a Dask worker) runs items through here.
    """
    tmp_dir = tmp_root / uuid.uuid4().hex[:8]
    tmp_dir.mkdir(parents=True)
    staging = Staging(out, tmp_dir, item)
    started = time.perf_counter()
    record_path = _record_path(out, item.name)
    try:
        inputs = {_input_key(p): fingerprint(p) for p in item.inputs}
        returned = fn(item, staging) or {}
        missing = [o for o in item.outputs if o not in staging.staged or not staging.staged[o].is_file()]
        if missing:
            raise RuntimeError(f"item {item.name!r} did not write {missing}")
        with contextlib.suppress(FileNotFoundError):
            record_path.unlink()  # a crash between the renames below leaves no stale "done" record
        sizes = {}
        for output, tmp in staging.staged.items():
            final = out / output
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            sizes[output] = fingerprint(final)["size"]
        record = {"name": item.name, "status": "done", "settings_hash": digest, "inputs": inputs,
                  "outputs": sizes, "result": json.loads(canonical_json(returned)),
                  "seconds": round(time.perf_counter() - started, 3)}
        _write_json(record_path, record, tmp_dir)  # a kill here leaves no temporary among the records
        result.done.append(item.name)
        result.records[item.name] = record["result"]
        return None
    except Exception as err:  # noqa: BLE001 - recorded, then re-raised by the caller unless keep_going
        message = str(err) if isinstance(err, CrispError) else f"{type(err).__name__}: {err}"
        _write_json(record_path, {"name": item.name, "status": "failed", "settings_hash": digest,
                                  "error": message}, tmp_dir)
        result.failed[item.name] = message
        return err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _update_counts(out: Path, manifest: dict) -> None:
    """Rewrite the manifest's counts from the item records (informational; records are the truth)."""
    records = [_read_json(p) or {} for p in sorted((out / STATE_DIR / "items").glob("*.json"))]
    current = [r for r in records if r.get("settings_hash") == manifest["settings_hash"]]
    counts = {"done": sum(r.get("status") == "done" for r in current),
              "failed": sum(r.get("status") == "failed" for r in current)}
    if manifest.get("counts") != counts:
        _write_json(out / MANIFEST, {**manifest, "counts": counts,
                                     "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def read_records(out_dir: str | os.PathLike[str]) -> dict[str, dict]:
    """Name -> record of every item recorded in ``out_dir`` under its current settings."""
    out = Path(out_dir)
    manifest = _read_json(out / MANIFEST)
    if manifest is None:
        return {}
    found = {}
    for path in sorted((out / STATE_DIR / "items").glob("*.json")):
        record = _read_json(path)
        if record and record.get("settings_hash") == manifest.get("settings_hash"):
            found[record.get("name", path.stem)] = record
    return found
