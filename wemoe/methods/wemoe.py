"""WEMoE: weight-ensembling MoE MLPs with per-sample routers (Tang et al., ICML 2024); the model is
wemoe/moe/layer.py. The ``lambda`` parameter is ``WEMoEConfig.lambda_`` there, the one lambda of the model: the
non-MLP weights' task-arithmetic coefficient and every router's starting weight."""

from torch import nn

from wemoe.errors import MethodError
from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import register
from wemoe.moe.layer import ANCHORS, TASK_ARITHMETIC, WEMoEConfig, upscale_to_wemoe
from wemoe.zoo.zoo import Zoo


def parse_blocks(text: str) -> list[int] | None:
    """``"all"`` -> None (every block); ``"0,1,-1"`` -> [0, 1, -1] (negative counts from the last block)."""
    text = text.strip().lower()
    if text in {"", "all"}:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MethodError(f"wemoe.blocks must be 'all' or comma-separated block indices like '0,1,-1', "
                          f"got {text!r}.") from None


@register
class WEMoE(MergeMethod):
    name = "wemoe"
    pretty_name = "WEMoE"
    description = "Task arithmetic outside the MLPs; each MLP mixes the experts per image with a trained router."
    reference_url = "https://arxiv.org/abs/2402.00433"
    order = 50
    adaptive = True
    params = (
        Param("lambda", float, 0.3, "Task-arithmetic coefficient for non-MLP weights and the routers' starting value.",
              min=0.0, max=2.0),
        Param("router_hidden_layers", int, 1, "Hidden Linear(d,d)+ReLU layers in each router.", choices=(0, 1, 2)),
        Param("blocks", str, "all", "Transformer blocks whose MLP becomes a MoE: 'all' or indices like '0,1,-1'."),
        Param("seed", int, 0, "Seed of the routers' random hidden layers (same seed, same model).", min=0),
        Param("rank", int, 0, "0: the experts' MLP task vectors kept whole (exact); k > 0: each kept as its top-k "
              "singular components (compressed experts: less memory and time).", min=0, max=4096),
        Param("anchor", str, TASK_ARITHMETIC, "With rank > 0, what the compressed experts correct: task_arithmetic "
              "(its merged MLP weights stay exact; untrained routers give task arithmetic) or pretrained (the "
              "pretrained weights).", choices=ANCHORS),
    )

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        config = WEMoEConfig(lambda_=params["lambda"], router_hidden_layers=params["router_hidden_layers"],
                             blocks=parse_blocks(params["blocks"]), seed=params["seed"],
                             rank=params["rank"], anchor=params["anchor"])
        try:
            return upscale_to_wemoe(zoo, config)
        except ValueError as error:
            raise MethodError(f"wemoe.blocks: {error}") from None
