"""The command line: the app's work, headless, through the same registry and code.

    python -m wemoe methods
    python -m wemoe table --zoo pocket --methods pretrained,experts,task_arithmetic,ties,adamerging,wemoe \\
        --adapt-steps 300 --json results.json [--param wemoe.lambda=0.3] [--lambda 0.3] [--samples N]
    python -m wemoe rerun results.json    # repeat the table a results JSON records and compare, cell by cell
    python -m wemoe merge --zoo pocket --method wemoe --adapt-steps 300 --out wemoe.safetensors
    python -m wemoe table ... --devices 4 [--accelerator cuda] [--strategy ddp]   # adapt on 4 GPUs (Fabric DDP)
    python -m wemoe calibrate-kernel      # where the fused CPU kernel pays on this machine (about two minutes)
    python -m wemoe scaling --zoo pocket --counts 2,4,8 --subsets 3 --json out.json   # accuracy vs number of tasks
    python -m wemoe zoos                  # every zoo: tasks, download size, memory per method (estimates)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from typing import Any

import torch

from wemoe import loading  # loading.load_zoo looked up at each call (tests replace it)
from wemoe.adaptation.adapt import SETTINGS as ADAPT_SETTINGS
from wemoe.adaptation.adapt import resolve_settings
from wemoe.adaptation.distributed import (
    ACCELERATORS,
    STRATEGIES,
    check_devices,
    finish_fabric,
    is_main_process,
    start_fabric,
)
from wemoe.analysis.scaling_cli import add_scaling_command
from wemoe.analysis.sweep import best_task_arithmetic
from wemoe.analysis.views_cli import add_view_commands
from wemoe.errors import WemoeError
from wemoe.evaluation.evaluate import needs_task
from wemoe.evaluation.export import save_model
from wemoe.evaluation.report import build_report, compare_tables, run_record
from wemoe.methods import get_method, list_methods
from wemoe.methods.matrix_merge import attention_layout
from wemoe.workbench.workbench import EXPERTS, ORACLE, PRETRAINED, Workbench
from wemoe.zoo.presets import PRESETS
from wemoe.zoo.zoos_cli import add_zoos_command

ADAPT_FLAGS = {
    "steps": ("--adapt-steps", "adapt_steps"),
    "lr": ("--adapt-lr", "adapt_lr"),
    "per_task": ("--per-task", "per_task"),
    "loss": ("--adapt-loss", "adapt_loss"),
    "seed": ("--seed", "seed"),  # also the seed of the test images drawn with --samples
    "split": ("--adapt-split", "adapt_split"),  # heldout: the workbench keeps adaptation images out of the scored ones
}
"""The CLI flag and argparse name of every adaptation setting."""


def adapt_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The adaptation settings given on the command line, checked against their declarations (MethodError)."""
    return resolve_settings({name: getattr(args, dest) for name, (_, dest) in ADAPT_FLAGS.items()})


