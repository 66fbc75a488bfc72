"""Dask execution of batches: the ``--workers N`` and ``--scheduler ADDRESS`` of every per-micrograph verb.

:func:`crisp.batch.run_batch` skips the items already done and hands the others to :func:`completed`,
which runs one Dask task per item on

- a local cluster of ``workers`` processes (``LocalCluster(n_workers=N, threads_per_worker=1,
  processes=True)``), started for the batch and closed after it, or
- the workers of a running scheduler at ``scheduler`` (e.g. one that ``dask-jobqueue`` started on
  SLURM, PBS or SGE). The workers must see the input and output folders at the same paths; each task
  runs in the submitting process's working folder, so relative paths mean the same there.

Each task runs the batch's per-item code (the ``runner`` the batch hands over: staging in the output
folder, rename, record), so the folder ends up as after a serial run. The item function is pickled
once (cloudpickle) and unpickled once per worker process (:func:`cached_function`, a module-level
cache keyed by the batch), so a function that loads a network at its first item (``crisp segment``'s)
loads it once per worker. Tasks are submitted with ``retries``, and Dask reschedules the tasks of a
worker that dies.

Dask (``dask[distributed]``) is an optional dependency (``pip install 'crisp-em[cluster]'``); nothing
here imports it until a batch runs with workers or a scheduler.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from crisp.errors import CrispError

CONNECT_TIMEOUT_S = 30  # seconds to reach a --scheduler
_KEEP_FUNCTIONS = 2  # item functions (and the networks they loaded) kept per worker process
_FUNCTIONS: OrderedDict[str, Callable] = OrderedDict()
_EXECUTION: contextvars.ContextVar[tuple[int | None, str | None]] = contextvars.ContextVar(
    "crisp_execution", default=(None, None))


def check_execution(workers: int | None, scheduler: str | None) -> None:
    """Refuse a bad ``workers``/``scheduler`` pair (both given, fewer than 1 worker, an empty address)."""
    if workers is not None and scheduler is not None:
        raise CrispError("give --workers (a local Dask cluster) or --scheduler (an existing one), not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise CrispError(f"--workers must be a whole number of at least 1 (got {workers!r})")
    if scheduler is not None and not str(scheduler).strip():
        raise CrispError("--scheduler needs the address of a Dask scheduler, e.g. tcp://node01:8786")


@contextlib.contextmanager
def execution(workers: int | None = None, scheduler: str | None = None) -> Iterator[None]:
    """Run every :func:`crisp.batch.run_batch` in this block on Dask (unless given its own executor).

    The verbs' library functions (``segment_files``, ``pick_files``, ...) call ``run_batch``; this
    block is how a caller (the CLI's ``--workers``/``--scheduler``) spreads their items over processes
    without each function taking the options.

    Parameters
    ----------
    workers
        Number of worker processes of a local Dask cluster, started for each batch.
    scheduler
        Address of a running Dask scheduler (e.g. ``tcp://node01:8786``, from ``dask-jobqueue``).
        With neither, batches run in this process.
    """
    check_execution(workers, scheduler)
    token = _EXECUTION.set((workers, scheduler))
    try:
        yield
    finally:
        _EXECUTION.reset(token)


def current_execution() -> tuple[int | None, str | None]:
    """``(workers, scheduler)`` of the enclosing :func:`execution` block (``(None, None)``: none)."""
    return _EXECUTION.get()


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
def cached_function(token: str, payload: bytes) -> Callable:
    """The item function of batch ``token``, unpickled at the first of its items this process runs."""
    fn = _FUNCTIONS.get(token)
    if fn is None:
        import cloudpickle

        fn = cloudpickle.loads(payload)
        _FUNCTIONS[token] = fn
        while len(_FUNCTIONS) > _KEEP_FUNCTIONS:
            _FUNCTIONS.popitem(last=False)
    return fn


def portable_error(err: Exception) -> tuple:
    """An item's error in a form that survives the trip back to the submitting process."""
    if isinstance(err, CrispError):
        return ("crisp", err.reason, err.path)
    try:
        data = pickle.dumps(err)
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - an exception that does not pickle comes back as its message
        return ("message", f"{type(err).__name__}: {err}", None)
    return ("pickle", data, None)


def restore_error(portable: tuple | None, message: str) -> Exception:
    """The exception :func:`portable_error` carried (a :class:`CrispError` of ``message`` if none)."""
    kind, value, path = portable if portable else ("message", message, None)
    if kind == "crisp":
        return CrispError(value, path)
    if kind == "pickle":
        with contextlib.suppress(Exception):
            return pickle.loads(value)
    return CrispError(message)


def _task(item: Any, payload: bytes, token: str, runner: Callable, cwd: str) -> dict:
    """One Dask task: ``runner(item, fn, token)`` with the batch's item function ``fn``."""
    with contextlib.suppress(OSError):
        if os.getcwd() != cwd:
            os.chdir(cwd)  # relative paths of the work list mean what they meant to the submitter
    return runner(item, cached_function(token, payload), token)


def _identity(value: Any) -> Any:
    return value


# ------------------------------------------------------------------------------------------------
# in the submitting process
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` of a new local cluster of ``workers`` processes, or of ``scheduler``.

    The local cluster (one thread per worker process, its dashboard on a free port) is closed on leaving.
    """
    check_execution(workers, scheduler)
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
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def completed(items: Sequence[Any], fn: Callable, runner: Callable, token: str, *, workers: int | None,
              scheduler: str | None, name: str = "batch", retries: int = 2) -> Iterator[tuple[Any, dict]]:
    """Run ``runner(item, fn, token)`` for every item on Dask; yield ``(item, outcome)`` as they finish.

    ``outcome`` is what ``runner`` returned (a dictionary with ``status``), or, for a task that
    failed outright ``retries + 1`` times (e.g. its workers kept dying), ``{"status": "failed",
    "error": MESSAGE, "lost": True}``. Closing the generator early (``break``) cancels the others.

    Parameters
    ----------
    items
        Picklable work items (``item.name`` names the Dask task).
    fn
        The item function, picklable with cloudpickle; unpickled once per worker process.
    runner
        A picklable top-level function (or a partial of one) run in the task.
    token
        Unique key of this batch (names the tasks and the cache of ``fn`` on the workers).
    workers, scheduler
        A local cluster of ``workers`` processes, or the scheduler at this address.
    name
        Prefix of the task names (the verb).
    retries
        Further tries of a task that fails outright.
    """
    import cloudpickle

    try:
        payload = cloudpickle.dumps(fn)
    except Exception as err:  # noqa: BLE001 - any pickling failure is the same user-facing problem
        raise CrispError(f"`crisp {name}` cannot run on Dask workers: its item function does not pickle "
                         f"({type(err).__name__}: {err})") from None
    with dask_client(workers, scheduler) as client:
        from distributed import as_completed

        # the pickled function is one task's result: each worker fetches it once, and Dask recomputes
        # it from the graph if every worker holding it is gone
        function = client.submit(_identity, payload, key=f"crisp-{name}-function-{token}", pure=False)
        futures = client.map(_task, list(items), payload=function, token=token, runner=runner,
                             cwd=os.getcwd(), key=[f"crisp-{name}-{item.name}-{token}" for item in items],
                             pure=False, retries=retries)
        by_key = {future.key: item for future, item in zip(futures, items, strict=True)}
        try:
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as err:  # noqa: BLE001 - the task itself failed, e.g. its worker died
                    outcome = {"status": "failed", "lost": True, "error": f"{type(err).__name__}: {err} "
                               f"(the Dask task failed {retries + 1} times)"}
                yield by_key[future.key], outcome
        finally:
            client.cancel([*futures, function])
