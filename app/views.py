"""What the page shows of library results as tables and images: the accuracy table (the best merge marked), the
top-k predictions of every model, the routing heatmap of one image, a tiny image made visible.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from app import figures
from app.inputs import AUTO_TASK

# the marked best merge: a translucent green under the theme's own text colour reads in light and dark mode
BEST_STYLE = "font-weight: bold; background-color: rgba(34, 160, 80, 0.32)"
REFERENCE_STYLE = "font-style: italic"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table as shown: a ``model`` column, then ``average``, then the tasks (short names), one decimal."""
    # the library's models load when a table is made, not when the page is built
    from wemoe.evaluation.evaluate import AVERAGE

    shown = table.round(1)
    tasks = [c for c in shown.columns if c != AVERAGE]
    shown = shown[[c for c in (AVERAGE, *tasks) if c in shown.columns]]
    shown = shown.rename(columns=dict(zip(tasks, figures.short_names(tasks), strict=True)))
    return shown.reset_index()


def style_table(table: pd.DataFrame) -> Any:
    """The accuracy table for display (:func:`display_table`): in each column the best *merge* in bold on green;
    the reference rows (pretrained, experts, oracle) in italics and never marked."""
    from wemoe.workbench.workbench import EXPERTS, ORACLE, PRETRAINED

    shown = display_table(table)
    numeric = [c for c in shown.columns if c != "model"]
    is_merge = ~shown["model"].isin([PRETRAINED, EXPERTS, ORACLE])

    def best_merge(column: pd.Series) -> list[str]:
        merges = column[is_merge]
        best = merges.max() if merges.notna().any() else None
        return [BEST_STYLE if best is not None and m and v == best else ""
                for v, m in zip(column, is_merge, strict=True)]

    def reference(row: pd.Series) -> list[str]:
        return ["" if is_merge[row.name] else REFERENCE_STYLE] * len(row)

    return (shown.style.format({c: "{:.1f}" for c in numeric}, na_rep="")
            .apply(reference, axis=1).apply(best_merge, subset=numeric, axis=0))


ACCURACY_LABEL, NORMALIZED_LABEL = "Accuracy (%)", "Normalized accuracy (% of each task's expert)"


def accuracy_view(session: Any, normalized: Any = False) -> Any:
    """The accuracy table of the session's last evaluation as measured, or ``normalized``: each task as percent of
    its expert (``wemoe.analysis.cross_accuracy.normalized_accuracy``; ``average`` the mean of those). Nothing evaluated
    yet: the table stays as it is."""
    import gradio as gr

    from app.inputs import flag
    from wemoe.analysis.cross_accuracy import normalized_accuracy
    from wemoe.workbench.workbench import EXPERTS

    normalized = flag(normalized, "Normalized accuracy")
    table = session.table
    if table is None:
        return gr.skip()
    if normalized:
        if EXPERTS not in table.index:
            raise gr.Error("Normalized accuracy divides by the experts' accuracy: evaluate again with the experts.")
        table = normalized_accuracy(table, table.loc[EXPERTS])
    return gr.Dataframe(style_table(table), label=NORMALIZED_LABEL if normalized else ACCURACY_LABEL)


def expert_columns(task_names: Sequence[str]) -> dict[str, str]:
    """The predictions table's column of each task's expert: ``expert <short task name>``."""
    return {t: f"expert {short}" for t, short in zip(task_names, figures.short_names(task_names), strict=True)}


def prediction_table(result: Any, task_names: Sequence[str]) -> pd.DataFrame:
    """Every model's top-k for one image (a ``wemoe.evaluation.predictions.ImageClassification``): a rank column, then
    the pretrained model, every merge and every expert, each cell ``class (p%)`` (``task: class`` under the joint
    head)."""
    shorts = dict(zip(task_names, figures.short_names(task_names), strict=True))
    experts = expert_columns(task_names)
    ranked = {**result.models, **{experts[t]: r for t, r in result.experts.items()}}

    def cell(label: str, task: str, probability: float) -> str:
        shown = label if result.task is not None else f"{shorts[task]}: {label}"
        return f"{shown} ({100 * probability:.1f}%)"

    columns = {name: [cell(*entry) for entry in zip(r.labels, r.tasks, r.probabilities, strict=True)]
               for name, r in ranked.items()}
    depth = max(len(v) for v in columns.values())
    padded = {k: v + [""] * (depth - len(v)) for k, v in columns.items()}
    return pd.DataFrame({"rank": list(range(1, depth + 1)), **padded})


def compact_columns(result: Any, bench: Any) -> list[str]:
    """The compact view's columns: the merged model (the WEMoE merge, else the latest; else pretrained) and the expert
    of the task used (else pretrained): what fits a phone."""
    expert = expert_columns(bench.task_names)[result.task] if result.task is not None else "pretrained"
    return list(dict.fromkeys([bench.shown_model(), expert]))


def image_heatmap(result: Any, task_names: Sequence[str]) -> Any:
    """The routing heatmap of one image (layers x experts), or a placeholder without a WEMoE merge.

    The figure is made once per routing and shared by every call that shows it (gradio only reads it): building a
    plotly figure took half of a cached classification's time on the server, 5.7 of 12 ms.
    """
    if result.routing is None:
        return _no_routing()
    routing = result.routing.detach().cpu().contiguous().numpy()
    return _heatmap_of(routing.tobytes(), routing.shape, str(routing.dtype), tuple(result.layers), tuple(task_names),
                       str(result.routed_by))


@functools.lru_cache(maxsize=1)
def _no_routing() -> Any:
    """The placeholder shown before a WEMoE merge, built once (each classification without one built it anew)."""
    return figures.empty_figure("Merge with WEMoE to see this image's routing per layer.")


@functools.lru_cache(maxsize=512)
def _heatmap_of(values: bytes, shape: tuple[int, ...], dtype: str, layers: tuple[int, ...], tasks: tuple[str, ...],
                routed_by: str) -> Any:
    routing = np.frombuffer(values, dtype=dtype).reshape(shape)
    return figures.routing_heatmap(routing, list(layers), list(tasks), f"Routing of this image ({routed_by})")


def enlarged(image: Image.Image, side: int = 192) -> Image.Image:
    """A tiny image scaled up (nearest neighbour, pixels stay sharp) so it is visible on the page."""
    factor = side // max(image.size)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


def task_choices(session: Any) -> list[tuple[str, str]]:
    """Choices of the 'task (head)' dropdown as (shown, value): the routers' guess, then every task of the session's
    zoo in plain words (``clothing``), its value the task's name (``pocket_clothing``) that the handlers take."""
    from app.lesson import plain  # here: app.lesson imports this module (through app.handlers)

    tasks = session.bench.task_names if session.bench is not None else []
    return [(AUTO_TASK, AUTO_TASK), *((plain(task), task) for task in tasks)]


def adaptive_merges(session: Any) -> list[str]:
    """Names of the session's merges that can be adapted (WEMoE, AdaMerging)."""
    return [] if session.bench is None else [n for n, r in session.bench.merges.items() if r.adaptive]


def shown_predictions(table: pd.DataFrame | None, compact_columns: Sequence[str], show_all: bool) -> pd.DataFrame:
    """The predictions table as shown: every model (``show_all``) or only ``compact_columns`` (empty: nothing yet)."""
    if table is None:
        return pd.DataFrame({"rank": []})
    if show_all:
        return table
    return table[list(dict.fromkeys(c for c in compact_columns if c in table.columns))]
