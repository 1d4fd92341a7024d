"""Build the pocket zoo from nothing: ``python -m wemoe.pocket.build [--out assets/pocket] [--force]``.

Generates the tasks, pretrains the tiny CLIP contrastively, fine-tunes one expert per task, writes everything to a
temporary folder beside ``--out``, loads it back exactly as users will (float16 files, manifest hashes checked),
measures it with the same Workbench as ``python -m wemoe table`` (zero-shot, experts, task arithmetic at its best
lambda, WEMoE with oracle routing and, unless ``--wemoe-steps 0``, WEMoE after entropy adaptation), and only then
moves the folder into place. An existing folder is replaced only with ``--force``; a failed build leaves it untouched.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from wemoe import _torchvision_compat  # noqa: F401  (before open_clip)
from wemoe.analysis.sweep import best_task_arithmetic
from wemoe.errors import ZooError
from wemoe.pocket.loader import DEFAULT_PATH, MANIFEST, POCKET20_PATH, load_pocket_zoo, sha256
from wemoe.pocket.tasks import SEED, SPLIT_SIZES, TASK_NAMES, ZOO_TASKS, arrays, get_spec
from wemoe.pocket.train import (
    CONFIG_PATH,
    ExpertSettings,
    PretrainSettings,
    create_pocket_clip,
    finetune_expert,
    in_blocks,
    is_mlp,
    load_config,
    pretrain,
)
from wemoe.workbench.workbench import Workbench

EXAMPLES_PER_TASK = 4
DESCRIPTIONS = {
    "pocket": ("The pocket zoo: a tiny open_clip CLIP pretrained on captioned pocket images, one expert per pocket "
               "task."),
    "pocket-20": "The twenty-task pocket zoo: a tiny open_clip CLIP pretrained on captioned images of twenty pocket "
                 "tasks, one expert per task (the MLPs of its last two blocks).",
}


@dataclass
class BuildSettings:
    """Everything that decides the zoo (recorded in the manifest)."""

    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    expert: ExpertSettings = field(default_factory=ExpertSettings)
    train_size: int | None = None  # images per task for pretraining and fine-tuning (None: SPLIT_SIZES["train"])
    model_seed: int = 0
    data_seed: int = SEED
    wemoe_steps: int = 300
    wemoe_lambda: float = 0.3
    wemoe_lr: float = 1e-3
    measure_samples: int | None = None  # test images per task for the measurements (None: the whole test split)
    # Torch threads of each training process. The weights depend on it (float sums split differently), so the
    # shipped zoo records it; 1 reproduces assets/pocket bit for bit.
    threads: int = 1
    # Experts are fine-tuned in this many processes at once (each at `threads`); the weights do not depend on it.
    # The measurements run on workers x threads threads.
    workers: int = 2
    name: str = "pocket"  # the zoo (ZOO_TASKS' key): which tasks, what the manifest calls it
    # Only these blocks' MLPs learn, and only they are stored per expert (None: every block's MLP, whole image towers
    # stored: the eight-task zoo).
    expert_blocks: tuple[int, ...] | None = None
    min_gap: float = 15.0  # the bar's points between the experts' average and task arithmetic's

    @property
    def tasks(self) -> tuple[str, ...]:
        """The zoo's tasks, in order."""
        return ZOO_TASKS[self.name]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if torch.is_floating_point(v) else v).contiguous() for k, v in state.items()}


def _stored(state: dict[str, torch.Tensor], blocks: tuple[int, ...] | None) -> dict[str, torch.Tensor]:
    """What an expert's file holds: its whole image tower, or with ``blocks`` only those blocks' MLP tensors."""
    return state if blocks is None else {k: v for k, v in state.items() if is_mlp(k) and in_blocks(k, blocks)}


def write_examples(folder: Path, per_task: int = EXAMPLES_PER_TASK, tasks: tuple[str, ...] = TASK_NAMES) -> list[Path]:
    """A few test images per task as PNGs (``folder/<task>/<index>_<class>.png``), one class each, for the app
    gallery."""
    from PIL import Image

    written = []
    for task in tasks:
        images, labels = arrays(task, "test")
        classnames = get_spec(task).classnames
        target = folder / task
        target.mkdir(parents=True, exist_ok=True)
        seen: list[int] = []
        for i, label in enumerate(labels):
            if int(label) in seen:
                continue
            seen.append(int(label))
            slug = classnames[int(label)].lower().replace(" ", "_").replace('"', "")
            path = target / f"{len(seen) - 1}_{slug}.png"
            Image.fromarray(images[i]).save(path, optimize=True)
            written.append(path)
            if len(seen) == per_task:
                break
    return written


