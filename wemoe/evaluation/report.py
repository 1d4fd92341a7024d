"""The results report (JSON-ready dict) of an accuracy table: the format of ``python -m wemoe table --json``.

    {"zoo": ..., "tasks": [...], "samples_per_task": {...},
     "methods": {"<model>": {"average": <percent>, "per_task": {"<task>": <percent>}, "params": {...},
                             "adapt_steps": <int>, "adapt_seconds": <float>}}}

``<model>`` is a row of the table: ``pretrained``, ``experts``, ``wemoe_oracle`` or a merge's name. The CLI adds
``"run"`` (:func:`run_record`: the command that makes the table again, every seed under its own name, the library
and torch versions, the CPU and threads) and, to each adapted row, ``"adaptation"`` (its settings by their declared
names); ``python -m wemoe rerun results.json`` repeats the command and compares (:func:`compare_tables`).
"""

from __future__ import annotations

import math
import platform
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

import wemoe
from wemoe.evaluation.evaluate import AVERAGE


def _percent(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else round(number, 2)


def build_report(
    zoo: str,
    tasks: Sequence[str],
    table: pd.DataFrame,
    merges: Mapping[str, Any] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of ``table`` (rows: models; columns: tasks + average, percent).

    ``merges`` maps a row name to its ``wemoe.workbench.workbench.MergeResult`` (for params and adaptation figures);
    ``params`` overrides a row's reported params (e.g. task arithmetic's lambda sweep); ``run`` (a
    :func:`run_record`) is written under ``"run"``. Missing cells are null.
    """
    merges = merges or {}
    params = params or {}
    methods: dict[str, Any] = {}
    for name in table.index:
        row = table.loc[name]
        merge = merges.get(name)
        methods[str(name)] = {
            "average": _percent(row[AVERAGE]) if AVERAGE in row else None,
            "per_task": {t: _percent(row[t]) if t in row else None for t in tasks},
            "params": dict(params.get(name, merge.params if merge is not None else {})),
            "adapt_steps": int(merge.adapt_steps) if merge is not None else 0,
            "adapt_seconds": round(float(merge.adapt_seconds), 2) if merge is not None else 0.0,
        }
    report = {
        "zoo": zoo,
        "tasks": list(tasks),
        "samples_per_task": dict(table.attrs.get("samples_per_task", {})),
        "methods": methods,
    }
    if run is not None:
        report["run"] = dict(run)
    return report


def cpu_model() -> str:
    """``lscpu``'s model name (or the platform's processor string): bit-for-bit reruns hold on the same CPU."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def run_record(argv: Sequence[str], seeds: Mapping[str, Any], **more: Any) -> dict[str, Any]:
    """How a table was made: ``command`` (a shell line) and ``argv`` (what ``rerun`` repeats), ``seeds`` (every seed
    under its own name), the ``wemoe_version``, ``torch_version``, ``cpu`` and torch ``threads``, and ``more``."""
    return {"command": "python -m wemoe " + shlex.join(argv), "argv": list(argv), "seeds": dict(seeds),
            "wemoe_version": wemoe.__version__, "torch_version": torch.__version__, "cpu": cpu_model(),
            "threads": torch.get_num_threads(), **more}


def compare_tables(recorded: Mapping[str, Any], again: Mapping[str, Any]) -> list[str]:
    """Every cell (model x task, and the averages) where two reports differ, as lines; empty when equal."""
    lines = []
    if recorded.get("samples_per_task") != again.get("samples_per_task"):
        lines.append(f"samples per task: {recorded.get('samples_per_task')} then {again.get('samples_per_task')}")
    for name in sorted(set(recorded.get("methods", {})) | set(again.get("methods", {}))):
        first, second = recorded.get("methods", {}).get(name), again.get("methods", {}).get(name)
        if first is None or second is None:
            lines.append(f"{name}: only in the {'rerun' if first is None else 'recorded table'}")
            continue
        for task, value in {**first["per_task"], "average": first["average"]}.items():
            other = second["average"] if task == "average" else second["per_task"].get(task)
            if value != other:
                lines.append(f"{name} {task}: {value} then {other}")
    return lines
