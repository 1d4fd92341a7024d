"""The analysis views on the command line: ``python -m wemoe <view> ... [--json [FILE]]``.

    python -m wemoe interference --zoo pocket [--top-k 20]
    python -m wemoe cross_accuracy --zoo pocket [--normalized-methods task_arithmetic,ties]
    python -m wemoe sweep --zoo pocket [--sweep-methods task_arithmetic,ties] [--view-samples 64]
        [--task-lambdas t=0.5,...]
    python -m wemoe robustness --zoo pocket --methods task_arithmetic,wemoe [--corruptions all] [--severity 3]
    python -m wemoe routing_patches --zoo pocket --task pocket_digits --index 0 [--layer -1] [--adapt-steps 100]
    python -m wemoe cost --zoo pocket --methods task_arithmetic,ties,wemoe [--adapt-steps 100]

Each prints a table, or with ``--json`` one JSON object on stdout (``--json FILE`` writes it there instead).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import pandas as pd

from wemoe.analysis.cost import cost_table
from wemoe.analysis.cross_accuracy import cross_accuracy, normalized_accuracy
from wemoe.analysis.interference import interference
from wemoe.analysis.robustness import robustness_table, routing_shift, table_to_dict
from wemoe.analysis.sweep import lambda_sweep, per_task_lambdas
from wemoe.errors import WemoeError
from wemoe.evaluation.sample_eval import accuracy_by_task, sample_data, with_average
from wemoe.moe.patch_routing import patch_routing
from wemoe.tasks.corruptions import CORRUPTIONS
from wemoe.workbench.workbench import EXPERTS, ORACLE, PRETRAINED, Workbench

BUILT_IN = (PRETRAINED, EXPERTS, ORACLE)


def emit(args: argparse.Namespace, text: str, report: dict[str, Any]) -> dict[str, Any]:
    """Print ``text`` (a table), or the report as one JSON object (on stdout, or into ``--json FILE``)."""
    if args.json is None:
        print(text)
    elif args.json == "-":
        print(json.dumps(report))
    else:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(text)
    return report


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _merge_all(bench: Workbench, names: list[str], args: argparse.Namespace, adapt: Callable) -> None:
    """Merge (and adapt, with ``--adapt-steps``) every named method that is not built in."""
    params = args.parsed_params
    for name in names:
        if name in BUILT_IN:
            continue
        result = bench.merge(name, params.get(name))
        if result.adaptive and args.adapt_steps > 0:
            adapt(bench, name, args)
    if ORACLE in names and bench.routed_merge() is None:
        bench.merge("wemoe", params.get("wemoe"))


def _frame(table: pd.DataFrame) -> str:
    return table.round(2).to_string()


def command_interference(args: argparse.Namespace, bench: Workbench, adapt: Callable) -> dict[str, Any]:
    """Cosine similarity, sign conflicts and norms of the task vectors."""
    found = interference(bench.zoo, args.top_k)
    text = "\n\n".join([
        "cosine similarity of the task vectors (whole):\n" + _frame(found.cosine_frame()),
        f"share of parameters with conflicting signs (top_k {found.top_k:g}%):\n"
        + found.conflicts.round(4).to_string(),
        "task vector norm per block:\n" + _frame(found.norms),
    ])
    return emit(args, text, {"view": "interference", "zoo": args.zoo, **found.to_dict()})


def command_cross_accuracy(args: argparse.Namespace, bench: Workbench, adapt: Callable) -> dict[str, Any]:
    """Each expert on every task, and (``--normalized-methods``) merges as percent of the experts."""
    data = sample_data(bench.data(), args.view_samples, args.seed)
    heads = bench.heads()
    cross = cross_accuracy(bench.loaded.expert_towers(), data, heads)
    experts = pd.Series({t: cross.loc[t, t] for t in bench.task_names})
    report: dict[str, Any] = {"view": "cross_accuracy", "zoo": args.zoo, "per_task": args.view_samples,
                              "cross_accuracy": table_to_dict(cross)}
    text = "expert x task accuracy (%):\n" + _frame(cross)
    names = _names(args.normalized_methods)
    if names:
        _merge_all(bench, names, args, adapt)
        models = bench.models(names)
        table = pd.DataFrame.from_dict({n: with_average(accuracy_by_task(m, data, heads)) for n, m in models.items()},
                                       orient="index")
        normalized = normalized_accuracy(table, experts)
        report["normalized_accuracy"] = table_to_dict(normalized)
        text += "\n\nnormalized accuracy (% of the expert):\n" + _frame(normalized)
    return emit(args, text, report)


def command_sweep(args: argparse.Namespace, bench: Workbench, adapt: Callable) -> dict[str, Any]:
    """Task arithmetic and TIES per task over lambda 0..1."""
    swept = lambda_sweep(bench, _names(args.sweep_methods), per_task=args.view_samples, seed=args.seed,
                         params=args.parsed_params)
    text = "\n\n".join(f"{m} (chosen lambda {swept.chosen[m]:g}, best {swept.best(m):g}):\n{_frame(t)}"
                       for m, t in swept.tables.items())
    report = {"view": "lambda_sweep", "zoo": args.zoo, **swept.to_dict()}
    if args.task_lambdas:
        lambdas = _task_lambdas(args.task_lambdas)
        scored = per_task_lambdas(bench, lambdas, per_task=args.view_samples, seed=args.seed)
        report["per_task_lambdas"] = {"lambdas": lambdas,
                                      "accuracy": {k: round(float(v), 4) for k, v in scored.items()}}
        text += "\n\none lambda per task " + ", ".join(f"{t}={v:g}" for t, v in lambdas.items()) + ":\n" + "\n".join(
            f"  {k:24s} {v:6.2f}" for k, v in scored.items())
    return emit(args, text, report)


def _task_lambdas(text: str) -> dict[str, float]:
    """``task=lambda,task=lambda`` as a dict (a WemoeError naming the bad item otherwise)."""
    lambdas = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        task, _, value = item.partition("=")
        try:
            lambdas[task.strip()] = float(value)
        except ValueError:
            raise WemoeError(f"--task-lambdas: {item!r} is not task=number (e.g. pocket_digits=0.5).") from None
    return lambdas


def command_robustness(args: argparse.Namespace, bench: Workbench, adapt: Callable) -> dict[str, Any]:
    """Accuracy under corruptions for every named model; routing shift of the WEMoE merge."""
    names = _names(args.methods)
    corruptions = list(CORRUPTIONS) if args.corruptions == "all" else _names(args.corruptions)
    _merge_all(bench, names, args, adapt)
    table = robustness_table(bench, names, corruptions, args.severity, args.view_samples, args.seed)
    report: dict[str, Any] = {"view": "robustness", "zoo": args.zoo, "severity": args.severity,
                              "per_task": args.view_samples, "accuracy": table_to_dict(table)}
    text = f"accuracy (%) under each corruption, severity {args.severity}:\n" + _frame(table)
    routed = bench.routed_merge()
    if routed is not None:
        shifts = {c: routing_shift(bench, routed, c, args.severity, args.view_samples, args.seed) for c in corruptions}
        report["routing_shift"] = {"merge": routed, **{c: table_to_dict(s) for c, s in shifts.items()}}
        summary = pd.DataFrame({c: s.loc["average"] for c, s in shifts.items()}).T
        text += f"\n\nrouting shift of {routed} (average over tasks):\n" + _frame(summary)
    return emit(args, text, report)


def command_routing_patches(args: argparse.Namespace, bench: Workbench, adapt: Callable) -> dict[str, Any]:
    """One test image's routing per patch in one layer."""
    _merge_all(bench, ["wemoe"], args, adapt)
    task = args.task or bench.task_names[0]
    if task not in bench.task_names:
        raise WemoeError(f"Unknown task {task!r}. Tasks: {', '.join(bench.task_names)}.")
    images = bench.data()[task].images
    if not 0 <= args.index < len(images):
        raise WemoeError(f"--index must be 0..{len(images) - 1} for task {task}.")
    try:
        found = patch_routing(bench.merges["wemoe"].model, images[args.index : args.index + 1], args.layer)
    except ValueError as error:
        raise WemoeError(str(error)) from None
    short = [name.split("_")[-1] for name in found.task_names]
    grid = "\n".join(" ".join(f"{short[i]:>9}" for i in row) for row in found.dominant_expert()[0].tolist())
    text = f"{task} image {args.index}, block {found.layer}: dominant expert per patch\n{grid}"
    return emit(args, text, {"view": "routing_patches", "zoo": args.zoo, "task": task, "index": args.index,
                             **found.to_dict()})


