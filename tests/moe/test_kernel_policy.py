"""A kernel policy measured on this CPU decides where the fused kernel runs; without one the built-in rule does."""

import json
import shutil

import pytest
import torch

from wemoe.__main__ import main
from wemoe.errors import WemoeError
from wemoe.moe import fused_kernel, kernel_calibration, kernel_policy, lowrank
from wemoe.moe.kernel_policy import Cell, MeasuredPolicy, RowsCell

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this machine")
VIT_B = (3072, 768)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kernel cache of its own, the auto switch, and no override of the measured policy."""
    monkeypatch.setenv("WEMOE_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.delenv(fused_kernel.ENV_SWITCH, raising=False)
    monkeypatch.delenv(kernel_policy.ENV_POLICY, raising=False)
    return tmp_path / "kernels"


def _policy(threads: int | None = None) -> MeasuredPolicy:
    """A policy that contradicts the built-in rule: the kernel wins at batch 1 and loses at batch 16."""
    cells = (Cell(1, 50, 8, kernel_ms=1.0, torch_ms=2.0), Cell(16, 50, 8, kernel_ms=9.0, torch_ms=5.0),
             Cell(16, 197, 8, kernel_ms=3.0, torch_ms=4.0))
    rows = (RowsCell(50, kernel_ms=1.0, torch_ms=2.0), RowsCell(800, kernel_ms=4.0, torch_ms=3.0))
    return MeasuredPolicy(cells, rows, cpu="test CPU", threads=threads or torch.get_num_threads(), width=768)


def test_without_a_measured_policy_the_built_in_rule_decides(cache):
    assert kernel_policy.measured() is None
    assert fused_kernel.worthwhile(16, 50, *VIT_B, 8) and not fused_kernel.worthwhile(1, 50, *VIT_B, 8)


def test_a_written_policy_decides_by_the_nearest_measured_cell(cache):
    path = kernel_policy.write(_policy())
    assert path.parent == cache and path.name.startswith("policy-")
    assert kernel_policy.measured() == _policy()
    assert fused_kernel.worthwhile(1, 50, *VIT_B, 8)  # measured: kernel faster (the built-in rule says torch)
    assert fused_kernel.worthwhile(2, 40, *VIT_B, 6)  # nearest cell: batch 1, 50 tokens, 8 experts
    assert not fused_kernel.worthwhile(16, 50, *VIT_B, 8)  # measured: torch faster
    assert not fused_kernel.worthwhile(32, 64, *VIT_B, 8)
    assert fused_kernel.worthwhile(16, 256, *VIT_B, 8)
    assert kernel_policy.measured().matmul_kernel_for(40)
    assert not kernel_policy.measured().matmul_kernel_for(3200)
    # the kernel's structural limits hold whatever was measured
    assert not fused_kernel.worthwhile(1, 50, 512, 128, 8)  # a small layer
    assert not fused_kernel.worthwhile(1, 50, *VIT_B, 20)  # beyond the kernel's unrolled paths


def test_the_policy_is_per_thread_count_and_can_be_ignored(cache, monkeypatch):
    kernel_policy.write(_policy(threads=torch.get_num_threads() + 1))
    assert kernel_policy.measured() is None  # measured with other threads: not ours
    kernel_policy.write(_policy())
    assert kernel_policy.measured() is not None
    monkeypatch.setenv(kernel_policy.ENV_POLICY, "builtin")
    assert kernel_policy.measured() is None and fused_kernel.worthwhile(16, 50, *VIT_B, 8)


def test_a_damaged_or_rewritten_policy_file(cache):
    path = kernel_policy.write(_policy())
    path.write_text("{not json")
    assert kernel_policy.measured() is None  # damaged: the built-in rule, no error
    path.write_text(json.dumps({"format": 99, "cells": [1], "rows": [1]}))
    assert kernel_policy.measured() is None
    kernel_policy.write(_policy())
    assert kernel_policy.measured() == _policy()  # a rewritten file is read again
    assert MeasuredPolicy.from_json(_policy().to_json()) == _policy()


def test_matmul_follows_the_measured_rows(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(lowrank, "_KernelMatmul", type("Spy", (), {"apply": staticmethod(
        lambda x, w: calls.append(x.shape[0]) or x @ w.T)}))
    monkeypatch.setattr(fused_kernel, "usable", lambda *tensors: True)
    weight = torch.randn(6, 4)
    lowrank.matmul_t(torch.randn(600, 4), weight)
    assert calls == [600]  # the built-in rule: >= KERNEL_MIN_ROWS rows
    kernel_policy.write(_policy())
    lowrank.matmul_t(torch.randn(600, 4), weight)
    lowrank.matmul_t(torch.randn(60, 4), weight)
    assert calls == [600, 60]  # measured: torch nearer 800 rows, the kernel nearer 50


@needs_compiler
def test_calibration_measures_every_cell_and_the_cli_stores_it(cache, capsys):
    policy = kernel_calibration.calibrate(batches=(1, 2), tokens=(3,), experts=(2,), rows=(5,), width=16, runs=1)
    assert [(c.batch, c.tokens, c.experts) for c in policy.cells] == [(1, 3, 2), (2, 3, 2)]
    assert all(c.kernel_ms > 0 and c.torch_ms > 0 for c in policy.cells) and policy.rows[0].rows == 5
    assert policy.threads == torch.get_num_threads() and policy.width == 16
    assert main(["calibrate-kernel", "--batches", "1", "--tokens", "3", "--experts", "2", "--rows", "5",
                 "--width", "16", "--runs", "1"]) == 0
    assert "policy written to" in capsys.readouterr().out
    stored = kernel_policy.measured()
    assert stored is not None and [(c.batch, c.tokens) for c in stored.cells] == [(1, 3)]


@pytest.mark.parametrize("argv,message", [
    (["--experts", "20"], "up to 16"),
    (["--batches", "0"], "--batches needs"),
    (["--width", "4"], "--width needs"),
    (["--threads", "0"], "--threads needs"),
])
def test_calibrate_refuses_a_bad_grid_with_what_to_do(cache, capsys, argv, message):
    assert main(["calibrate-kernel", *argv]) == 2
    assert message in capsys.readouterr().err
    assert kernel_policy.measured() is None


def test_calibrate_says_when_there_is_no_kernel(cache, monkeypatch):
    monkeypatch.setattr(fused_kernel, "load", lambda: None)  # no compiler, or a failed build
    with pytest.raises(WemoeError, match="nothing to calibrate"):
        kernel_calibration.calibrate(batches=(1,), tokens=(1,), experts=(1,), rows=(1,), width=8, runs=1)
