"""Independent CPU forward passes side by side, two at a time, each on half of torch's threads.

One image through a ViT-B/32 tower is 50 tokens: its GEMMs are small and each layer norm, softmax and activation
between them is a point where the intra-op threads wait for each other, so two threads on one tower keep the cores
half busy (95 GFLOPS of a 191 GFLOPS GEMM rate on 2 cores). Two towers at once, each on one thread, make 127 GFLOPS
(``bench/compute_rate.py``: ``classify_gflops``). So when several towers read the same images and none needs
another's output (classifying an upload with the pretrained model, the merges and every expert), they run here.

Two workers, each on half of torch's threads: one each on two cores; on a bigger machine a classification of two
towers still keeps every core, as one tower at a time did. They are started together, each sets its own intra-op
thread count, and the process-wide count a new thread starts with is put back at once (``torch.set_num_threads``
sets both the caller's count and that default); threads that already ran torch keep their own. On a GPU, or with one
thread, jobs run one after another in the caller.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_workers = 0
_pid = 0  # the process that started the pool: a forked child starts its own (the parent's threads are not in it)
_here = threading.local()


def _in_a_new_thread(call: Callable[[], T]) -> T:
    """``call()`` in a thread of its own (what a thread that has not run torch yet sees or sets)."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join()
    return result[0]


WORKERS = 2  # towers at once (more would split the threads of a 2-core Space no further)


def _started_pool() -> tuple[ThreadPoolExecutor | None, int]:
    """The process's pool of workers, started on first use (None on a single-threaded process)."""
    global _pool, _workers, _pid
    with _lock:
        if _pid != os.getpid():
            _pool, _workers, _pid = None, 0, os.getpid()
        if _pool is None and _workers == 0:
            default = _in_a_new_thread(torch.get_num_threads)
            _workers = WORKERS if default >= WORKERS else 1
            threads = max(1, default // WORKERS)
            if _workers > 1:
                ready = threading.Barrier(_workers + 1)

                def one_thread() -> None:
                    # torch sets a thread's count from the default on its first parallel op, unless it already
                    # asked (get_num_threads): without this the worker would go back to the restored default
                    torch.get_num_threads()
                    torch.set_num_threads(threads)
                    _here.worker = True
                    ready.wait()

                pool = ThreadPoolExecutor(max_workers=_workers, thread_name_prefix="side-by-side",
                                          initializer=one_thread)
                waits = [pool.submit(lambda: None) for _ in range(_workers)]  # starts every worker now
                ready.wait()
                _in_a_new_thread(lambda: torch.set_num_threads(default))  # the default for new threads, back
                for wait in waits:
                    wait.result()
                _pool = pool
        return _pool, _workers


def workers() -> int:
    """How many jobs :func:`run_side_by_side` runs at once on the CPU (:data:`WORKERS`, or 1 on one thread)."""
    return _started_pool()[1]


def run_side_by_side(jobs: Sequence[Callable[[], T]], device: torch.device | str = "cpu") -> list[T]:
    """Every job's result, in order; on the CPU the jobs run :func:`workers` at a time, each on its share of the
    threads.

    ``device``: where the jobs compute (not the CPU: one after another in the caller, as they would have run).
    An exception in a job is raised here after every job has ended.
    """
    if torch.device(device).type != "cpu" or len(jobs) < 2 or getattr(_here, "worker", False):
        return [job() for job in jobs]  # (a job's own jobs run in its thread: the pool never waits on itself)
    pool, _ = _started_pool()
    if pool is None:
        return [job() for job in jobs]
    grad = torch.is_grad_enabled()  # grad mode is per thread: the jobs run under the caller's

    def under_callers_mode(job: Callable[[], T]) -> T:
        with torch.set_grad_enabled(grad):
            return job()

    futures = [pool.submit(under_callers_mode, job) for job in jobs]
    wait(futures)  # every job ends before an error is raised (the first in order)
    return [f.result() for f in futures]