def parse_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``["wemoe.lambda=0.3", ...]`` -> ``{"wemoe": {"lambda": "0.3"}}`` (values are parsed by each method)."""
    params: dict[str, dict[str, str]] = defaultdict(dict)
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise WemoeError(f"--param {item!r} must look like method.name=value, e.g. wemoe.lambda=0.3.")
        get_method(method)  # unknown method -> error listing the known ones
        params[method][name] = value
    return dict(params)


def load_workbench(spec: str, samples: int | None, seed: int, adapt_split: str = "test",
                   tasks: str | None = None) -> Workbench:
    """A Workbench on the zoo named by ``spec`` (``pocket``, a preset name, ...), adapting on ``adapt_split``; with
    ``tasks`` (a comma list) on those experts only."""
    bench = Workbench(loading.load_zoo(spec), samples=samples, seed=seed, adapt_split=adapt_split)
    chosen = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    return bench.with_tasks(chosen) if chosen else bench


def _log(message: str) -> None:
    if is_main_process():  # with --devices N only rank 0 speaks
        print(message, file=sys.stderr, flush=True)


def start_devices(args: argparse.Namespace) -> Any | None:
    """With ``--devices N`` (N > 1) a launched Lightning Fabric (this process is rank 0 and starts ranks 1..N-1,
    which run the same command), kept as ``args.fabric``; None for one device. Checked before any work."""
    check_devices(args.devices, args.accelerator, args.strategy, args.per_task)
    args.fabric = start_fabric(args.devices, args.accelerator, args.strategy) if args.devices > 1 else None
    return args.fabric


def load_on_every_rank(args: argparse.Namespace, fabric: Any | None) -> Workbench:
    """The workbench; under Fabric rank 0 loads the zoo, its images and heads first (downloads, head cache) and
    the other ranks then read them."""
    if fabric is None:
        return load_workbench(args.zoo, args.samples, args.seed, args.adapt_split, args.tasks)
    with fabric.rank_zero_first():
        bench = load_workbench(args.zoo, args.samples, args.seed, args.adapt_split, args.tasks)
        bench.heads(), bench.data()
    return bench


def run_adaptation(bench: Workbench, name: str, args: argparse.Namespace, fabric: Any | None = None) -> None:
    """Adapt a merge as the arguments say (on every rank of ``fabric`` when given), logging every 50 steps."""
    settings = adapt_settings(args)
    steps = settings["steps"]
    device = None if fabric is not None or args.accelerator == "auto" else args.accelerator
    for record in bench.adapt(name, **settings, device=device, fabric=fabric):
        if record.step % 50 == 0 or record.step == steps:
            _log(f"  {name} step {record.step}/{steps}: {settings['loss']} loss {record.loss:.4f} "
                 f"({record.elapsed:.1f} s)")


def command_table(args: argparse.Namespace) -> dict[str, Any]:
    """Merge, adapt and evaluate the requested methods; print the table and return the JSON report."""
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    params = parse_params(args.param)
    adapt_settings(args)  # fail before any work
    for name in names:
        if name not in {PRETRAINED, EXPERTS, ORACLE}:
            get_method(name).resolve(params.get(name))  # fail before any work
    fabric = start_devices(args)
    bench = load_on_every_rank(args, fabric)
    report_params: dict[str, dict[str, Any]] = {}
    adaptations: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in {PRETRAINED, EXPERTS, ORACLE}:
            continue
        if not is_main_process() and not get_method(name).adaptive:
            continue  # the other ranks only help adapt
        _log(f"merging {name} ...")
        if name == "task_arithmetic" and args.lambda_ is None and "lambda" not in params.get(name, {}):
            report_params[name] = best_task_arithmetic(bench)
            continue
        method_params = dict(params.get(name, {}))
        if name == "task_arithmetic" and args.lambda_ is not None:
            method_params.setdefault("lambda", args.lambda_)
        result = bench.merge(name, method_params)
        report_params[name] = result.params
        if get_method(name).adaptive and args.adapt_steps > 0:
            run_adaptation(bench, name, args, fabric)
            adaptations[name] = adapt_settings(args)  # by their declared names, apart from the method's own
    if not is_main_process():
        return {}  # rank 0 evaluates, prints and writes
    if ORACLE in names and "wemoe" not in bench.merges:
        bench.merge("wemoe", params.get("wemoe"))
    _log("evaluating ...")
    table = bench.evaluate(names, progress=lambda f, msg: _log(f"  {msg}"))
    merges = {name: bench.merges[name] for name in names if name in bench.merges}
    given = [name for name, merge in merges.items() if needs_task(merge.model)]  # e.g. EMR: each task its own model
    print(table.rename(index={name: f"{name} (task given)" for name in given}).round(2).to_string())
    report = build_report(args.zoo, bench.task_names, table, merges, report_params,
                          run_record(args.argv, table_seeds(args, merges, adaptations),
                                     source_layout=bench.zoo.source_layout))
    for name, merge in merges.items():
        if "attention" in merge.params:  # the attention input its per-matrix rule saw: split or fused
            report["methods"][name]["attention"] = attention_layout(bench.zoo, merge.params["attention"])
    for name in given:
        report["methods"][name]["task_given"] = True
    for name, settings in adaptations.items():
        report["methods"][name]["adaptation"] = settings
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        _log(f"wrote {args.json}")
    return report


def table_seeds(args: argparse.Namespace, merges: dict[str, Any], adaptations: dict[str, Any]) -> dict[str, int]:
    """Every seed that shaped a table, each under its own name: ``test_images`` (the draw of ``--samples``),
    ``heldout_split`` (``--adapt-split heldout``), ``adaptation_images`` (the images of each adaptation step), all three
    ``--seed``; and each merge's own seeds as ``<merge>.<parameter>`` (``wemoe.seed``: the routers' initialisation)."""
    seeds = {}
    if args.samples is not None:
        seeds["test_images"] = args.seed
    if args.adapt_split == "heldout":
        seeds["heldout_split"] = args.seed
    if adaptations:
        seeds["adaptation_images"] = args.seed
    for name, merge in merges.items():
        seeds.update({f"{name}.{key}": value for key, value in merge.params.items() if "seed" in key})
    return seeds


def command_rerun(args: argparse.Namespace) -> int:
    """Run the table command a results JSON records again and compare the tables cell by cell (1 when they differ)."""
    try:
        with open(args.results) as handle:
            recorded = json.load(handle)
        argv = list(recorded["run"]["argv"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WemoeError(f"{args.results} is not a results JSON that records its command "
                         f"(python -m wemoe table ... --json writes one): {error}") from None
    if not argv or argv[0] != "table":
        raise WemoeError(f"{args.results} records {' '.join(argv[:1]) or 'no'} command; rerun repeats tables only.")
    again_argv = [a for i, a in enumerate(argv) if a != "--json" and not a.startswith("--json=")
                  and not (i > 0 and argv[i - 1] == "--json")]
    if args.json:
        again_argv += ["--json", args.json]
    again = build_parser().parse_args(again_argv)
    again.argv = again_argv  # the rerun's JSON records its own command
    _log(f"rerunning: {recorded['run']['command']}")
    machine = run_record([], {})
    for key in ("cpu", "threads", "wemoe_version", "torch_version"):
        now = machine[key]
        if recorded["run"].get(key) != now:
            _log(f"note: recorded with {key} {recorded['run'].get(key)!r}, now {now!r}: "
                 "the numbers may differ in the last digits")
    try:
        report = command_table(again)
    finally:
        args.fabric = getattr(again, "fabric", None)  # main finishes it
    differences = compare_tables(recorded, report)
    print("the same table, cell for cell" if not differences else
          f"{len(differences)} cells differ:\n" + "\n".join(f"  {line}" for line in differences))
    return 1 if differences else 0


def command_merge(args: argparse.Namespace) -> None:
    """Merge (and adapt) one method and save it in the engine's formats."""
    params = parse_params(args.param).get(args.method, {})
    get_method(args.method).resolve(params)
    adapt_settings(args)  # fail before any work
    fabric = start_devices(args)
    bench = load_on_every_rank(args, fabric)
    result = bench.merge(args.method, params)
    if get_method(args.method).adaptive and args.adapt_steps > 0:
        run_adaptation(bench, args.method, args, fabric)
    if not is_main_process():
        return
    if str(args.out).endswith(".safetensors"):
        save_model(bench.zoo.clip, result.model, args.out)
        _log(f"wrote {args.out}")
        return
    from wemoe.evaluation.card import export_folder

    table = bench.evaluate([PRETRAINED, EXPERTS, args.method])
    report = build_report(args.zoo, bench.task_names, table, bench.merges)
    adaptation = adapt_settings(args) if result.adapt_steps else None
    command = "python -m wemoe " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    export_folder(args.out, bench, args.method, table, report, adaptation, command)
    _log(f"wrote {args.out}/ (model.safetensors, merge_config.json, results.json, README.md)")


