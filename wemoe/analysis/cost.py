"""Cost next to accuracy: for every model, its average accuracy, the parameters it adds to one CLIP image tower,
and the seconds spent merging and adapting it (``is WEMoE worth it?``).

Extra parameters count every floating-point tensor the model holds (parameters and buffers: WEMoE keeps every task
vector of its MoE MLPs as frozen buffers) beyond the pretrained tower's own; ``experts`` is one tower per task.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from wemoe.evaluation.evaluate import AVERAGE, Model
from wemoe.workbench.workbench import Workbench


def stored_floats(*modules: nn.Module) -> int:
    """Floating-point numbers held by the parameters and buffers of ``modules`` (a tensor shared by several, as the
    oracle's per-task views of one WEMoE tower share theirs, counted once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if torch.is_floating_point(tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel()
    return total


def model_floats(model: Model) -> int:
    """Floats held by a model: one tower, or one tower per task (the experts, the oracle)."""
    return stored_floats(*model.values()) if isinstance(model, Mapping) else stored_floats(model)


def cost_table(bench: Workbench, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per model of ``accuracy`` (an accuracy table's rows): average accuracy, parameters, extra parameters over one
    pretrained tower (absolute and as a multiple of it), merge seconds, adaptation steps and seconds."""
    base = stored_floats(bench.zoo.visual)
    models = bench.models(list(accuracy.index))
    rows = {}
    for name, model in models.items():
        floats = model_floats(model)
        made = bench.merges.get(name)
        rows[name] = {
            "average_accuracy": float(accuracy.loc[name, AVERAGE]),
            "parameters": floats,
            "extra_parameters": floats - base,
            "extra_vs_one_model": (floats - base) / base,
            "merge_seconds": made.merge_seconds if made is not None else 0.0,
            "adapt_steps": made.adapt_steps if made is not None else 0,
            "adapt_seconds": made.adapt_seconds if made is not None else 0.0,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table
