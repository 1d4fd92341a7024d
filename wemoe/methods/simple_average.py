"""Simple averaging of the experts' weights (model soup): theta_0 + (1/T) * sum_t tau_t."""

from torch import nn

from wemoe.methods.base import MergeMethod
from wemoe.methods.registry import register
from wemoe.task_vector import merged_state
from wemoe.zoo.zoo import Zoo


@register
class SimpleAverage(MergeMethod):
    name = "simple_average"
    pretty_name = "Simple Average"
    description = "Average the experts' weights (task arithmetic with lambda = 1 / number of experts)."
    reference_url = "https://arxiv.org/abs/2203.05482"
    order = 5

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        # task arithmetic one tensor at a time (task_vector.merged_state): bit for bit the sum of every task vector
        return zoo.visual_with(merged_state(zoo.base_state, zoo.experts, 1.0 / len(zoo.experts)))
