"""Accuracy against the number of tasks on the command line (``wemoe.analysis.scaling``):

    python -m wemoe scaling --zoo pocket --methods task_arithmetic,ties,tsv_m,iso_cts,wemoe --counts 2,4,8 \\
        --subsets 3 [--samples N] [--steps 300] [--seed 0] [--param ties.top_k=10] --json out.json

Prints each method's mean normalized accuracy per count with its spread; ``--json`` writes the whole result (every
subset's tasks and scores, the settings and how to run it again: ``"run"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from wemoe.adaptation.adapt import SETTINGS as ADAPT_SETTINGS
from wemoe.adaptation.adapt import resolve_settings
from wemoe.analysis.scaling import accuracy_by_task_count, check_counts, check_methods, check_subsets
from wemoe.errors import WemoeError
from wemoe.evaluation.report import run_record
from wemoe.workbench.workbench import Workbench

DEFAULT_METHODS = "task_arithmetic,ties,tsv_m,iso_cts,wemoe"
ADAPT_FLAGS = {"steps": ("--steps", "--adapt-steps"), "lr": ("--adapt-lr",), "per_task": ("--per-task",),
               "loss": ("--adapt-loss",), "split": ("--adapt-split",)}
"""The flags of the adaptation settings (``--seed`` seeds the subsets, the test images and the adaptation images)."""


def parse_counts(text: str) -> list[int]:
    """``"2,4,8"`` -> ``[2, 4, 8]``, or a WemoeError naming what is not a whole number."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise WemoeError(f"--counts takes whole numbers separated by commas (e.g. 2,4,8), got {text!r}.") from None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def summary_text(report: dict[str, Any]) -> str:
    """The summary as a table: a row per method, a column per count, ``mean ± std (min..max)``."""
    counts = [str(c) for c in report["counts"]]
    rows = [["method", *(f"{c} tasks" for c in counts)]]
    for method, by_count in report["summary"].items():
        rows.append([method, *(f"{s['mean']:.1f} ± {s['std']:.1f} ({s['min']:.1f}..{s['max']:.1f})"
                               for s in (by_count[c] for c in counts))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "normalized accuracy (% of the experts), mean ± std (min..max) over the subsets:\n" + "\n".join(lines)


def command_scaling(args: argparse.Namespace, load: Callable[..., Workbench],
                    parse_params: Callable[[list[str]], dict]) -> dict[str, Any]:
    """Check every value, load the zoo, score the subsets, print the summary and write ``--json``."""
    methods = check_methods(_names(args.methods))
    counts = parse_counts(args.counts)
    params = parse_params(args.param)
    settings = resolve_settings({name: getattr(args, name) for name in ADAPT_FLAGS} | {"seed": args.seed})
    check_counts(counts)  # what needs no zoo is refused before loading it; more tasks than the zoo's after
    check_subsets(args.subsets)
    start = time.perf_counter()
    bench = load(args.zoo, args.samples, args.seed, settings["split"])
    result = accuracy_by_task_count(bench, methods, counts, args.subsets, args.seed, params, settings,
                                    progress=lambda _, message: print(f"  {message}", file=sys.stderr, flush=True))
    report = {"zoo": args.zoo, "samples_per_task": args.samples, **result.to_dict(),
              "seconds": round(time.perf_counter() - start, 1)}
    seeds = {"subsets": args.seed, "test_images": args.seed, "adaptation_images": args.seed}
    report["run"] = run_record(getattr(args, "argv", None) or sys.argv[1:], seeds)
    print(summary_text(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return report


def add_scaling_command(commands: Any, load: Callable[..., Workbench],
                        parse_params: Callable[[list[str]], dict]) -> None:
    """Add ``scaling`` to the CLI's subparsers; ``load(zoo, samples, seed, adapt_split)`` gives the workbench and
    ``parse_params`` reads ``--param``."""
    sub = commands.add_parser("scaling", help="normalized accuracy of each method against the number of tasks merged")
    sub.add_argument("--zoo", default="pocket", help="pocket or pocket-20 (offline), or a hub preset")
    sub.add_argument("--methods", default=DEFAULT_METHODS,
                     help=f"comma list of merge methods (default {DEFAULT_METHODS})")
    sub.add_argument("--counts", required=True, help="numbers of tasks to merge, e.g. 2,4,8 (each from 2 to the zoo's)")
    sub.add_argument("--subsets", type=int, default=3, help="random subsets per count (default 3)")
    sub.add_argument("--samples", type=int, default=None, help="test images per task (default: all)")
    sub.add_argument("--seed", type=int, default=0,
                     help="seed of the subsets, the test images drawn with --samples and the adaptation images")
    sub.add_argument("--param", action="append", default=[], help="method parameter, e.g. ties.top_k=10")
    for setting in ADAPT_SETTINGS:
        if setting.name in ADAPT_FLAGS:
            allowed = f"one of {list(setting.choices)}" if setting.choices else f"{setting.min}..{setting.max}"
            sub.add_argument(*ADAPT_FLAGS[setting.name], dest=setting.name, type=setting.type, default=setting.default,
                             help=f"{setting.help} ({allowed}; default {setting.default})")
    sub.add_argument("--json", default=None, help="write the result as JSON here")
    sub.set_defaults(run=lambda args: command_scaling(args, load, parse_params))