def _finetune_in_worker(state: dict[str, torch.Tensor], task: str, settings: BuildSettings) -> dict[str, torch.Tensor]:
    torch.set_num_threads(settings.threads)
    clip, _, tokenizer = create_pocket_clip(seed=settings.model_seed)
    clip.load_state_dict(state)
    return finetune_expert(clip, tokenizer, task, settings.expert, settings.train_size, log=_log,
                           blocks=settings.expert_blocks)


def finetune_experts(state: dict[str, torch.Tensor], settings: BuildSettings) -> dict[str, dict[str, torch.Tensor]]:
    """One expert per task from the pretrained CLIP's ``state``, ``settings.workers`` at a time in fresh processes.

    Each expert is seeded and trained alone at ``settings.threads`` threads, so the result is the same as one after
    another in this process; spawned (not forked) workers keep torch's thread pools safe."""
    if settings.workers <= 1:
        return {task: _finetune_in_worker(state, task, settings) for task in settings.tasks}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
        jobs = {task: pool.submit(_finetune_in_worker, state, task, settings) for task in settings.tasks}
        return {task: job.result() for task, job in jobs.items()}


def measure(root: Path, settings: BuildSettings) -> dict:
    """Accuracies (percent, test splits) of the zoo in ``root``, measured as ``python -m wemoe table`` does."""
    zoo = load_pocket_zoo(root)
    heads_dir = tempfile.TemporaryDirectory(prefix="pocket-heads-")
    bench = Workbench(zoo, samples=settings.measure_samples, cache_dir=heads_dir.name)
    result: dict = {"samples_per_task": {t: len(d) for t, d in bench.data().items()}}
    sweep = best_task_arithmetic(bench)
    bench.merge("wemoe", {"lambda": settings.wemoe_lambda}, name="wemoe_untrained")
    bench.merge("wemoe", {"lambda": settings.wemoe_lambda})
    adapt_seconds = 0.0
    if settings.wemoe_steps > 0:
        start = time.perf_counter()
        for record in bench.adapt("wemoe", steps=settings.wemoe_steps, lr=settings.wemoe_lr):
            if record.step % 50 == 0:
                _log(f"  wemoe step {record.step}: entropy {record.loss:.3f} ({record.elapsed:.0f} s)")
        adapt_seconds = time.perf_counter() - start
    names = (["pretrained", "experts", "task_arithmetic", "wemoe_oracle"]
             + (["wemoe"] if settings.wemoe_steps > 0 else []))
    table = bench.evaluate(names)
    for name in names:
        row = table.loc[name]
        result[name] = {"average": round(float(row["average"]), 2),
                        "per_task": {t: round(float(row[t]), 2) for t in zoo.task_names}}
    result["task_arithmetic"].update(sweep)
    result["wemoe_oracle"]["note"] = ("non-MLP weights by task arithmetic (lambda above), each task's images routed to "
                                      "its own expert's MLPs")
    if settings.wemoe_steps > 0:
        result["wemoe"].update({"lambda": settings.wemoe_lambda, "adapt_steps": settings.wemoe_steps,
                                "adapt_lr": settings.wemoe_lr, "adapt_seconds": round(adapt_seconds, 1)})
    heads_dir.cleanup()
    return result


def bar(measured: dict, min_gap: float = 15.0) -> dict:
    """The issue's bar, leg by leg, from the measured accuracies (task arithmetic ``min_gap`` points below)."""
    experts = measured["experts"]
    ta = measured["task_arithmetic"]["average"]
    legs = {
        "experts_avg_at_least_90": experts["average"] >= 90,
        "no_expert_below_80": min(experts["per_task"].values()) >= 80,
        f"task_arithmetic_{min_gap:g}_below_experts": experts["average"] - ta >= min_gap,
    }
    if "wemoe" in measured:
        gap = experts["average"] - ta
        recovered = (measured["wemoe"]["average"] - ta) / gap if gap > 0 else None  # no gap: nothing to recover
        legs["wemoe_recovered_fraction_of_gap"] = None if recovered is None else round(recovered, 3)
        legs["wemoe_recovers_two_thirds"] = recovered is not None and recovered >= 2 / 3
    return legs


