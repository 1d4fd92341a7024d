"""The results report (JSON-ready dict) of an accuracy table: the format of ``python -m wemoe table --json``.

    {"zoo": ..., "tasks": [...], "samples_per_task": {...},
     "methods": {"<model>": {"average": <percent>, "per_task": {"<task>": <percent>}, "params": {...},
                             "adapt_steps": <int>, "adapt_seconds": <float>}}}

``<model>`` is a row of the table: ``pretrained``, ``experts``, ``wemoe_oracle`` or a merge's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

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
) -> dict[str, Any]:
    """The report of ``table`` (rows: models; columns: tasks + average, percent).

    ``merges`` maps a row name to its ``wemoe.workbench.workbench.MergeResult`` (for params and adaptation figures);
    ``params`` overrides a row's reported params (e.g. task arithmetic's lambda sweep). Missing cells are null.
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
    return {
        "zoo": zoo,
        "tasks": list(tasks),
        "samples_per_task": dict(table.attrs.get("samples_per_task", {})),
        "methods": methods,
    }
