"""Running a sweep: plan the points, compute what the store lacks, write the results.

The parent process expands the spec, looks every point up in the store, groups the missing
ones by design (a config on a board, so the resources of a design are estimated or built
once for all its workloads), prepares the workload contexts (trains the digits model once)
and hands the designs to workers: a local process pool by default, or a Dask distributed
cluster. Results are committed to the store as each design finishes; only the parent
writes to it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .report import build_rows, summary_text, write_outputs
from .spec import SweepSpec, load_spec
from .store import Store
from .worker import DesignResult, DesignTask, compute_design, prepare_contexts

__all__ = ["Progress", "SweepResult", "STORE_NAME", "run_sweep"]

STORE_NAME = "sweep.sqlite"
#: How long to try to reach a Dask scheduler.
CONNECT_TIMEOUT = "20s"


@dataclass
class SweepResult:
    rows: list[dict]
    files: list[str]
    out_dir: Path
    stats: dict
    summary: str

    @property
    def crashed(self) -> int:
        return self.stats["crashed"]


class Progress:
    """A one-line text progress bar on ``stream`` (standard error by default).

    On a terminal the line is redrawn in place; otherwise a line is printed at every tenth
    of the way and at the end, so logs stay short.
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, width: int = 30):
        self.total, self.width = total, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last_tenth = -1
        self._open = False

    def update(self, done: int, *, cached: int, invalid: int, failed: int) -> None:
        frac = done / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        elapsed = int(time.monotonic() - self.start)
        line = (f"sweep [{'#' * fill}{'.' * (self.width - fill)}] {done}/{self.total} points"
                f" ({cached} cached, {invalid} invalid, {failed} failed) "
                f"{elapsed // 60:02d}:{elapsed % 60:02d}")
        if self.tty:
            self.stream.write("\r" + line)
            self._open = True
        else:
            tenth = int(frac * 10)
            if tenth == self._last_tenth and done != self.total:
                return
            self._last_tenth = tenth
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


# -- executors ------------------------------------------------------------------------------

def _run_inline(tasks, contexts) -> Iterator[tuple[int, DesignResult]]:
    for i, task in enumerate(tasks):
        yield i, compute_design(task, contexts)