def command_push(args: argparse.Namespace) -> None:
    """Push an exported merge folder to the Hub (or, with --dry-run, show what would be pushed)."""
    from wemoe.evaluation.push import dry_run, push

    if args.dry_run:
        print(dry_run(args.source, args.repo))
        return
    print(f"pushed to {push(args.source, args.repo, private=args.private)}")


def _whole_numbers(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``; argparse reports anything else as a bad value."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def command_calibrate_kernel(args: argparse.Namespace) -> None:
    """Measure where the fused kernel pays on this CPU and store the policy (``wemoe.moe.kernel_policy``)."""
    from wemoe.moe import kernel_calibration, kernel_policy  # only this command needs them

    if args.threads is not None:
        if args.threads < 1:
            raise WemoeError(f"--threads needs a whole number >= 1, got {args.threads}.")
        torch.set_num_threads(args.threads)
    policy = kernel_calibration.calibrate(args.batches, args.tokens, args.experts, args.rows, args.width, args.runs,
                                          progress=_log)
    if args.no_write:
        print(policy.to_json())
        return
    path = kernel_policy.write(policy)
    wins = sum(cell.kernel_wins for cell in policy.cells)
    print(f"kernel faster in {wins} of {len(policy.cells)} WEMoE cells; policy written to {path}")


def command_methods(_: argparse.Namespace) -> None:
    """List every registered method and its parameters."""
    for name in list_methods():
        method = get_method(name)
        print(f"{name}: {method.description} ({method.reference_url})")
        for p in method.params:
            allowed = f" choices {list(p.choices)}" if p.choices else f" range [{p.min}, {p.max}]"
            print(f"    {name}.{p.name} ({p.type.__name__}, default {p.default!r},{allowed}): {p.help}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m wemoe``."""
    parser = argparse.ArgumentParser(prog="python -m wemoe", description="Merge CLIP experts: tables, merges, methods.")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--zoo", default="pocket",
                         help=f"pocket or pocket-20 (offline), or a hub preset: {', '.join(PRESETS)}")
        sub.add_argument("--tasks", default=None,
                         help="merge only these experts, a comma list of task names (at least two; default: all)")
        sub.add_argument("--param", action="append", default=[], help="method parameter, e.g. wemoe.lambda=0.3")
        # declared once in wemoe.adaptation.adapt; checked by resolve_settings before any work
        for setting in ADAPT_SETTINGS:
            flag, dest = ADAPT_FLAGS[setting.name]
            allowed = f"one of {list(setting.choices)}" if setting.choices else f"{setting.min}..{setting.max}"
            sub.add_argument(flag, dest=dest, type=setting.type, default=setting.default,
                             help=f"{setting.help} ({allowed}; default {setting.default})")
        sub.add_argument("--samples", type=int, default=None, help="limit the test images per task")
        sub.add_argument("--devices", type=int, default=1,
                         help="adapt on N devices, one process each (Lightning Fabric DDP); default 1")
        sub.add_argument("--accelerator", choices=ACCELERATORS, default="auto",
                         help="cpu or cuda (default auto: cuda when there is a GPU)")
        sub.add_argument("--strategy", choices=STRATEGIES, default="ddp", help="how N devices share the work")

    table = commands.add_parser("table", help="accuracy table of pretrained, experts and merges")
    common(table)
    table.add_argument("--methods", default="pretrained,experts,task_arithmetic",
                       help=f"comma list of {PRETRAINED}, {EXPERTS}, {ORACLE} and method names: "
                            f"{', '.join(list_methods())}")
    table.add_argument("--lambda", dest="lambda_", type=float, default=None,
                       help="task arithmetic's lambda (default: best of a sweep over 0.1..1.0)")
    table.add_argument("--json", help="write the results as JSON here")
    table.set_defaults(run=command_table)

    merge = commands.add_parser("merge", help="merge (and adapt) one method and save it as safetensors")
    common(merge)
    merge.add_argument("--method", required=True, help=", ".join(list_methods()))
    merge.add_argument("--out", required=True,
                       help="a .safetensors file, or a folder: the weights with their config, results and model card")
    merge.set_defaults(run=command_merge)

    push = commands.add_parser("push", help="push an exported merge folder to the Hugging Face Hub")
    push.add_argument("--from", dest="source", required=True, help="a folder written by merge --out FOLDER")
    push.add_argument("--repo", required=True, help="the model repo, user/name")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--dry-run", action="store_true", help="list the files and print the card; push nothing")
    push.set_defaults(run=command_push)

    calibrate = commands.add_parser("calibrate-kernel", help="measure where the fused CPU kernel pays on this machine")
    for flag, default, help_text in (("--batches", "1,4,16,64", "samples per batch"),
                                     ("--tokens", "50,197", "tokens per sample (ViT-B/32: 50, ViT-B/16: 197)"),
                                     ("--experts", "2,8,16", "experts (at most 16)"),
                                     ("--rows", "50,200,800,3200", "rows of the compressed experts' GEMM")):
        calibrate.add_argument(flag, type=_whole_numbers, default=_whole_numbers(default),
                               help=f"{help_text}, comma-separated (default {default})")
    calibrate.add_argument("--width", type=int, default=768, help="token width; the MLP is width -> 4 width -> width")
    calibrate.add_argument("--runs", type=int, default=3, help="timed rounds per cell (median; default 3)")
    calibrate.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current count)")
    calibrate.add_argument("--no-write", action="store_true", help="print the policy as JSON instead of storing it")
    calibrate.set_defaults(run=command_calibrate_kernel)

    rerun = commands.add_parser("rerun", help="repeat the table a results JSON records and compare, cell by cell")
    rerun.add_argument("results", help="a JSON written by python -m wemoe table --json")
    rerun.add_argument("--json", default=None, help="write the rerun's results JSON here (default: nowhere)")
    rerun.set_defaults(run=command_rerun)

    methods = commands.add_parser("methods", help="list merge methods and their parameters")
    methods.set_defaults(run=command_methods)
    add_view_commands(commands, common, lambda args: load_on_every_rank(args, None),
                      lambda bench, name, args: run_adaptation(bench, name, args), parse_params)
    add_scaling_command(commands, load_workbench, parse_params)
    add_zoos_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear line and exit with status 2."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the model card's "make it again" repeats
    failed = True
    try:
        status = args.run(args)
        failed = False
        if isinstance(status, int):  # a command's own exit status (rerun: 1 when the tables differ)
            return status
    except WemoeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if getattr(args, "fabric", None) is not None:
            finish_fabric(args.fabric, failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
