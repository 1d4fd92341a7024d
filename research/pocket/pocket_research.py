"""Research loop for the pocket zoo: train a candidate (cached by tag), then measure all three legs of the bar.

    python research/pocket/pocket_research.py --tag base --pretrain-steps 800 --expert-steps 600 --adapt-lr 1e-3

Prints zero-shot, experts, task arithmetic (lambda sweep), oracle routing, the TA->oracle entropy path, the
entropy-gradient matrix, and WEMoE accuracy after adaptation with the engine (wemoe.moe.layer / wemoe.adaptation.adapt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable as `python research/pocket/pocket_research.py`

import torch  # noqa: E402

import wemoe  # noqa: E402,F401
from research.pocket import diagnose  # noqa: E402
from research.pocket.candidates import RUNS, load_candidate  # noqa: E402
from wemoe.adaptation.adapt import adapt  # noqa: E402
from wemoe.methods import get_method  # noqa: E402
from wemoe.moe.layer import WEMoEConfig, upscale_to_wemoe  # noqa: E402
from wemoe.moe.routing_hooks import oracle_towers  # noqa: E402
from wemoe.pocket.tasks import POCKET_TASKS, TASK_NAMES, arrays  # noqa: E402
from wemoe.pocket.train import ExpertSettings, PretrainSettings, accuracy, load_config, to_tensor  # noqa: E402
from wemoe.tasks.heads import build_head  # noqa: E402
from wemoe.tasks.images import TaskImages  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402


def task_fractions(pairs: list[str]) -> tuple[tuple[str, float], ...]:
    """``["shapes=0.08", "flags=0"]`` -> ``(("pocket_shapes", 0.08), ("pocket_flags", 0.0))``."""
    parsed = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        task = name if name.startswith("pocket_") else f"pocket_{name}"
        if task not in TASK_NAMES or not value:
            raise SystemExit(f"--task-fraction takes TASK=FRACTION with TASK one of {TASK_NAMES}, got {pair!r}")
        parsed.append((task, float(value)))
    return tuple(parsed)


def build(args, root: Path) -> Zoo:
    """The candidate cached in ``root``, trained there first (with the arguments' settings) where files are missing."""
    config = None
    resized = args.embed_dim or args.text_width or args.vision_width or args.vision_layers
    if resized and not (root / "config.json").is_file():
        config = load_config()
        config["embed_dim"] = args.embed_dim or config["embed_dim"]
        config["text_cfg"]["width"] = args.text_width or config["text_cfg"]["width"]
        config["vision_cfg"]["width"] = args.vision_width or config["vision_cfg"]["width"]
        config["vision_cfg"]["layers"] = args.vision_layers or config["vision_cfg"]["layers"]
    pretrain_settings = PretrainSettings(
        steps=args.pretrain_steps,
        batch=args.batch,
        lr=args.pretrain_lr,
        logit_scale=args.logit_scale,
        seed=args.seed,
        original_fraction=args.original_fraction,
        task_original_fraction=(("pocket_digits", args.digits_original_fraction), *task_fractions(args.task_fraction)),
    )
    expert_settings = ExpertSettings(steps=args.expert_steps, lr=args.expert_lr, non_mlp_lr_scale=args.non_mlp,
                                     seed=args.seed)
    return load_candidate(root, pretrain_settings, expert_settings, config=config, seed=args.seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--logit-scale", type=float, default=1 / 0.07)
    parser.add_argument("--original-fraction", type=float, default=PretrainSettings.original_fraction)
    digits_default = dict(PretrainSettings.task_original_fraction)["pocket_digits"]
    parser.add_argument("--digits-original-fraction", type=float, default=digits_default)
    parser.add_argument("--task-fraction", nargs="*", default=[], metavar="TASK=FRACTION",
                        help="per-task share of original-look pretraining images, e.g. shapes=0.08 flags=0 "
                             "(digits=F here overrides --digits-original-fraction)")
    parser.add_argument("--embed-dim", type=int, default=None, help="embedding width (default: JSON config)")
    parser.add_argument("--text-width", type=int, default=None)
    parser.add_argument("--vision-width", type=int, default=None, help="image tower width (default: JSON config)")
    parser.add_argument("--vision-layers", type=int, default=None, help="image tower blocks (default: JSON config)")
    parser.add_argument("--expert-steps", type=int, default=600)
    parser.add_argument("--expert-lr", type=float, default=1e-3)
    parser.add_argument("--non-mlp", type=float, default=0.0)
    parser.add_argument("--lambda", dest="lam", type=float, default=0.3)
    parser.add_argument("--adapt-steps", type=int, default=300)
    parser.add_argument("--adapt-lr", type=float, nargs="*", default=[1e-3])
    parser.add_argument("--hidden", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zoo = build(args, RUNS / args.tag)
    heads = {t: build_head(zoo.clip, zoo.tokenizer, POCKET_TASKS[t]) for t in TASK_NAMES}
    test = {t: (to_tensor(arrays(t, "test")[0]), torch.as_tensor(arrays(t, "test")[1])) for t in TASK_NAMES}

    def table(name, towers):
        accs = {t: accuracy(towers[t] if isinstance(towers, dict) else towers, heads[t], *test[t]) for t in TASK_NAMES}
        print(f"{name:28s} avg {sum(accs.values()) / len(accs):5.1f} | "
              + " ".join(f"{t[7:]} {a:5.1f}" for t, a in accs.items()))
        return sum(accs.values()) / len(accs)

    for t in TASK_NAMES:
        h = heads[t] / heads[t].norm(dim=-1, keepdim=True)
        cos = h @ h.T
        print(f"head {t}: max off-diagonal cosine {float((cos - 2 * torch.eye(len(cos))).max()):.2f}")
    results = {"zeroshot": table("zero-shot", zoo.visual)}
    results["experts"] = table("experts", {t: zoo.expert_visual(t) for t in TASK_NAMES})
    ta = get_method("task_arithmetic")
    best = (0, -1)
    for lam in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0):
        avg = table(f"TA lambda {lam}", ta.merge(zoo, **{"lambda": lam}))
        best = max(best, (avg, lam))
    results["ta_best"], results["ta_lambda"] = best
    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lam, router_hidden_layers=args.hidden))

    results["oracle"] = table("oracle MLP routing", oracle_towers(tower, TASK_NAMES))
    sub = {t: (test[t][0][:160], test[t][1][:160]) for t in TASK_NAMES}
    t0 = time.time()
    for task, rows in diagnose.path(tower, sub, heads, args.lam).items():
        print(f"path {task[7:]:9s} " + "  ".join(f"a={a:.2f} H={h:.2f} acc={acc:4.0f}" for a, h, acc in rows))
    grads = diagnose.entropy_gradients(tower, sub, heads, args.lam)
    print("G (rows: task entropy, cols: expert weight)\n", (grads * 100).round().int())
    print("diagonal wins:", diagnose.diagonal_wins(grads), f"({time.time() - t0:.1f}s)")
    data = {t: TaskImages(t, *test[t]) for t in TASK_NAMES}
    gap = results["experts"] - results["ta_best"]
    for lr in args.adapt_lr:
        tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lam, router_hidden_layers=args.hidden))
        t0 = time.time()
        for record in adapt(tower, data, heads, steps=args.adapt_steps, lr=lr, device="cpu"):
            if record.step % 100 == 0:
                print(f"  step {record.step} loss {record.loss:.3f} ({record.elapsed:.0f}s)")
        seconds = time.time() - t0
        avg = table(f"WEMoE lr {lr} {args.adapt_steps} steps", tower)
        results[f"wemoe_lr{lr}"] = avg
        print(f"  recovered {(avg - results['ta_best']) / gap:.2f} of the gap in {seconds:.0f}s (need 0.67)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