def _run_pool(tasks, contexts, workers: int) -> Iterator[tuple[int, DesignResult]]:
    import multiprocessing
    import pickle
    import tempfile
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from .worker import init_worker, pool_entry

    # The contexts (the digits training data, ~1 MB) go through a file, not the spawn pipe:
    # a worker that dies while starting (say, an import error) would otherwise leave the
    # parent blocked forever writing its start-up data.
    fd, path = tempfile.mkstemp(prefix="lowbit-sweep-", suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(contexts, f, protocol=pickle.HIGHEST_PROTOCOL)
    pool = None
    try:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(path,))
        futures = {pool.submit(pool_entry, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        os.unlink(path)


def _connect(address: str):
    """A Dask client for ``address``; an unreachable scheduler raises ``OSError``."""
    from distributed import Client

    return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)


def _run_dask(tasks, contexts, client) -> Iterator[tuple[int, DesignResult]]:
    from distributed import as_completed

    shared = client.scatter([contexts], broadcast=True)[0]
    futures = {client.submit(compute_design, task, shared, pure=False): i
               for i, task in enumerate(tasks)}
    try:
        for future in as_completed(futures, loop=client.loop):
            yield futures[future], future.result()
    finally:
        client.cancel(list(futures))


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# -- the sweep ------------------------------------------------------------------------------

def run_sweep(spec: SweepSpec | str | Path, out_dir: str | Path, *, workers: int | None = None,
              scheduler: str | None = None, progress: bool | TextIO = True,
              log: Callable[[str], None] = lambda s: print(s, flush=True)) -> SweepResult:
    """Run (or resume) ``spec`` with results in ``out_dir``; returns rows and statistics.

    ``workers``: local processes (default: the usable cores; 1 computes in this process).
    ``scheduler``: a Dask scheduler address; the points then run on that cluster.
    ``progress``: a progress bar on standard error (or on the given stream).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be a positive integer, not {workers!r}")
    workers = workers or default_workers()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points = spec.points()
    valid = [p for p in points if p.valid]
    with Store(out_dir / STORE_NAME) as store:
        store.begin_run(spec.source, len(points))
        results = store.get_points(p.key for p in valid)
        designs: dict[str, dict] = {}
        for p in valid:
            dk = p.design
            d = designs.setdefault(dk, {"config": p.config, "board": p.board, "points": []})
            if p.key not in results:
                d["points"].append((p.key, p.workload))
        resources = store.get_resources(designs)
        tasks, task_designs = [], []
        for dk, d in designs.items():
            if d["points"] or dk not in resources:
                tasks.append(DesignTask(
                    config=d["config"], board=d["board"], resources=spec.resources,
                    resources_cached=resources.get(dk), points=tuple(d["points"]),
                    mem_latency=spec.mem_latency, work_dir=str(out_dir / "builds")))
                task_designs.append(dk)
        missing = sum(len(t.points) for t in tasks)
        stats = {"points": len(points), "invalid": len(points) - len(valid),
                 "cached": len(valid) - missing, "computed": 0, "crashed": 0}
        where = ("" if not tasks else f" on Dask scheduler {scheduler}" if scheduler
                 else " in this process" if workers == 1 or len(tasks) <= 1
                 else f" on {min(workers, len(tasks))} local processes")
        log(f"lowbit sweep {spec.source}: {len(points)} points ({spec.n_configs} configs x "
            f"{len(spec.workloads)} workloads x {len(spec.boards)} boards), "
            f"{stats['invalid']} invalid, {stats['cached']} cached, {missing} to compute"
            f"{where}")

        client = _connect(scheduler) if scheduler and tasks else None
        bar = None
        if progress:
            bar = Progress(len(points), stream=None if progress is True else progress)
        done = stats["invalid"] + stats["cached"]
        failed = sum(1 for r in results.values() if r["status"] != "ok")
        crashes: dict[str, dict] = {}
        resource_errors: dict[str, str] = {}

        def tick():
            if bar:
                bar.update(done, cached=stats["cached"], invalid=stats["invalid"],
                           failed=failed)

        stream = None
        try:
            tick()
            if tasks:
                contexts = prepare_contexts({wl.name: wl for t in tasks
                                             for _, wl in t.points}.values())
                if client is not None:
                    stream = _run_dask(tasks, contexts, client)
                elif workers == 1 or len(tasks) <= 1:
                    stream = _run_inline(tasks, contexts)
                else:
                    stream = _run_pool(tasks, contexts, workers)
                for i, result in stream:
                    dk = task_designs[i]
                    keep = [(k, r) for k, r in result.points if r["status"] != "crash"]
                    for k, r in result.points:
                        failed += r["status"] != "ok" or result.resources is None
                        if r["status"] == "crash":
                            crashes[k] = r
                        results[k] = r
                    if result.resources is not None:
                        resources[dk] = result.resources
                    if result.resources_error:
                        resource_errors[dk] = result.resources_error
                    store.put_results(keep, (dk, result.resources)
                                      if result.computed_resources else None)
                    stats["computed"] += len(keep)
                    stats["crashed"] += len(result.points) - len(keep)
                    done += len(result.points)
                    tick()
        finally:
            if stream is not None:
                stream.close()
            if client is not None:
                client.close()
            if bar:
                bar.close()

    rows = build_rows(spec, points, results, resources, resource_errors, crashes)
    files = write_outputs(out_dir, spec, rows)
    summary = summary_text(spec, rows, stats=stats)
    return SweepResult(rows=rows, files=files, out_dir=out_dir, stats=stats, summary=summary)
