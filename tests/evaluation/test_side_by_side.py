"""Independent forward passes side by side: the same results as one after another, one thread per worker, the
process's default for new threads untouched, errors and grad mode carried back, no deadlock when a job nests."""

import threading

import pytest
import torch

from wemoe.evaluation import side_by_side
from wemoe.evaluation.side_by_side import run_side_by_side


def _in_a_new_thread(call):
    result = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join()
    return result[0]


@pytest.fixture()
def two_threads():
    """Torch at two threads for the test (CI has two cores; a machine with one would run the jobs in the caller)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    if side_by_side.workers() < 2:
        pytest.skip("the pool started on a single-threaded process in this session")
    yield
    torch.set_num_threads(before)


def test_results_equal_one_after_another_and_in_order(two_threads):
    generator = torch.Generator().manual_seed(0)
    towers = [torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 32))
              for _ in range(5)]
    images = torch.randn(3, 64, generator=generator)
    with torch.no_grad():
        expected = [tower(images) for tower in towers]
        got = run_side_by_side([lambda tower=tower: tower(images) for tower in towers])
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_workers_run_on_one_thread_and_new_threads_keep_the_default(two_threads):
    barrier = threading.Barrier(2)  # both jobs at once: each on its own worker

    def threads_here():
        barrier.wait(timeout=10)
        return torch.get_num_threads(), threading.current_thread().name

    got = run_side_by_side([threads_here, threads_here])
    assert [n for n, _ in got] == [1, 1]
    assert len({name for _, name in got}) == 2
    assert _in_a_new_thread(torch.get_num_threads) == 2  # a thread started later (a server's worker) is not slowed
    assert torch.get_num_threads() == 2


def test_an_error_in_a_job_is_raised_to_the_caller_after_every_job_ended(two_threads):
    ended = []

    def slow():
        threading.Event().wait(0.2)
        ended.append(True)

    def fails():
        raise ValueError("no such tower")

    with pytest.raises(ValueError, match="no such tower"):
        run_side_by_side([fails, slow])
    assert ended == [True]


def test_jobs_run_under_the_callers_grad_mode_and_may_nest(two_threads):
    with torch.no_grad():
        assert run_side_by_side([torch.is_grad_enabled, torch.is_grad_enabled]) == [False, False]
    assert run_side_by_side([torch.is_grad_enabled, torch.is_grad_enabled]) == [True, True]
    inner = [lambda: run_side_by_side([lambda: 1, lambda: 2])] * 4  # more nested jobs than workers: no deadlock
    assert run_side_by_side(inner) == [[1, 2]] * 4


def test_each_worker_takes_half_of_the_threads(monkeypatch):
    """On a bigger machine two towers at once still use every core (here: a process whose default is 4 threads)."""
    before = torch.get_num_threads()
    monkeypatch.setattr(side_by_side, "_pool", None)
    monkeypatch.setattr(side_by_side, "_workers", 0)
    torch.set_num_threads(4)
    try:
        barrier = threading.Barrier(2)

        def threads_here():
            barrier.wait(timeout=10)
            return torch.get_num_threads()

        assert side_by_side.workers() == 2
        assert run_side_by_side([threads_here, threads_here]) == [2, 2]
        assert _in_a_new_thread(torch.get_num_threads) == 4
    finally:
        side_by_side._pool.shutdown()
        torch.set_num_threads(before)


def test_off_the_cpu_the_jobs_run_in_the_caller():
    caller = threading.current_thread().name
    assert run_side_by_side([lambda: threading.current_thread().name] * 2, device="meta") == [caller, caller]


def test_a_forked_child_starts_its_own_workers(two_threads):
    import multiprocessing

    run_side_by_side([lambda: 1, lambda: 2])  # the parent's pool is started
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:  # the child inherits the pool object but none of its threads
        assert pool.apply_async(_two_jobs).get(timeout=30) == [1, 2]


def _two_jobs():
    return run_side_by_side([lambda: 1, lambda: 2])
