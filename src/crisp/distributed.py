"""Dask execution of a batch: the ``--workers N`` and ``--scheduler ADDRESS`` of every per-micrograph verb.

:func:`crisp.batch.run_batch` skips the items already done and hands the rest to :func:`run_items`,
which submits one Dask task per item to

- a local cluster of ``workers`` processes (``LocalCluster(n_workers=N, threads_per_worker=1,
  processes=True)``), started for the batch and closed after it, or
- the workers of a running scheduler at ``scheduler`` (e.g. one that ``dask-jobqueue`` started on
  SLURM, PBS or SGE; the workers must see the input and output folders at the same paths, and run
  the tasks in the submitting process's working folder, so relative paths mean the same there).

Each task runs the item through the same code as a serial run (:func:`crisp.batch._run_item`:
outputs staged in the output folder's ``.crisp-batch/tmp``, renamed, then recorded), so the folder
ends up byte for byte as after a serial run. The item function is pickled once (cloudpickle) and is
unpickled once per worker process (:func:`_item_function`, a module-level cache keyed by the batch),
so a function that loads a network at its first item (``crisp.predict``'s segmenter) loads it once
per worker. Tasks are submitted with ``retries=2``, and Dask reschedules the items of a worker that
dies; an item whose worker died while writing left only a temporary folder, which is removed.

Dask (``dask[distributed]``) is an optional dependency (``pip install 'crisp-em[cluster]'``); this
module is imported only when a batch runs with workers or a scheduler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from crisp.batch import (
    STATE_DIR,
    BatchResult,
    Item,
    _run_item,
    error_message,
    write_failed_record,
)
from crisp.errors import CrispError

RETRIES = 2  # further tries of an item whose task failed outright (not an item's own error)
CONNECT_TIMEOUT_S = 30  # seconds to reach a --scheduler
_KEEP_FUNCTIONS = 2  # item functions (and the networks they loaded) kept per worker process
_FUNCTIONS: OrderedDict[str, Callable] = OrderedDict()


def require_dask() -> None:
    """Raise a :class:`CrispError` that says how to install Dask when it is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as err:
        raise CrispError(f"--workers and --scheduler run on Dask, which is not installed ({err}); "
                         "install crisp-em[cluster] (pip install 'crisp-em[cluster]')") from None


# ------------------------------------------------------------------------------------------------
# on a worker
# ------------------------------------------------------------------------------------------------
def _item_function(key: str, payload: bytes) -> Callable:
    """The batch ``key``'s item function, unpickled at the first of its items this process runs."""
    fn = _FUNCTIONS.get(key)
    if fn is None:
        import cloudpickle

        fn = cloudpickle.loads(payload)
        _FUNCTIONS[key] = fn
        while len(_FUNCTIONS) > _KEEP_FUNCTIONS:
            _FUNCTIONS.popitem(last=False)
    return fn


def _worker_tmp_root(out: Path, key: str) -> Path:
    return out / STATE_DIR / "tmp" / f"{socket.gethostname()}--{os.getpid()}-{key}"


def _portable_error(err: Exception) -> tuple:
    """An item's error in a form that survives the trip back to the submitting process."""
    if isinstance(err, CrispError):
        return ("crisp", err.reason, err.path)
    try:
        data = pickle.dumps(err)
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - an exception that does not pickle comes back as its message
        return ("message", error_message(err), None)
    return ("pickle", data, None)


def _restore_error(portable: tuple | None, message: str) -> Exception:
    kind, value, path = portable if portable else ("message", message, None)
    if kind == "crisp":
        return CrispError(value, path)
    if kind == "pickle":
        with contextlib.suppress(Exception):
            return pickle.loads(value)
    return CrispError(message)


def run_remote(item: Item, payload: bytes, token: str, out: str, digest: str, cwd: str) -> dict[str, Any]:
    """One Dask task: run ``item`` as a serial run would and say how it went.

    Returns ``{"status": "done", "result": ...}`` or ``{"status": "failed", "error": MESSAGE,
    "exception": ...}``; an item's own error is recorded and returned, not raised, so Dask does
    not retry it (its retries are for tasks that fail outright).
    """
    with contextlib.suppress(OSError):
        if os.getcwd() != cwd:
            os.chdir(cwd)  # relative paths of the work list mean what they meant to the submitter
    fn = _item_function(token, payload)
    out_dir = Path(out)
    result = BatchResult(out_dir=out_dir, verb="", names=[item.name])
    error = _run_item(out_dir, item, fn, _worker_tmp_root(out_dir, token), digest, result)
    if error is None:
        return {"status": "done", "result": result.records[item.name]}
    return {"status": "failed", "error": result.failed[item.name], "exception": _portable_error(error)}


