"""Two sessions at once: nothing process-wide (open_clip's model registry, torch's random generator) races."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from tests.helpers import tiny_zoo
from wemoe.loading import load_zoo
from wemoe.methods import get_method
from wemoe.moe.layer import router_parameters


def _run_together(work: Callable[[int], object], n: int) -> tuple[list, list[BaseException]]:
    """Run ``work(i)`` for i < n in n threads released at the same moment; their results and errors."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as error:  # noqa: BLE001 - the test reports every failure
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_eight_threads_loading_the_pocket_zoo_at_once_all_succeed():
    zoos, errors = _run_together(lambda i: load_zoo("pocket"), 8)
    assert errors == []
    assert all(len(z.experts) == 8 for z in zoos)


def _routers(tower) -> list[torch.Tensor]:
    return [p.detach().clone() for p in router_parameters(tower)]


def test_two_wemoe_merges_at_once_give_bitwise_the_routers_of_a_lone_merge():
    zoo = tiny_zoo(n_experts=3, seed=4, layers=3)
    wemoe = get_method("wemoe")
    alone = {seed: _routers(wemoe(zoo, seed=seed, router_hidden_layers=2)) for seed in (0, 1)}

    def work(i: int):
        if i % 2:  # a neighbour drawing from torch's global generator all along
            for _ in range(200):
                torch.rand(64)
            return None
        return _routers(wemoe(zoo, seed=(i // 2) % 2, router_hidden_layers=2))

    results, errors = _run_together(work, 8)
    assert errors == []
    for i, routers in enumerate(results):
        if routers is not None:
            expected = alone[(i // 2) % 2]
            assert all(torch.equal(a, b) for a, b in zip(routers, expected, strict=True))


def test_a_wemoe_merge_leaves_the_global_generator_untouched():
    zoo = tiny_zoo(n_experts=2, seed=3)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    get_method("wemoe")(zoo, seed=7)
    assert torch.equal(torch.rand(4), expected)
