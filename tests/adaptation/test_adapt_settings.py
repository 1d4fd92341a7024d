"""Adaptation settings are declared once and checked; a run that diverges stops and keeps its last finite step."""

from __future__ import annotations

import math

import pytest
import torch

import wemoe.adaptation.adapt
from tests.helpers import tiny_task, tiny_zoo
from wemoe.adaptation.adapt import SETTINGS, AdaptationDiverged, resolve_settings
from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.errors import MethodError
from wemoe.tasks.classify import entropy
from wemoe.workbench.workbench import Workbench


def _bench() -> Workbench:
    zoo = tiny_zoo(n_experts=2, seed=3)
    bench = Workbench(zoo, [tiny_task(n, n_classes=3, n_images=8, seed=i) for i, n in enumerate(zoo.task_names)])
    bench.merge("wemoe")
    return bench


def test_settings_are_declared_once_with_their_defaults():
    assert [p.name for p in SETTINGS] == ["steps", "lr", "per_task", "loss", "seed", "split"]
    assert resolve_settings() == {"steps": 300, "lr": 1e-3, "per_task": 16, "loss": "entropy", "seed": 0,
                                  "split": "test"}
    assert resolve_settings({"lr": "0.01", "steps": "5"})["lr"] == 0.01


@pytest.mark.parametrize("values, message", [
    ({"lr": 1e9}, "adapt.lr=1000000000.0 is out of range"),
    ({"lr": "x"}, "adapt.lr must be a float, got 'x'"),
    ({"lr": None}, "adapt.lr must be a float, got None"),
    ({"lr": math.nan}, "adapt.lr must be a finite number"),
    ({"steps": -1}, "adapt.steps=-1 is out of range"),
    ({"per_task": 0}, "adapt.per_task=0 is out of range"),
    ({"loss": "magic"}, "choose one of"),
    ({"momentum": 0.9}, "no setting 'momentum'"),
])
def test_bad_settings_are_refused_with_what_to_enter(values, message):
    with pytest.raises(MethodError, match=message):
        resolve_settings(values)


def test_a_huge_learning_rate_is_refused_before_any_step():
    bench = _bench()
    before = [p.detach().clone() for p in trainable_parameters(bench.merges["wemoe"].model)]
    with pytest.raises(MethodError, match="out of range"):
        next(bench.adapt("wemoe", lr=1e9))
    after = trainable_parameters(bench.merges["wemoe"].model)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)) and bench.merges["wemoe"].adapt_steps == 0


def test_a_loss_that_stops_being_finite_stops_the_run_at_the_last_finite_step(monkeypatch):
    calls = {"n": 0}

    def loss_that_breaks_at_step_3(logits: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1  # two tasks: two calls per step
        return entropy(logits) * (math.nan if calls["n"] > 4 else 1.0)

    monkeypatch.setitem(wemoe.adaptation.adapt.LOSSES, "entropy", loss_that_breaks_at_step_3)
    bench = _bench()
    params = trainable_parameters(bench.merges["wemoe"].model)
    kept = []
    with pytest.raises(AdaptationDiverged, match="step 3 of 5: the loss became NaN.*kept as after step 2"):
        for _ in bench.adapt("wemoe", steps=5, lr=1e-2, per_task=4):
            kept = [p.detach().clone() for p in params]
    assert bench.merges["wemoe"].adapt_steps == 2
    assert all(torch.equal(p, k) and torch.isfinite(p).all() for p, k in zip(params, kept, strict=True))


def test_parameters_that_stop_being_finite_are_put_back(monkeypatch):
    class Exploding(torch.optim.Adam):
        def step(self, closure=None):
            result = super().step(closure)
            if self.state[self.param_groups[0]["params"][0]]["step"] >= 2:
                with torch.no_grad():
                    self.param_groups[0]["params"][0].fill_(math.inf)
            return result

    monkeypatch.setattr(torch.optim, "Adam", Exploding)
    bench = _bench()
    params = trainable_parameters(bench.merges["wemoe"].model)
    kept = []
    with pytest.raises(AdaptationDiverged, match="step 2 of 4: the parameters became NaN or infinite"):
        for _ in bench.adapt("wemoe", steps=4, lr=1e-2, per_task=4):
            kept = [p.detach().clone() for p in params]
    assert all(torch.equal(p, k) for p, k in zip(params, kept, strict=True))