def command_cost(args: argparse.Namespace, bench: Workbench, adapt: Callable) -> dict[str, Any]:
    """Average accuracy against extra parameters and adaptation seconds, per model."""
    names = _names(args.methods)
    _merge_all(bench, names, args, adapt)
    data, heads = sample_data(bench.data(), args.view_samples, args.seed), bench.heads()
    models = bench.models(names)
    accuracy = pd.DataFrame.from_dict({n: with_average(accuracy_by_task(m, data, heads)) for n, m in models.items()},
                                      orient="index")
    table = cost_table(bench, accuracy)
    return emit(args, _frame(table), {"view": "cost", "zoo": args.zoo, "per_task": args.view_samples,
                                      "cost": table_to_dict(table)})


VIEWS = {
    "interference": (command_interference, "cosine similarity, sign conflicts and norms of the task vectors"),
    "cross_accuracy": (command_cross_accuracy, "each expert on every task; normalized accuracy of merges"),
    "sweep": (command_sweep, "task arithmetic and TIES accuracy per task for lambda 0..1"),
    "robustness": (command_robustness, "accuracy under the seven corruptions; how WEMoE's routing moves"),
    "routing_patches": (command_routing_patches, "one image's routing per patch in one layer"),
    "cost": (command_cost, "average accuracy against extra parameters and adaptation seconds"),
}


