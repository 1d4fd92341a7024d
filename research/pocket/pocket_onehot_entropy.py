"""Which routing does entropy prefer? Per task and one-hot routing, the WEMoE tower's entropy and accuracy.

For every task t (column) and routing (row: task arithmetic's 0.3 on every expert, each expert alone, no task
vector), the WEMoE tower of the pocket zoo (non-MLP parameters by task arithmetic at lambda) is run on t's test
images under t's head. Cells: mean entropy H, accuracy a, and m, the share of images given the most frequent class
(collapse onto one class shows as m near 100). Entropy adaptation can find the task routing only where each
column's own expert is the entropy minimum and foreign experts do not offer a lower, collapsed one.

    python research/pocket/pocket_onehot_entropy.py                          # the shipped zoo, at its temperature
    python research/pocket/pocket_onehot_entropy.py --head-logit-scale 100   # the same zoo, CLIP's temperature
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable as `python research/pocket/<script>.py`

import wemoe  # noqa: E402,F401
from research.pocket.candidates import load_candidate  # noqa: E402
from wemoe.moe.layer import WEMoEConfig, upscale_to_wemoe  # noqa: E402
from wemoe.moe.routing_hooks import force_routing  # noqa: E402
from wemoe.pocket.tasks import POCKET_TASKS, TASK_NAMES, arrays  # noqa: E402
from wemoe.pocket.train import to_tensor  # noqa: E402
from wemoe.tasks.classify import logits_from_features  # noqa: E402
from wemoe.tasks.heads import build_head  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Print the table; return ``{routing: {task: {"entropy", "accuracy", "top_share"}}}``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a research run folder (default: the shipped pocket zoo)")
    p.add_argument("--head-logit-scale", type=float, default=None)
    p.add_argument("--lambda", dest="lam", type=float, default=0.3)
    p.add_argument("--samples", type=int, default=240, help="test images per task")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    zoo = load_candidate(args.run)
    if args.head_logit_scale is not None:
        zoo.clip.logit_scale.data.fill_(math.log(args.head_logit_scale))
    heads = {t: build_head(zoo.clip, zoo.tokenizer, POCKET_TASKS[t]) for t in TASK_NAMES}
    data = {}
    for t in TASK_NAMES:
        images, labels = arrays(t, "test")
        data[t] = (to_tensor(images[: args.samples]), torch.as_tensor(labels[: args.samples].copy()))
    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lam))
    count = len(TASK_NAMES)
    routings = {f"TA {args.lam}": torch.full((count,), args.lam)}
    routings.update({f"only {t.removeprefix('pocket_')}": torch.eye(count)[i] for i, t in enumerate(TASK_NAMES)})
    routings["none (W_0)"] = torch.zeros(count)
    result: dict[str, dict[str, dict[str, float]]] = {}
    print(f"head logit scale {float(zoo.clip.logit_scale.exp()):.1f}; "
          "cells: H entropy, a accuracy %, m top-class share %")
    print(f"{'routing':<14}" + "".join(f"{t.removeprefix('pocket_'):>17}" for t in TASK_NAMES))
    with torch.no_grad():
        for name, weights in routings.items():
            result[name] = {}
            for t, (images, labels) in data.items():
                with force_routing(tower, weights):
                    logits = logits_from_features(tower(images), heads[t])
                probs = logits.softmax(-1)
                predicted = logits.argmax(-1)
                result[name][t] = {
                    "entropy": float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()),
                    "accuracy": 100 * float((predicted == labels).float().mean()),
                    "top_share": 100 * float(torch.bincount(predicted, minlength=logits.shape[1]).max()) / len(labels),
                }
            print(f"{name:<14}" + "".join(
                f"  H{c['entropy']:5.2f} a{c['accuracy']:3.0f} m{c['top_share']:3.0f}" for c in result[name].values()))
    return result


if __name__ == "__main__":
    main()
