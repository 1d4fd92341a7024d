"""Task arithmetic: theta_0 + lambda * sum_t tau_t (Ilharco et al., ICLR 2023)."""

from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import register
from wemoe.task_vector import merged_state
from wemoe.zoo.zoo import Zoo

LAMBDA = Param("lambda", float, 0.3, "Scaling coefficient of the summed task vectors.", min=0.0, max=2.0)


@register
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    pretty_name = "Task Arithmetic"
    description = "Add every expert's task vector to the pretrained weights, scaled by lambda."
    reference_url = "https://arxiv.org/abs/2212.04089"
    order = 10
    params = (LAMBDA,)

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        # one tensor at a time: no task vector of the whole tower is held (bit for bit the sum of them all)
        return zoo.visual_with(merged_state(zoo.base_state, zoo.experts, params["lambda"]))
