"""Adaptation on several devices (Lightning Fabric DDP): 2 CPU ranks (gloo) give the one-process gradients on the
union of their batches, the CLI runs with --devices 2, and a request this machine cannot serve fails at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed_worker import CASES, SETTINGS, setup
from wemoe.adaptation.adapt import AdaptationRun
from wemoe.adaptation.distributed import DeviceError, check_devices, share
from wemoe.methods import get_method

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WEMOE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the 2 ranks of tests/distributed_worker.py saved."""
    tmp = tmp_path_factory.mktemp("ddp")
    done = _run(["-m", "tests.distributed_worker", str(tmp / "out")], tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(tmp / "out" / f"rank{r}.pt") for r in range(2)]


def test_share_splits_every_task_exactly():
    for n in range(1, 12):
        for world in range(1, n + 1):
            slices = [share(n, r, world) for r in range(world)]
            assert [i for s in slices for i in range(n)[s]] == list(range(n))
            assert max(s.stop - s.start for s in slices) - min(s.stop - s.start for s in slices) <= 1


@pytest.mark.parametrize("method, loss", CASES)
def test_two_ranks_give_the_one_process_gradient_of_the_union_batch(ranks, method, loss):
    zoo, data, heads = setup()
    first, second = ranks[0][f"{method}-{loss}"], ranks[1][f"{method}-{loss}"]
    assert ranks[0]["world"] == 2
    model = get_method(method)(zoo)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in first["initial"]:
                p.copy_(first["initial"][name])
    run = AdaptationRun(model, data, heads, {**SETTINGS, "loss": loss}, device="cpu")
    worst = 0.0
    for step in range(SETTINGS["steps"]):
        record = next(iter(run.run(1)))
        assert record.loss == pytest.approx(first["losses"][step], abs=1e-5)
        assert first["losses"][step] == second["losses"][step]  # every rank reports the whole batch's loss
        for task, value in record.entropy.items():
            assert first["entropy"][step][task] == pytest.approx(value, abs=1e-5)
        grads = {n: p.grad for n, p in run.params.items()}
        assert set(grads) == set(first["grads"][step])
        for name, grad in grads.items():
            assert torch.equal(first["grads"][step][name], second["grads"][step][name])  # all-reduced: the same
            worst = max(worst, float((first["grads"][step][name] - grad).abs().max()))
        assert any(g.abs().max() > 1e-5 for g in grads.values())  # the gradients compared are not all zero
    assert worst <= 1e-6, f"largest gradient difference {worst:.2e}"  # measured: at most 2.5e-8
    for name in run.params:  # the same gradients and Adam state on every rank: the same parameters
        assert torch.equal(first["params"][name], second["params"][name])


@pytest.mark.slow  # two processes each loading the pocket zoo: ~25 s on a shared CPU
def test_cli_table_on_two_cpu_devices(tmp_path):
    out = tmp_path / "report.json"
    done = _run(["-m", "wemoe", "table", "--zoo", "pocket", "--methods", "pretrained,wemoe", "--samples", "8",
                 "--adapt-steps", "2", "--per-task", "3", "--devices", "2", "--accelerator", "cpu",
                 "--json", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["methods"]["wemoe"]["adapt_steps"] == 2
    assert done.stdout.count("wemoe") == 1  # the table is printed once, by rank 0
    assert done.stderr.count("wrote ") == 1
    assert done.stderr.count("wemoe step 2/2") == 1


def test_more_devices_than_gpus_is_one_clear_line_before_any_work(monkeypatch, capsys):
    import wemoe.__main__
    from wemoe.__main__ import main

    monkeypatch.setattr(wemoe.__main__, "load_workbench", lambda *a, **k: pytest.fail("the zoo must not be loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for command in (["table", "--methods", "wemoe"], ["merge", "--method", "wemoe", "--out", "x.safetensors"]):
        assert main([*command, "--devices", "3", "--accelerator", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0
        assert "--devices 3 --accelerator cuda: this machine has 2 CUDA GPUs" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--devices", "0"], "--devices 0: give 1 or more devices"),
        (["--devices", "4", "--per-task", "3", "--accelerator", "cpu"], "use --per-task 4 or more"),
    ],
)
def test_bad_device_requests_are_one_clear_line(argv, message, monkeypatch, capsys):
    import wemoe.__main__
    from wemoe.__main__ import main

    monkeypatch.setattr(wemoe.__main__, "load_workbench", lambda *a, **k: pytest.fail("the zoo must not be loaded"))
    assert main(["table", "--methods", "wemoe", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0


def test_no_gpu_at_all(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="this machine has no CUDA GPU; use --accelerator cpu"):
        check_devices(3, "cuda")
    assert check_devices(2, "auto") == "cpu"