def add_view_commands(commands: Any, common: Callable[[argparse.ArgumentParser], None],
                      load: Callable[[argparse.Namespace], Workbench], adapt: Callable,
                      parse_params: Callable[[list[str]], dict]) -> None:
    """Add one subcommand per view to the CLI's subparsers; ``common`` adds the shared flags, ``load`` builds the
    workbench from the arguments, ``adapt(bench, name, args)`` adapts a merge as the flags say and
    ``parse_params`` reads ``--param`` (checked before any work)."""
    for name, (command, help_text) in VIEWS.items():
        sub = commands.add_parser(name, help=help_text)
        common(sub)
        sub.add_argument("--json", nargs="?", const="-", default=None,
                         help="print one JSON object instead of the table (or write it to the FILE given)")
        sub.add_argument("--view-samples", type=int, default=64,
                         help="test images per task the view scores (default 64; 0: all)")
        if name == "interference":
            sub.add_argument("--top-k", type=float, default=100.0,
                             help="percent of each task vector kept before counting sign conflicts (TIES: 20)")
        if name == "cross_accuracy":
            sub.add_argument("--normalized-methods", default="",
                             help="comma list of merges to show as % of the experts")
        if name == "sweep":
            sub.add_argument("--sweep-methods", default="task_arithmetic,ties", help="task_arithmetic and/or ties")
            sub.add_argument("--task-lambdas", default="",
                             help="also score one lambda per task, e.g. pocket_digits=0.5,pocket_shapes=0.2 "
                                  "(others: 0)")
        if name in ("robustness", "cost"):
            sub.add_argument("--methods", default="pretrained,task_arithmetic,ties,wemoe",
                             help="comma list of models (pretrained, experts, wemoe_oracle and method names)")
        if name == "robustness":
            sub.add_argument("--corruptions", default="all", help=f"all, or a comma list of {', '.join(CORRUPTIONS)}")
            sub.add_argument("--severity", type=int, default=3, help="corruption severity 1..5 (default 3)")
        if name == "routing_patches":
            sub.add_argument("--task", default=None, help="the task whose test image is shown (default: the first)")
            sub.add_argument("--index", type=int, default=0, help="which test image of the task")
            sub.add_argument("--layer", type=int, default=None, help="upscaled block (default: the last; -1 the last)")

        def run(args: argparse.Namespace, command: Callable = command) -> dict[str, Any]:
            if args.view_samples is not None and args.view_samples <= 0:
                args.view_samples = None
            args.parsed_params = parse_params(args.param)
            return command(args, load(args), adapt)

        sub.set_defaults(run=run)


