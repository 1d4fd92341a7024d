"""Accuracy relative to the experts: each expert on every task (cross-accuracy), and merged / expert per task.

- :func:`cross_accuracy`: an expert x task table; the diagonal is the ``experts`` row of the accuracy table, the
  rest shows how much each fine-tuning helps or hurts the other tasks (a low off-diagonal is the interference the
  merge must undo).
- :func:`normalized_accuracy`: an accuracy table divided, task by task, by the experts' accuracy (percent of the
  expert; FusionBench and the merging papers report it as "normalized accuracy").
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from wemoe.evaluation.evaluate import AVERAGE
from wemoe.evaluation.sample_eval import accuracy_by_task, with_average
from wemoe.tasks.images import TaskImages


def cross_accuracy(
    experts: Mapping[str, nn.Module], data: Mapping[str, TaskImages], heads: Mapping[str, torch.Tensor]
) -> pd.DataFrame:
    """Accuracy (percent) of every expert (rows) on every task (columns), plus each row's ``average``."""
    rows = {name: with_average(accuracy_by_task(tower, data, heads)) for name, tower in experts.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name, table.columns.name = "expert", "task"
    return table


def normalized_accuracy(table: pd.DataFrame, experts: Mapping[str, float] | pd.Series) -> pd.DataFrame:
    """``table``'s accuracies as percent of the experts' accuracy per task; ``average`` is the mean of the
    normalized tasks (not the ratio of the averages)."""
    tasks = [c for c in table.columns if c != AVERAGE]
    reference = pd.Series({t: float(experts[t]) for t in tasks})
    normalized = table[tasks].div(reference, axis=1) * 100.0
    normalized[AVERAGE] = normalized.mean(axis=1)
    normalized.attrs = dict(table.attrs)
    return normalized
