"""WUDI, data-free merging by the task vectors' own interference (Cheng et al., ICML 2025, arXiv 2503.08099).

Per weight matrix, the merged task matrix ``V`` minimises each task's interference measured on its own task vector,
which spans (approximately) the inputs that task's layer sees:

    L(V) = sum_t || (V - tau_t) tau_t^T ||_F^2 / ||tau_t||_F^2

starting from ``V = sum_t tau_t`` and taking ``steps`` Adam steps of rate ``lr``. Ours defaults to 300 steps and
1e-5: the paper's, and the default of FusionBench 0.2.33's ``wudi_merging`` function, whose rate is fixed at 1e-5;
FusionBench's shipped configuration (``fusion_bench_config/method/wudi/wudi.yaml``, what its published runs use)
sets ``iter_num: 400`` (``--param wudi.steps=400`` matches it). Other tensors are averaged; the merged task vector is
added as it is (no scale). The attention input is merged as q, k, v or fused as the ``attention`` parameter says
(``wemoe.methods.matrix_merge``).

The loss is quadratic in ``V``: with ``G_t = tau_t^T tau_t / ||tau_t||^2``, ``A = sum_t G_t`` and
``B = sum_t tau_t G_t``, its gradient is ``2 (V A - B)`` and ``L(V) = <V A, V> - 2 <V, B> + const``. Each step is one
``[m, n] x [n, n]`` product instead of autograd through ``T`` products of ``[m, n] x [n, m]``: the same Adam steps
(equal up to float rounding) for a fraction of the cost. Against FusionBench 0.2.33's autograd on the same structured
ViT-B/32-shaped task vectors (``bench/methods_vs_fusionbench.py``): 3e-15 of the largest merged entry in float64; in
float32 1.8e-6 after 20 steps (FusionBench's own float32 is 1.9e-6 from its float64 result) and 3.4e-7 after 400.
A task whose matrix is all zero takes no part (its term is 0/0, zero in the limit). No randomness: the result is a
function of the task vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.matrix_merge import ATTENTION, attention_layout, merge_matrices
from wemoe.methods.registry import register
from wemoe.stopping import check_stop
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo


def wudi_matrix(deltas: torch.Tensor, steps: int = 300, lr: float = 1e-5) -> tuple[torch.Tensor, list[float]]:
    """WUDI's merged task matrix of the stacked task matrices ``deltas`` ``[T, m, n]``, and the loss before each step
    and after the last one (``steps + 1`` values)."""
    norms = deltas.flatten(1).norm(dim=1).square()
    live = deltas[norms > 0]
    weights = 1.0 / norms[norms > 0]
    grams = live.transpose(1, 2) @ live * weights[:, None, None]  # G_t, each [n, n]
    a = grams.sum(dim=0)
    # tau_t G_t, each by the same 2-D matmul as ``merged @ a`` below: with one live task the start (tau itself) then has
    # a gradient of exactly 0; a batched matmul rounds differently on some CPUs (AVX-512), and Adam, dividing by its
    # tiny epsilon, blows a 1e-16 gradient up into steps of size lr away from the optimum
    projected = torch.stack([tau @ gram for tau, gram in zip(live, grams, strict=True)])
    b = projected.sum(dim=0)
    constant = float((projected.double() * live.double()).sum())
    del projected
    merged = nn.Parameter(deltas.sum(dim=0).clone())
    optimizer = torch.optim.Adam([merged], lr=lr)
    losses = []
    for step in range(steps + 1):
        with torch.no_grad():
            va = merged @ a
            quadratic = (va.double() * merged.double()).sum() - 2.0 * (merged.double() * b.double()).sum()
            losses.append(float(quadratic) + constant)
            if step == steps:
                break
            merged.grad = 2.0 * (va - b)
        optimizer.step()
        check_stop()  # a cancelled merge stops between steps (5000 steps per matrix can take minutes)
    return merged.detach(), losses


@register
class WUDI(MergeMethod):
    name = "wudi"
    pretty_name = "WUDI (data-free interference)"
    description = "Per weight matrix, Adam steps on each task's interference measured by its own task vector."
    reference_url = "https://arxiv.org/abs/2503.08099"
    order = 28
    params = (
        Param("steps", int, 300, "Adam steps per weight matrix (300 in the paper; FusionBench's config: 400).",
              min=0, max=5000),
        Param("lr", float, 1e-5, "Adam learning rate (1e-5 in the paper).", min=1e-8, max=1e-1),
        ATTENTION,
    )

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        merged = merge_matrices(vectors, lambda deltas: wudi_matrix(deltas, params["steps"], params["lr"])[0],
                                attention_layout(zoo, params["attention"]))
        return zoo.visual_with(merged.apply_to(zoo.base_state, 1.0))
