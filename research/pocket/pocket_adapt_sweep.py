"""Leg 3 of the pocket bar: how much of the TA -> experts gap WEMoE adaptation recovers, per adaptation setting.

    python research/pocket/pocket_adapt_sweep.py --run /tmp/pocket_runs/r1 --lr 1e-4 3e-4 1e-3 --steps 300
    python research/pocket/pocket_adapt_sweep.py --lr 1e-3 --lambda 0.1 0.3          # the shipped assets/pocket

For each (init lambda, lr, router hidden layers) it adapts a fresh WEMoE with the engine
(wemoe.moe.layer.upscale_to_wemoe, wemoe.adaptation.adapt.adapt: Adam on the routers, entropy under each task's own
head, 16 images per task per step) and prints accuracy every ``--every`` steps, the share of the gap recovered, and the
mean routing weight per (task, expert) in the last upscaled block after the run (a learned task routing has its largest
weight on the diagonal).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable as `python research/pocket/<script>.py`

import wemoe  # noqa: E402,F401
from research.pocket.candidates import load_candidate  # noqa: E402
from wemoe.adaptation.adapt import adapt  # noqa: E402
from wemoe.methods import get_method  # noqa: E402
from wemoe.moe.layer import WEMoEConfig, moe_layers, upscale_to_wemoe  # noqa: E402
from wemoe.moe.routing_hooks import capture_routing  # noqa: E402
from wemoe.pocket.tasks import POCKET_TASKS, TASK_NAMES, arrays  # noqa: E402
from wemoe.pocket.train import to_tensor  # noqa: E402
from wemoe.tasks.classify import predict  # noqa: E402
from wemoe.tasks.heads import build_head  # noqa: E402
from wemoe.tasks.images import TaskImages  # noqa: E402


def average(model, data, heads) -> tuple[float, dict[str, float]]:
    """Mean and per-task accuracy (percent)."""
    per = {}
    for t, d in data.items():
        m = model[t] if isinstance(model, dict) else model
        per[t] = 100.0 * float((predict(m, d.images, heads[t]) == d.labels).float().mean())
    return sum(per.values()) / len(per), per


@torch.no_grad()
def routing_matrix(tower, data, samples: int = 64) -> torch.Tensor:
    """Mean routing weight [task, expert] in the last upscaled block."""
    last = max(moe_layers(tower))
    rows = []
    for d in data.values():
        with capture_routing(tower) as record:
            tower(d.images[:samples])
        rows.append(record.layers[last].mean(0))
    return torch.stack(rows)


def use_bounded_routers() -> None:
    """A named variant (not the paper's): routing weights ``sigmoid(router(x))`` in [0, 1], initialised at lambda.

    The paper's routers are unbounded, so entropy descent can extrapolate along task vectors (weights < 0 or > 1)
    to make a head confident without the right expert. Patches wemoe.moe.layer.Router for this process only.
    """

    from torch import nn

    from wemoe.moe.layer import Router

    def reset(self, lambda_: float) -> None:
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, math.log(lambda_ / (1 - lambda_)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(tokens).mean(dim=1))

    Router.reset = reset
    Router.forward = forward


def use_task_batch_routing(per_task: int) -> dict[str, bool]:
    """A named variant (FusionBench's ``batch_reduce: true``, not this project's WEMoE): while the returned switch
    is on, each router's outputs are averaged over every ``per_task`` consecutive samples, so each task's images in
    an adaptation batch share one routing. Evaluation turns it off (per-sample routing). Patches wemoe.moe.layer.Router
    for this process only."""
    from wemoe.moe.layer import Router

    switch = {"on": False}
    per_sample = Router.forward

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        routing = per_sample(self, tokens)
        if not switch["on"]:
            return routing
        groups = routing.view(-1, per_task, routing.shape[-1]).mean(1, keepdim=True)
        return groups.expand(-1, per_task, -1).reshape(routing.shape)

    Router.forward = forward
    return switch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=None)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--lambda", dest="lambdas", type=float, nargs="+", default=[0.3])
    parser.add_argument("--hidden", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="adaptation seed (which images each step draws)")
    parser.add_argument("--loss", choices=("entropy", "im"), default="entropy",
                        help="entropy: the paper's (wemoe.adaptation.adapt); im: variant, entropy minus the entropy "
                             "of the batch-mean prediction")
    parser.add_argument("--bounded", action="store_true",
                        help="variant: routing = sigmoid(router), in [0, 1], starting at lambda")
    parser.add_argument("--task-batch-routing", action="store_true",
                        help="variant (FusionBench's batch_reduce): during adaptation each task's 16 images share the "
                             "mean of their routings; evaluation routes per sample")
    parser.add_argument("--head-logit-scale", type=float, default=None,
                        help="zoo change for research: the CLIP logit scale the heads carry (accuracy does not depend "
                             "on it; entropy does). Real CLIP: 100; the shipped pocket zoo: 30")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.bounded:
        use_bounded_routers()
    task_batch = use_task_batch_routing(16) if args.task_batch_routing else {"on": False}
    zoo = load_candidate(args.run)
    if args.head_logit_scale is not None:
        zoo.clip.logit_scale.data.fill_(math.log(args.head_logit_scale))
    heads = {t: build_head(zoo.clip, zoo.tokenizer, POCKET_TASKS[t]) for t in TASK_NAMES}
    data = {t: TaskImages(t, to_tensor(arrays(t, "test")[0]), torch.as_tensor(arrays(t, "test")[1]))
            for t in TASK_NAMES}
    experts, _ = average({t: zoo.expert_visual(t) for t in TASK_NAMES}, data, heads)
    ta = get_method("task_arithmetic")
    sweep = {lam: average(ta.merge(zoo, **{"lambda": lam}), data, heads)[0] for lam in (0.1, 0.2, 0.3, 0.4, 0.5)}
    ta_best = max(sweep.values())
    print(f"experts {experts:.1f}  TA sweep {({k: round(v, 1) for k, v in sweep.items()})}  "
          f"gap {experts - ta_best:.1f}")
    for lam in args.lambdas:
        for hidden in args.hidden:
            for lr in args.lr:
                tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=lam, router_hidden_layers=hidden))
                start = time.perf_counter()
                label = f"lambda {lam} hidden {hidden} lr {lr:g}"
                steps = adapt(tower, data, heads, steps=args.steps, lr=lr, loss=args.loss, seed=args.seed, device="cpu")
                task_batch["on"] = args.task_batch_routing
                for record in steps:
                    if record.step % args.every == 0:
                        task_batch["on"] = False
                        acc, per = average(tower, data, heads)
                        task_batch["on"] = args.task_batch_routing
                        recovered = (acc - ta_best) / (experts - ta_best)
                        print(f"{label} step {record.step}: loss {record.loss:.3f} acc {acc:.1f} "
                              f"recovered {recovered:.2f} ({time.perf_counter() - start:.0f}s adapt+eval) | "
                              + " ".join(f"{t[7:]} {a:.0f}" for t, a in per.items()))
                task_batch["on"] = False
                mean_routing = (routing_matrix(tower, data) * 100).round().int()
                print(f"{label}: mean routing [task, expert], last block\n{mean_routing}")


if __name__ == "__main__":
    main()
