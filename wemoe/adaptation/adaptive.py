"""The contract of an adaptive merge's model, written once and asked one way.

An adaptive method (``MergeMethod.adaptive = True``: WEMoE, AdaMerging) returns an ``nn.Module`` mapping images to
features that offers three things, and every caller (adaptation, export, the oracle, the app) asks for them here:

- **trainable parameters**: exactly the parameters with ``requires_grad`` (routers, merging coefficients); they are
  what :func:`wemoe.adaptation.adapt.adapt` trains, and a model without any has nothing left to adapt;
- **a form for export**: a model with *routing* is saved in its own format (``wemoe.evaluation.export.save_wemoe``,
  rebuilt from its ``WEMoEConfig``); any other model gives a plain open_clip image tower, through its
  ``static_tower()`` method if it has one (AdaMerging: the current merged weights) or as itself (a static merge);
- **routing or none**: :func:`routed_layers` gives the per-sample routed MLP layers by block index, empty for a
  model that does not route (AdaMerging, every static merge).
"""

from __future__ import annotations

from torch import nn

from wemoe.moe.layer import WeightEnsemblingMLP, moe_layers


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters adaptation trains (those that require grad)."""
    return [p for p in model.parameters() if p.requires_grad]


def routed_layers(model: nn.Module) -> dict[int, WeightEnsemblingMLP]:
    """The model's routed (WEMoE) MLP layers by block index; empty when it does not route."""
    return moe_layers(model)


def routes(model: nn.Module) -> bool:
    """Whether the model routes each image through its own mixture of the experts (a WEMoE model)."""
    return bool(routed_layers(model))


def static_form(model: nn.Module) -> nn.Module:
    """A plain open_clip image tower equal to ``model`` now; a routed model has none (save it with save_wemoe)."""
    if routes(model):
        raise ValueError("A routed (WEMoE) model has no static form: save it with wemoe.evaluation.export.save_wemoe.")
    return model.static_tower() if hasattr(model, "static_tower") else model
