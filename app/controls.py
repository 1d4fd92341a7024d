"""Controls built from declarations: one per merge-method parameter (``wemoe.methods``) and one per adaptation
setting (``wemoe.adaptation.adapt.SETTINGS``), so a default, range, choice or help text is written once, in the
library."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.inputs import ADAPT_LABELS, adapt_setting
from wemoe.params import Param

CHOICE_LABELS = {"entropy": "entropy (the paper's)",
                 "im": "IM: entropy minus the entropy of the mean prediction (variant)",
                 "test": "the scored test images (as in the paper: transductive)",
                 "heldout": "held-out images, never scored (honest)"}
"""How the choices of the loss and of the adaptation images read on the page (others show their own name)."""


def param_control(method: str, param: Param) -> gr.components.Component:
    """A UI control for one declared method parameter (slider, dropdown, checkbox, number or text box)."""
    label = f"{method}.{param.name}"
    if param.choices is not None:
        return gr.Dropdown(choices=list(param.choices), value=param.default, label=label, info=param.help)
    if param.type is bool:
        return gr.Checkbox(value=bool(param.default), label=label, info=param.help)
    if param.type in (int, float) and param.min is not None and param.max is not None:
        step = 1 if param.type is int else (0.05 if param.max - param.min <= 5 else 1.0)
        return gr.Slider(param.min, param.max, value=param.default, step=step, label=label, info=param.help)
    if param.type in (int, float):
        return gr.Number(value=param.default, label=label, info=param.help, precision=0 if param.type is int else None)
    return gr.Textbox(value=str(param.default), label=label, info=param.help)


def setting_control(name: str, value: Any = None, note: str = "", **options: Any) -> gr.components.Component:
    """The control of adaptation setting ``name``: its page label (``app.inputs.ADAPT_LABELS``), its declared range or
    choices and help text (with ``note`` after it), and ``value`` (None: the declared default).

    Whole numbers with a range are sliders, other numbers number boxes, choices radio buttons.
    """
    setting = adapt_setting(name)
    value = setting.default if value is None else value
    common = {"label": ADAPT_LABELS[name], "info": f"{setting.help} {note}".strip(), **options}
    if setting.choices is not None:
        choices = [(CHOICE_LABELS.get(c, str(c)), c) for c in setting.choices]
        return gr.Radio(choices, value=value, **common)
    if setting.type is int and setting.min is not None and setting.max is not None:
        return gr.Slider(setting.min, setting.max, value=value, step=1, **common)
    return gr.Number(value=value, minimum=setting.min, maximum=setting.max,
                     precision=0 if setting.type is int else None, **common)


def setting_default(name: str) -> Any:
    """The declared default of adaptation setting ``name`` (what an API call that leaves it out gets)."""
    return adapt_setting(name).default
