"""Look inside a pocket-zoo candidate (cached by pocket_research.py, or the shipped zoo) before tuning adaptation.

    python research/pocket/pocket_probe.py --run /tmp/pocket_runs/c1        # a research candidate
    python research/pocket/pocket_probe.py                                    # the shipped assets/pocket
    python research/pocket/pocket_probe.py --adapt-lr 1e-3 5e-3 --steps 300   # also adapt and show the learned routing

Prints: entropy of each expert on its own task vs task arithmetic's; the entropy-gradient matrix G at the TA point
(diagonal must win each row); a linear probe of the routers' input (token-averaged MLP input, per block) naming the
task; and, for each adaptation learning rate, accuracy plus the mean routing weight per (task, expert) in the first
and last upscaled block (a task-specific routing has its largest weight on the diagonal).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable as `python research/pocket/pocket_probe.py`

import wemoe  # noqa: E402,F401
from research.pocket import diagnose  # noqa: E402
from research.pocket.candidates import load_candidate  # noqa: E402
from wemoe.adaptation.adapt import adapt  # noqa: E402
from wemoe.methods import get_method  # noqa: E402
from wemoe.moe.layer import WEMoEConfig, moe_layers, upscale_to_wemoe  # noqa: E402
from wemoe.moe.routing_hooks import capture_routing  # noqa: E402
from wemoe.pocket.tasks import POCKET_TASKS, TASK_NAMES, arrays  # noqa: E402
from wemoe.pocket.train import ExpertSettings, PretrainSettings, accuracy, to_tensor  # noqa: E402
from wemoe.tasks.classify import entropy, logits_from_features  # noqa: E402
from wemoe.tasks.heads import build_head  # noqa: E402
from wemoe.tasks.images import TaskImages  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402


def load_run(run: Path | None, args: argparse.Namespace) -> Zoo:
    """A research candidate's zoo from its cache folder (trained first with ``args`` if absent), or the shipped zoo."""
    pretrain_settings = PretrainSettings(steps=args.pretrain_steps, batch=args.batch, logit_scale=args.logit_scale,
                                         restyle=args.original_fraction < 1, original_fraction=args.original_fraction,
                                         seed=args.seed)
    expert_settings = ExpertSettings(steps=args.expert_steps, lr=args.expert_lr, non_mlp_lr_scale=args.non_mlp,
                                     seed=args.seed)
    return load_candidate(run, pretrain_settings, expert_settings, seed=args.seed)


def short(task: str) -> str:
    return task.removeprefix("pocket_")[:6]


def matrix(title: str, m: torch.Tensor, fmt: str = "{:6.2f}") -> None:
    print(title)
    print("        " + " ".join(f"{short(t):>6s}" for t in TASK_NAMES))
    for t, row in zip(TASK_NAMES, m, strict=True):
        print(f"{short(t):>7s} " + " ".join(fmt.format(float(v)) for v in row))


@torch.no_grad()
def mean_entropy(tower, images, head) -> float:
    return float(entropy(logits_from_features(tower(images), head)))