def _identity(value: Any) -> Any:
    return value


# ------------------------------------------------------------------------------------------------
# in the submitting process
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` of a new local cluster of ``workers`` processes, or of ``scheduler``.

    The local cluster (one thread per worker process, no dashboard) is closed on leaving.
    """
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise CrispError(f"cannot reach the Dask scheduler at {scheduler} ({type(err).__name__}: {err})"
                             ) from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def run_items(out: Path, todo: Sequence[Item], fn: Callable, digest: str, result: BatchResult, *,
              keep_going: bool, workers: int | None, scheduler: str | None, progress: bool, desc: str,
              unit: str, total: int) -> None:
    """Run ``todo`` on Dask; fill ``result`` as :func:`crisp.batch.run_batch` does in-process.

    Parameters
    ----------
    out
        The batch's output folder (manifest written, stale temporaries removed).
    todo
        Items not yet done.
    fn
        The item function (picklable with cloudpickle).
    digest
        Hash of the batch's settings (written into each record).
    result
        Filled with what was done and what failed, in work-list order.
    keep_going
        Go on after a failed item (default: cancel the rest and raise its error).
    workers, scheduler
        A local cluster of ``workers`` processes, or the scheduler at this address.
    progress, desc, unit, total
        The progress bar (``total`` counts the items skipped as done).
    """
    import cloudpickle
    from distributed import as_completed
    from tqdm.auto import tqdm

    try:
        payload = cloudpickle.dumps(fn)
    except Exception as err:  # noqa: BLE001 - any pickling failure is the same user-facing problem
        raise CrispError(f"`crisp {desc}` cannot run on Dask workers: its item function does not pickle "
                         f"({type(err).__name__}: {err})") from None
    key = uuid.uuid4().hex[:12]
    order = {item.name: i for i, item in enumerate(todo)}
    stop: Exception | None = None
    finished = False
    with dask_client(workers, scheduler) as client:
        # the pickled function is one task's result: every worker fetches it once, and Dask recomputes
        # it from the graph if every worker holding it is gone
        function = client.submit(_identity, payload, key=f"crisp-{desc}-function-{key}", pure=False)
        futures = client.map(run_remote, list(todo), payload=function, key=[
            f"crisp-{desc}-{item.name}-{key}" for item in todo], token=key, out=str(out), digest=digest,
            cwd=os.getcwd(), pure=False, retries=RETRIES)
        items = {future.key: item for future, item in zip(futures, todo, strict=True)}
        bar = tqdm(total=total, initial=total - len(todo), desc=desc, unit=unit, disable=not progress,
                   mininterval=1.0)
        try:
            for future in as_completed(futures):
                item = items[future.key]
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - the task failed outright (e.g. its worker died too often)
                    message = f"{error_message(err)} (the Dask task failed {RETRIES + 1} times)"
                    write_failed_record(out, item.name, digest, message)
                    outcome = {"status": "failed", "error": message, "exception": None}
                bar.update()
                if outcome["status"] == "done":
                    result.done.append(item.name)
                    result.records[item.name] = outcome["result"]
                    continue
                result.failed[item.name] = outcome["error"]
                if not keep_going:
                    stop = _restore_error(outcome.get("exception"), outcome["error"])
                    break
            finished = stop is None
        finally:
            bar.close()
            client.cancel(futures)
            client.cancel([function])
    result.done.sort(key=order.__getitem__)
    result.failed = dict(sorted(result.failed.items(), key=lambda kv: order[kv[0]]))
    _remove_worker_temporaries(out, key, everything=finished)
    if stop is not None:
        raise stop


def _remove_worker_temporaries(out: Path, key: str, everything: bool) -> None:
    """Remove the workers' temporary folders of batch ``key`` (only the empty ones unless
    ``everything``: after an abort, tasks of a remote scheduler may still be writing)."""
    for folder in (out / STATE_DIR / "tmp").glob(f"*-{key}"):
        if everything:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                folder.rmdir()
    with contextlib.suppress(OSError):
        (out / STATE_DIR / "tmp").rmdir()