def build(out: Path = DEFAULT_PATH, settings: BuildSettings | None = None, force: bool = False,
          examples: Path | None = None) -> dict:
    """Build the zoo into ``out`` (atomically) and return its manifest."""
    settings = settings or BuildSettings()
    out = Path(out)
    if out.exists() and not force:
        raise ZooError(f"{str(out)!r} already exists. Pass --force to replace it (it is kept until the new zoo is "
                       "complete).")
    torch.set_num_threads(settings.threads)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    t = time.perf_counter()
    for task in settings.tasks:
        for split in SPLIT_SIZES:
            arrays(task, split, settings.train_size if split == "train" else None, settings.data_seed)
    timings["data"] = time.perf_counter() - t
    _log(f"data: {len(settings.tasks)} tasks in {timings['data']:.1f} s")

    t = time.perf_counter()
    clip, _, tokenizer = create_pocket_clip(seed=settings.model_seed)
    pretrain(clip, tokenizer, settings.pretrain, settings.train_size, log=_log, tasks=settings.tasks)
    timings["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    experts = finetune_experts(clip.state_dict(), settings)
    timings["experts"] = time.perf_counter() - t
    torch.set_num_threads(settings.workers * settings.threads)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-building-", dir=out.parent))
    try:
        (tmp / "experts").mkdir()
        shutil.copyfile(CONFIG_PATH, tmp / "pocket_clip.json")
        save_file(_half(clip.state_dict()), str(tmp / "base.safetensors"))
        for task, state in experts.items():
            save_file(_half(_stored(state, settings.expert_blocks)), str(tmp / "experts" / f"{task}.safetensors"))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "name": settings.name,
            "description": DESCRIPTIONS[settings.name],
            "tasks": list(settings.tasks),
            "config": "pocket_clip.json",
            "base": "base.safetensors",
            "experts": {task: f"experts/{task}.safetensors" for task in settings.tasks},
            "storage_dtype": "float16",
            "settings": {
                "pretrain": asdict(settings.pretrain),
                "expert": asdict(settings.expert),
                "expert_non_mlp": ("frozen" if settings.expert.non_mlp_lr_scale == 0
                                   else f"lr x {settings.expert.non_mlp_lr_scale}"),
                "train_size_per_task": settings.train_size or SPLIT_SIZES["train"],
                "test_size_per_task": SPLIT_SIZES["test"],
                "model_seed": settings.model_seed,
                "data_seed": settings.data_seed,
                "threads": settings.threads,
                "workers": settings.workers,
                **({} if settings.expert_blocks is None else {
                    "expert_blocks": list(settings.expert_blocks),
                    "expert_files": "only the MLP tensors of these blocks (what the experts change); the loader "
                                    "takes every other image-tower tensor from the base"}),
            },
            "model": load_config(),
            "parameters": {"image_tower": sum(v.numel() for v in clip.visual.state_dict().values()),
                           "total": sum(v.numel() for v in clip.state_dict().values())},
            "files": {p.relative_to(tmp).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files},
        }
        manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))

        t = time.perf_counter()
        manifest["measured"] = measure(tmp, settings)
        manifest["bar"] = bar(manifest["measured"], settings.min_gap)
        timings["measure"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        manifest["build"] = {"seconds": {k: round(v, 1) for k, v in timings.items()}, "torch": torch.__version__,
                             "python": platform.python_version(), "machine": platform.machine(),
                             "cpus": torch.get_num_threads()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))

        if out.exists():
            old = out.with_name(f".{out.name}-old-{int(time.time())}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if examples is not None:  # the zoos share a gallery: each build replaces its own tasks' folders only
        for task in settings.tasks:
            shutil.rmtree(Path(examples) / task, ignore_errors=True)
        write_examples(examples, tasks=settings.tasks)
    _log(f"wrote {out} ({manifest['total_bytes'] / 2**20:.1f} MiB) in {timings['total']:.0f} s")
    return json.loads((out / MANIFEST).read_text())  # as stored (tuples become lists)


OUT_PATHS = {"pocket": DEFAULT_PATH, "pocket-20": POCKET20_PATH}


def zoo_settings(name: str = "pocket") -> BuildSettings:
    """The shipped settings of a pocket zoo: ``pocket`` (eight tasks) or ``pocket-20`` (twenty tasks; the last two
    blocks' MLPs per expert, so twenty experts fit the assets' size rule; research/pocket/FINDINGS.md)."""
    if name == "pocket":
        return BuildSettings()
    if name == "pocket-20":
        # fine detail (pips, strokes of numerals and glyphs) blurs when shrunk: restyled at full size, as digits
        keep = ("pocket_digits", "pocket_dice", "pocket_glyphs", "pocket_numerals")
        return BuildSettings(name=name, pretrain=PretrainSettings(keep_size=keep), expert_blocks=(2, 3),
                             min_gap=20.0, wemoe_steps=0)
    raise ZooError(f"Unknown pocket zoo {name!r}; pocket zoos: {', '.join(ZOO_TASKS)}.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags (unset: the chosen zoo's shipped settings, :func:`zoo_settings`)."""
    p = argparse.ArgumentParser(prog="python -m wemoe.pocket.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", choices=list(ZOO_TASKS), default="pocket",
                   help="pocket (eight tasks, assets/pocket) or pocket-20 (twenty tasks, assets/pocket20)")
    p.add_argument("--out", type=Path, default=None, help="where the zoo goes (default: the zoo's folder in assets/)")
    p.add_argument("--examples", type=Path, default=None,
                   help="where example PNGs go (default: assets/examples when building a zoo into its assets/ "
                        "folder, else none; each build replaces its own tasks' folders)")
    p.add_argument("--force", action="store_true", help="replace an existing zoo folder")
    p.add_argument("--pretrain-steps", type=int)
    p.add_argument("--pretrain-batch", type=int)
    p.add_argument("--pretrain-lr", type=float)
    p.add_argument("--logit-scale", type=float, help="fixed CLIP logit scale (temperature) of pretraining")
    p.add_argument("--head-logit-scale", type=float,
                   help="logit scale the finished model carries: its zero-shot heads and the experts' fine-tuning")
    p.add_argument("--original-fraction", type=float,
                   help="share of pretraining images in the tasks' own look (the rest restyled; 1 = no domain shift)")
    p.add_argument("--expert-steps", type=int)
    p.add_argument("--expert-batch", type=int)
    p.add_argument("--expert-lr", type=float)
    p.add_argument("--non-mlp-lr-scale", type=float, help="0 freezes the non-MLP parameters")
    p.add_argument("--train-size", type=int, default=None, help="training images per task")
    p.add_argument("--measure-samples", type=int, default=None, help="test images per task to measure (default: all)")
    p.add_argument("--wemoe-steps", type=int, help="adaptation steps to measure WEMoE (0: skip)")
    p.add_argument("--threads", type=int,
                   help="torch threads per training process (the weights depend on it; 1 reproduces the shipped zoos)")
    p.add_argument("--workers", type=int, help="experts fine-tuned at once, one process each")
    p.add_argument("--seed", type=int, default=0, help="model and training seed")
    return p.parse_args(argv)


def _given(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def settings_from_args(args: argparse.Namespace) -> BuildSettings:
    """The zoo's shipped settings with the flags that were given replacing theirs."""
    base = zoo_settings(args.zoo)
    pretrain_changes = _given({"steps": args.pretrain_steps, "batch": args.pretrain_batch, "lr": args.pretrain_lr,
                               "logit_scale": args.logit_scale, "head_logit_scale": args.head_logit_scale,
                               "original_fraction": args.original_fraction})
    if args.original_fraction is not None:
        pretrain_changes["restyle"] = args.original_fraction < 1
    expert_changes = _given({"steps": args.expert_steps, "batch": args.expert_batch, "lr": args.expert_lr,
                             "non_mlp_lr_scale": args.non_mlp_lr_scale})
    return replace(
        base,
        pretrain=replace(base.pretrain, seed=args.seed, **pretrain_changes),
        expert=replace(base.expert, seed=args.seed, **expert_changes),
        model_seed=args.seed,
        train_size=args.train_size,
        measure_samples=args.measure_samples,
        **_given({"wemoe_steps": args.wemoe_steps, "threads": args.threads, "workers": args.workers}),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m wemoe.pocket.build``."""
    args = parse_args(argv)
    settings = settings_from_args(args)
    out = args.out or OUT_PATHS[args.zoo]
    examples = args.examples
    if examples is None and out.resolve() == OUT_PATHS[args.zoo].resolve():
        examples = DEFAULT_PATH.parent / "examples"
    try:
        manifest = build(out, settings, args.force, examples)
    except ZooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    measured = {k: v["average"] for k, v in manifest["measured"].items() if isinstance(v, dict) and "average" in v}
    print(json.dumps({"measured": measured, "bar": manifest["bar"], "seconds": manifest["build"]["seconds"]},
                     indent=2))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
