"""The adaptation diagnostics (research.pocket.diagnose) against finite differences and the task-arithmetic model."""

from __future__ import annotations

import torch

import wemoe  # noqa: F401  (before open_clip)
from research.pocket import diagnose
from tests.helpers import tiny_zoo
from wemoe.methods import get_method
from wemoe.moe.layer import WEMoEConfig, upscale_to_wemoe
from wemoe.moe.routing_hooks import force_routing
from wemoe.tasks.classify import entropy, logits_from_features


def _setup(lam: float = 0.3):
    zoo = tiny_zoo(n_experts=3, noise=0.05)
    generator = torch.Generator().manual_seed(0)
    data = {t: (torch.randn(8, 3, 32, 32, generator=generator), torch.randint(4, (8,), generator=generator))
            for t in zoo.task_names}
    heads = {t: torch.nn.functional.normalize(torch.randn(4, 32, generator=generator), dim=-1) * 14.3
             for t in zoo.task_names}
    return zoo, upscale_to_wemoe(zoo, WEMoEConfig(lambda_=lam)), data, heads


def test_entropy_gradients_match_finite_differences():
    zoo, tower, data, heads = _setup()
    grads = diagnose.entropy_gradients(tower, data, heads, 0.3)
    eps = 1e-3
    for t, task in enumerate(zoo.task_names):
        for s in range(len(zoo.task_names)):
            values = []
            for sign in (1, -1):
                weights = torch.full((3,), 0.3)
                weights[s] += sign * eps
                with torch.no_grad(), force_routing(tower, weights):
                    values.append(float(entropy(logits_from_features(tower(data[task][0]), heads[task]))))
            assert abs((values[0] - values[1]) / (2 * eps) - float(grads[t, s])) < 1e-3


def test_path_starts_at_task_arithmetic_and_ends_at_the_oracle():
    zoo, tower, data, heads = _setup()
    rows = diagnose.path(tower, data, heads, 0.3, alphas=(0.0, 1.0))
    ta = get_method("task_arithmetic").merge(zoo, **{"lambda": 0.3})
    for t, task in enumerate(zoo.task_names):
        images, labels = data[task]
        with torch.no_grad():
            start = float(entropy(logits_from_features(ta(images), heads[task])))
            with force_routing(tower, torch.eye(3)[t]):
                end = float(entropy(logits_from_features(tower(images), heads[task])))
        assert abs(rows[task][0][1] - start) < 1e-4
        assert abs(rows[task][1][1] - end) < 1e-4


def test_diagonal_wins_reads_each_row():
    grads = torch.tensor([[-2.0, -1.0], [-3.0, -0.5]])
    assert diagnose.diagonal_wins(grads) == [True, False]