def router_inputs(tower, images_by_task: dict[str, torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per upscaled block, the token-averaged MLP input of every image, with its task index."""
    feats: dict[int, list[torch.Tensor]] = {}
    hooks = []
    for index, layer in moe_layers(tower).items():
        hooks.append(layer.register_forward_pre_hook(
            lambda m, args, i=index: feats.setdefault(i, []).append(args[0].mean(1))))
    labels = []
    with torch.no_grad():
        for t, images in enumerate(images_by_task.values()):
            tower(images)
            labels.append(torch.full((len(images),), t))
    for h in hooks:
        h.remove()
    return {i: (torch.cat(f), torch.cat(labels)) for i, f in feats.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("--hidden", type=int, default=1)
    p.add_argument("--adapt-lr", type=float, nargs="*", default=[])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=160, help="test images per task for the diagnostics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--logit-scale", type=float, default=1 / 0.07)
    p.add_argument("--original-fraction", type=float, default=0.0, help="1 = no restyling in pretraining")
    p.add_argument("--expert-steps", type=int, default=300)
    p.add_argument("--expert-lr", type=float, default=1e-3)
    p.add_argument("--non-mlp", type=float, default=0.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    zoo = load_run(args.run, args)
    heads = {t: build_head(zoo.clip, zoo.tokenizer, POCKET_TASKS[t]) for t in TASK_NAMES}
    test = {t: (to_tensor(arrays(t, "test")[0]), torch.as_tensor(arrays(t, "test")[1])) for t in TASK_NAMES}
    sub = {t: (x[: args.n], y[: args.n]) for t, (x, y) in test.items()}

    unit = torch.cat([h / h.norm(dim=-1, keepdim=True) for h in heads.values()])
    cross = unit @ unit.T
    sizes = [len(h) for h in heads.values()]
    blocks = torch.zeros(len(sizes), len(sizes))
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for a, (sa, na) in enumerate(zip(starts, sizes, strict=True)):
        for b, (sb, nb) in enumerate(zip(starts, sizes, strict=True)):
            c = cross[sa : sa + na, sb : sb + nb]
            blocks[a, b] = (c - 2 * torch.eye(na)).max() if a == b else c.max()
    matrix("max cosine between class embeddings (diagonal: within a task, off-diagonal: across tasks)", blocks)

    def table(name, towers):
        accs = {t: accuracy(towers[t] if isinstance(towers, dict) else towers, heads[t], *test[t]) for t in TASK_NAMES}
        avg = sum(accs.values()) / len(accs)
        print(f"{name:18s} avg {avg:5.1f} | " + " ".join(f"{short(t)} {a:5.1f}" for t, a in accs.items()), flush=True)
        return avg

    table("zero-shot", zoo.visual)
    table("experts", {t: zoo.expert_visual(t) for t in TASK_NAMES})
    for lam in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        table(f"TA {lam}", get_method("task_arithmetic").merge(zoo, **{"lambda": lam}))
    ta = get_method("task_arithmetic").merge(zoo, **{"lambda": args.lam})
    experts = {t: zoo.expert_visual(t) for t in TASK_NAMES}
    print(f"\n{'task':>8s} {'zs acc':>7s} {'exp acc':>7s} {'ta acc':>7s} | {'H exp':>6s} {'H ta':>6s} {'H zs':>6s}")
    for t in TASK_NAMES:
        x, y = sub[t]
        row = [accuracy(m, heads[t], x, y) for m in (zoo.visual, experts[t], ta)]
        ent = [mean_entropy(m, x, heads[t]) for m in (experts[t], ta, zoo.visual)]
        print(f"{short(t):>8s} " + " ".join(f"{v:7.1f}" for v in row) + " | " + " ".join(f"{v:6.3f}" for v in ent))

    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lam, router_hidden_layers=args.hidden))
    t0 = time.time()
    grads = diagnose.entropy_gradients(tower, sub, heads, args.lam)
    matrix("\nG[t, s] = dH_t / dr_s at the TA point (x100; the diagonal should be the most negative of its row)",
           grads * 100)
    print("diagonal wins:", diagnose.diagonal_wins(grads), f"({time.time() - t0:.1f} s)")
    for task, rows in diagnose.path(tower, sub, heads, args.lam).items():
        print(f"path {short(task):>6s} " + "  ".join(f"a={a:.2f} H={h:.2f} acc={acc:4.0f}" for a, h, acc in rows))

    from sklearn.linear_model import LogisticRegression

    inputs = router_inputs(tower, {t: x for t, (x, _) in sub.items()})
    half = args.n // 2
    for index, (x, y) in inputs.items():
        train = torch.cat([torch.arange(t * args.n, t * args.n + half) for t in range(len(TASK_NAMES))])
        testi = torch.cat([torch.arange(t * args.n + half, (t + 1) * args.n) for t in range(len(TASK_NAMES))])
        probe = LogisticRegression(max_iter=1000).fit(x[train].numpy(), y[train].numpy())
        score = probe.score(x[testi].numpy(), y[testi].numpy())
        print(f"router input probe, block {index}: task accuracy {100 * score:.1f}%")

    data = {t: TaskImages(t, *test[t]) for t in TASK_NAMES}
    for lr in args.adapt_lr:
        tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lam, router_hidden_layers=args.hidden))
        t0 = time.time()
        for record in adapt(tower, data, heads, steps=args.steps, lr=lr, device="cpu"):
            if record.step % 50 == 0:
                print(f"  lr {lr} step {record.step}: loss {record.loss:.3f} ({record.elapsed:.0f} s)", flush=True)
        accs = {t: accuracy(tower, heads[t], *test[t]) for t in TASK_NAMES}
        print(f"WEMoE lr {lr}: avg {sum(accs.values()) / len(accs):.1f} | "
              + " ".join(f"{short(t)} {a:.1f}" for t, a in accs.items()) + f" ({time.time() - t0:.0f} s)")
        with torch.no_grad(), capture_routing(tower) as record:
            for t in TASK_NAMES:
                tower(sub[t][0])
        for index, weights in record.layers.items():
            per_task = torch.stack([chunk.mean(0) for chunk in weights.split(args.n)])
            matrix(f"mean routing weight, block {index} (rows: images of task, cols: expert)", per_task)


if __name__ == "__main__":
    main()
