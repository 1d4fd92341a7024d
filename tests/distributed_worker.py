"""Run by tests/adaptation/test_distributed.py: two DDP steps on 2 CPU ranks (gloo), each rank saving what it saw.

    python -m tests.distributed_worker OUT_DIR

Fabric starts rank 1 by running this same command again. For wemoe and adamerging merges of the tiny zoo, under the
entropy and im losses, each rank writes ``OUT_DIR/rank{r}.pt``: the trainable tensors before the run, the gradients
after each step, the parameters after the run and the reported losses and entropies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.adaptation.distributed import DistributedAdaptationRun, start_fabric
from wemoe.methods import get_method
from wemoe.tasks.heads import HeadCache
from wemoe.tasks.images import load_task_images

SETTINGS = {"steps": 2, "lr": 5e-2, "per_task": 5, "seed": 3}  # 5 images per task: ranks take 3 and 2
CASES = [(method, loss) for method in ("wemoe", "adamerging") for loss in ("entropy", "im")]


def setup(cache_dir: str | Path | None = None) -> tuple[Any, dict, dict]:
    """The tiny zoo, its three tasks' test images and heads (the same in every process)."""
    zoo = tiny_zoo(n_experts=3, seed=2, layers=3)
    tasks = [tiny_task(n, n_classes=3, n_images=10, seed=i) for i, n in enumerate(zoo.task_names)]
    data = {t.name: load_task_images(t, zoo.preprocess, "test") for t in tasks}
    cache = HeadCache(zoo.clip, zoo.tokenizer, cache_dir)
    heads = {t.name: cache.get(t) for t in tasks}
    return zoo, data, heads


def main(out: Path) -> None:
    """Run every case on this rank and save its record."""
    fabric = start_fabric(2, "cpu")
    with fabric.rank_zero_first():  # rank 0 writes the head cache, the others read it
        zoo, data, heads = setup()
    saved: dict[str, Any] = {"world": fabric.world_size}
    for method, loss in CASES:
        model = get_method(method)(zoo)
        run = DistributedAdaptationRun(fabric, model, data, heads, {**SETTINGS, "loss": loss})
        initial = {n: p.detach().clone() for n, p in run.params.items()}  # rank 0's, after DDP's broadcast
        grads, records = [], []
        for _ in range(SETTINGS["steps"]):
            records += list(run.run(1))
            grads.append({n: p.grad.detach().clone() for n, p in run.params.items()})
        saved[f"{method}-{loss}"] = {
            "initial": initial,
            "grads": grads,
            "params": {n: p.detach().clone() for n, p in run.params.items()},
            "losses": [r.loss for r in records],
            "entropy": [r.entropy for r in records],
        }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(saved, out / f"rank{fabric.global_rank}.pt")
    fabric.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
