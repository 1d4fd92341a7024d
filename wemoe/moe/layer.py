"""WEMoE: weight-ensembling mixture of experts (Tang et al., ICML 2024, arXiv 2402.00433), the model in one file.

Read top to bottom:

1. ``Router``: Linear(d, d) - ReLU - ... - Linear(d, T) on the MLP's input tokens, averaged over tokens per sample.
   Its last layer starts at weight 0 and bias ``lambda_``, so an untrained WEMoE is task arithmetic.
2. ``WeightEnsemblingMLP``: a transformer block's MLP (c_fc - activation - c_proj) with the pretrained weights and the
   stacked task vectors of every expert (frozen buffers) and a router (the only trainable part). Each sample's
   weights ``W_b = W_0 + sum_t r_bt tau_t`` are applied by ``wemoe.moe.ensembled_linear.stacked_ensembled_linear``
   (the whole batch at once, in a ``Workspace`` the layers of one model share; on CPU, for large layers, the fused
   kernel). ``LowRankWeightEnsemblingMLP``: the same with each task vector kept as its top-k singular components
   (``WEMoEConfig.rank``), computed as GEMMs over all tokens without any per-sample weights (``wemoe.moe.lowrank``).
3. ``WEMoEConfig`` and ``upscale_to_wemoe``: the image tower with every non-MLP parameter merged by task arithmetic
   (``theta_0 + lambda * sum_t tau_t``) and the chosen blocks' MLPs replaced by WeightEnsemblingMLPs.

Routing is always per sample, never averaged over the batch. Recording it or forcing fixed weights (the oracle) is
``wemoe.moe.routing_hooks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wemoe.moe import lowrank
from wemoe.moe.ensembled_linear import Workspace, stacked_ensembled_linear
from wemoe.task_vector import merged_state
from wemoe.zoo.zoo import Zoo

MLP_PARTS = ("c_fc", "c_proj")


def _seeded_linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear``'s own initialisation (Kaiming-uniform weight, uniform bias), drawn from ``generator``.

    Drawn in the order ``nn.Linear.reset_parameters`` draws, so a generator seeded s gives the weights that
    seeding the global generator with s and then building ``nn.Linear(...)`` gives.
    """
    layer = nn.Linear(in_features, out_features, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def weight_stack(weight: torch.Tensor, expert_weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[tau_1 .. tau_T, W_0]`` ``[T + 1, out, in]`` float32, each ``tau_t = W_t - W_0`` written straight into its
    slot (no list of task vectors beside the stack: the merge's peak is the stack, not twice it)."""
    stack = weight.new_empty((len(expert_weights) + 1, *weight.shape), dtype=torch.float32)
    for slot, expert in zip(stack, expert_weights, strict=False):
        torch.sub(expert.float(), weight, out=slot)
    stack[-1] = weight
    return stack


class Router(nn.Module):
    """Maps each sample's MLP-input tokens ``[B, N, d]`` to routing weights ``[B, T]`` (mean over tokens)."""

    def __init__(
        self,
        dim: int,
        num_experts: int,
        hidden_layers: int = 1,
        lambda_: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> None:
        """``lambda_``: every expert's routing weight before training (WEMoE's lambda). ``generator`` draws the
        hidden layers' initial weights (default: a fresh one seeded 0); torch's process-wide generator is never used,
        so two threads building routers cannot disturb each other."""
        super().__init__()
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(hidden_layers):
            layers += [_seeded_linear(dim, dim, generator), nn.ReLU()]
        self.net = nn.Sequential(*layers, _seeded_linear(dim, num_experts, generator))
        self.reset(lambda_)

    def reset(self, lambda_: float) -> None:
        """Zero the last layer's weight and fill its bias with ``lambda_``: every sample gets task arithmetic."""
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, lambda_)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens).mean(dim=1)


def _recheck_experts(layer: WeightEnsemblingMLP, _incompatible_keys: Any) -> None:
    """After ``load_state_dict``: decide again whether the loaded experts differ from the base."""
    layer.experts_differ = layer._experts_differ()


class WeightEnsemblingMLP(nn.Module):
    """A block's MLP whose weights are ``W_0 + sum_t r_t tau_t`` with ``r`` from a router, per sample."""

    def __init__(
        self,
        pretrained_mlp: nn.Module,
        expert_mlps: Sequence[Mapping[str, torch.Tensor]],
        lambda_: float = 0.3,
        router_hidden_layers: int = 1,
        workspace: Workspace | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """``pretrained_mlp`` is open_clip's ``Sequential(c_fc, gelu, c_proj)``; ``expert_mlps`` its experts' state
        dicts.

        ``workspace``: scratch memory for the per-sample weights, shared by the layers of one model (default: own).
        ``generator``: draws the router's initial hidden weights (see :class:`Router`).
        """
        super().__init__()
        base = {k: v.detach().float() for k, v in pretrained_mlp.state_dict().items()}
        for part in MLP_PARTS:
            weight, bias = base[f"{part}.weight"], base[f"{part}.bias"]
            self._store_weights(part, weight_stack(weight, [e[f"{part}.weight"] for e in expert_mlps]))
            self.register_buffer(f"{part}_bias", bias.clone())
            self.register_buffer(f"{part}_bias_tvs",
                                 torch.stack([e[f"{part}.bias"].float() - bias for e in expert_mlps]))
        self.activation = pretrained_mlp.gelu
        self.experts_differ = self._experts_differ()
        self.register_load_state_dict_post_hook(_recheck_experts)  # a loaded file brings other task vectors
        dim = base["c_fc.weight"].shape[1]
        self.router = Router(dim, len(expert_mlps), router_hidden_layers, lambda_, generator)
        self.recorder: list[torch.Tensor] | None = None
        self.record_tokens = False
        self.forced_routing: torch.Tensor | None = None  # [T]: every sample gets these weights (diagnostics)
        self.workspace = workspace or Workspace()

    def _store_weights(self, part: str, stack: torch.Tensor) -> None:
        """Keep ``part``'s stack ``[tau_1 .. tau_T, W_0]`` (:func:`weight_stack`; the layout
        ``stacked_ensembled_linear`` takes) as it is."""
        self.register_buffer(f"{part}_weight_stack", stack)

    def _experts_differ(self) -> bool:
        """Whether any expert's MLP differs from the pretrained one (a task vector or bias difference not all zero).

        Experts fine-tuned on some blocks only (the pocket-20 zoo's last two) leave the other blocks' task vectors
        all zero: there every sample's weights are W_0 whatever the routing, so :meth:`_linear` applies W_0 densely
        instead of building B copies of it. Read when the layer is built or loaded (its stacks are frozen).
        """
        return any(bool(getattr(self, f"{part}_weight_stack")[:-1].count_nonzero()
                        or getattr(self, f"{part}_bias_tvs").count_nonzero()) for part in MLP_PARTS)

    @property
    def num_experts(self) -> int:
        """The number of experts T."""
        return self.c_fc_bias_tvs.shape[0]

    @property
    def c_fc_weight(self) -> torch.Tensor:
        """Pretrained c_fc weight W_0 ``[hidden, d]`` (a view into the stack)."""
        return self.c_fc_weight_stack[-1]

    @property
    def c_fc_weight_tvs(self) -> torch.Tensor:
        """Stacked c_fc task vectors ``[T, hidden, d]`` (a view into the stack)."""
        return self.c_fc_weight_stack[:-1]

    @property
    def c_proj_weight(self) -> torch.Tensor:
        """Pretrained c_proj weight W_0 ``[d, hidden]`` (a view into the stack)."""
        return self.c_proj_weight_stack[-1]

    @property
    def c_proj_weight_tvs(self) -> torch.Tensor:
        """Stacked c_proj task vectors ``[T, d, hidden]`` (a view into the stack)."""
        return self.c_proj_weight_stack[:-1]

    def _merged(self, part: str, routing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One weight and bias for ``routing`` ``[T]`` shared by every sample: ``W_0 + sum_t r_t tau_t``."""
        stack = getattr(self, f"{part}_weight_stack")
        weight = torch.cat([routing, routing.new_ones(1)]) @ stack.reshape(stack.shape[0], -1)
        bias = getattr(self, f"{part}_bias") + routing @ getattr(self, f"{part}_bias_tvs")
        return weight.view(stack.shape[1:]), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recorder is not None and self.record_tokens:
            self.recorder.append(self.router.net(x).detach())
        shared = None if self.forced_routing is None else self.forced_routing.to(x)
        routing = self.router(x) if shared is None else shared.expand(x.shape[0], -1)
        if self.recorder is not None and not self.record_tokens:
            self.recorder.append(routing.detach())
        if shared is not None:  # every sample has the same weights: one merged MLP serves the batch at dense speed
            hidden = self.activation(F.linear(x, *self._merged("c_fc", shared)))
            return F.linear(hidden, *self._merged("c_proj", shared))
        return self._linear("c_proj", self.activation(self._linear("c_fc", x, routing)), routing)

    def _linear(self, part: str, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        """``part`` applied to ``x`` ``[B, N, in]`` with each sample's own weights (routing ``[B, T]``)."""
        stack, bias, bias_tvs = (getattr(self, f"{part}_{name}") for name in ("weight_stack", "bias", "bias_tvs"))
        if not self.experts_differ:
            # every W_b is W_0; the (zero) bias term keeps the routing in the graph, so its gradient is the same 0
            return F.linear(x, stack[-1], bias) + (routing @ bias_tvs).unsqueeze(1)
        return stacked_ensembled_linear(x, routing, stack, bias, bias_tvs, self.workspace)


TASK_ARITHMETIC, PRETRAINED = ANCHORS = ("task_arithmetic", "pretrained")
"""What low-rank experts correct (:class:`LowRankWeightEnsemblingMLP`, ``WEMoEConfig.anchor``)."""


class LowRankWeightEnsemblingMLP(WeightEnsemblingMLP):
    """A WeightEnsemblingMLP whose task vectors are kept as their top-``rank`` singular components
    (``wemoe.moe.lowrank``).

    Each matrix keeps ``up = [A | U_1 S_1 .. U_T S_T]`` and ``down = [V_1 .. V_T]``, i.e. ``T*k*(in + out)`` floats
    instead of ``T*out*in``, and computes ``y = x A^T + sum_t (r_bt - a) (x V_t)(U_t S_t)^T + c_b`` as two GEMMs over
    all tokens, where the anchor ``A`` is task arithmetic's merged weight ``W_0 + a * sum_t tau_t`` (``a`` = lambda,
    the exact task vectors) or ``W_0`` (``a`` = 0). No per-sample weight matrix is built, so the workspace stays
    unused. Routing, recording and forced routing are the exact layer's. ``rank`` >= ``min(out, in)`` keeps the full
    task vectors (exact up to rounding).
    """

    def __init__(
        self,
        pretrained_mlp: nn.Module,
        expert_mlps: Sequence[Mapping[str, torch.Tensor]],
        rank: int,
        lambda_: float = 0.3,
        router_hidden_layers: int = 1,
        workspace: Workspace | None = None,
        generator: torch.Generator | None = None,
        anchor: str = TASK_ARITHMETIC,
    ) -> None:
        """As :class:`WeightEnsemblingMLP`, with ``rank``: the singular components kept per task vector (>= 1), and
        ``anchor``: what the rank-k experts correct, ``task_arithmetic`` (``W_0 + lambda_ * sum_t tau_t``, exact)
        or ``pretrained`` (``W_0``); see :mod:`wemoe.moe.lowrank`."""
        if anchor not in ANCHORS:
            raise ValueError(f"Unknown anchor {anchor!r}: use one of {', '.join(ANCHORS)}.")
        # read by _store_weights, which the base constructor calls
        self.requested_rank, self.lambda_, self.anchor = rank, float(lambda_), anchor
        super().__init__(pretrained_mlp, expert_mlps, lambda_, router_hidden_layers, workspace, generator)

    @property
    def _anchor_scale(self) -> float:
        """``a`` in the anchor ``W_0 + a * sum_t tau_t``: lambda with the task-arithmetic anchor, 0 with the
        pretrained one."""
        return self.lambda_ if self.anchor == TASK_ARITHMETIC else 0.0

    def _store_weights(self, part: str, stack: torch.Tensor) -> None:
        """Keep ``part`` (its :func:`weight_stack`, dropped afterwards) as the packed factors ``{part}_up``
        ``[out, in + T*k]`` and ``{part}_down`` ``[in, T*k]``; ``up``'s first block is the anchor (task arithmetic's
        merged weight with the exact task vectors, or W_0)."""
        stacked, weight = stack[:-1], stack[-1]
        us, v = lowrank.low_rank_factors(stacked, self.requested_rank)
        anchor = weight + self._anchor_scale * stacked.sum(dim=0) if self._anchor_scale else weight
        up, down = lowrank.pack_factors(anchor, us, v)
        self.register_buffer(f"{part}_up", up)
        self.register_buffer(f"{part}_down", down)

    def _base(self, part: str) -> torch.Tensor:
        """The pretrained weight of the exact WEMoE layer this one equals: W_0, or with the task-arithmetic anchor
        ``W_0 + lambda * sum_t (tau_t - tau~_t)`` (so that it plus ``sum_t r_t tau~_t`` is the layer's weight)."""
        up, down = getattr(self, f"{part}_up"), getattr(self, f"{part}_down")
        anchor = up[:, : down.shape[0]]
        if not self._anchor_scale:
            return anchor
        return anchor - self._anchor_scale * lowrank.unpack_task_vectors(up, down, self.num_experts).sum(dim=0)

    def _experts_differ(self) -> bool:
        """Always True: the low-rank layer computes through its factors (:meth:`_linear`) and never asks."""
        return True

    def rank(self, part: str = "c_fc") -> int:
        """The singular components kept per task vector of ``part``."""
        return getattr(self, f"{part}_down").shape[1] // self.num_experts

    @property
    def c_fc_weight(self) -> torch.Tensor:
        """The c_fc base weight ``[hidden, d]`` of the exact layer this one equals (:meth:`_base`; with the
        pretrained anchor a view of W_0 in ``c_fc_up``)."""
        return self._base("c_fc")

    @property
    def c_fc_weight_tvs(self) -> torch.Tensor:
        """The rank-k c_fc task vectors ``[T, hidden, d]`` this layer computes with (built on each call)."""
        return lowrank.unpack_task_vectors(self.c_fc_up, self.c_fc_down, self.num_experts)

    @property
    def c_proj_weight(self) -> torch.Tensor:
        """The c_proj base weight ``[d, hidden]`` of the exact layer this one equals (:meth:`_base`)."""
        return self._base("c_proj")

    @property
    def c_proj_weight_tvs(self) -> torch.Tensor:
        """The rank-k c_proj task vectors ``[T, d, hidden]`` this layer computes with (built on each call)."""
        return lowrank.unpack_task_vectors(self.c_proj_up, self.c_proj_down, self.num_experts)

    def _merged(self, part: str, routing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One weight and bias for ``routing`` ``[T]`` shared by every sample: the anchor plus
        ``sum_t (r_t - a) (U_t S_t) V_t^T`` (``a``: :attr:`_anchor_scale`)."""
        weight = lowrank.merged_weight(getattr(self, f"{part}_up"), getattr(self, f"{part}_down"), routing,
                                       self._anchor_scale)
        return weight, getattr(self, f"{part}_bias") + routing @ getattr(self, f"{part}_bias_tvs")

    def _linear(self, part: str, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        """``part`` applied to ``x`` ``[B, N, in]`` through the low-rank factors (``wemoe.moe.lowrank``)."""
        up, down, bias, bias_tvs = (getattr(self, f"{part}_{name}") for name in ("up", "down", "bias", "bias_tvs"))
        return lowrank.lowrank_ensembled_linear(x, routing, up, down, bias, bias_tvs, self._anchor_scale)


def moe_mlp(
    pretrained_mlp: nn.Module,
    expert_mlps: Sequence[Mapping[str, torch.Tensor]],
    config: WEMoEConfig,
    workspace: Workspace | None = None,
    generator: torch.Generator | None = None,
) -> WeightEnsemblingMLP:
    """The MoE MLP ``config`` asks for: exact (``config.rank == 0``) or with rank-``config.rank`` experts."""
    if config.rank > 0:
        return LowRankWeightEnsemblingMLP(pretrained_mlp, expert_mlps, config.rank, config.lambda_,
                                          config.router_hidden_layers, workspace, generator, config.anchor)
    return WeightEnsemblingMLP(pretrained_mlp, expert_mlps, config.lambda_, config.router_hidden_layers, workspace,
                               generator)


@dataclass
class WEMoEConfig:
    """How to upscale a tower (the input of :func:`upscale_to_wemoe`); the tower keeps it, resolved, and is saved with
    it.

    ``blocks``: the blocks whose MLP becomes a MoE (None: all; negative indices count from the last);
    ``task_names``: the experts, in the routers' order (empty: the zoo's); ``seed``: the routers' random hidden layers;
    ``rank``: 0 keeps every MLP task vector whole (exact WEMoE), k > 0 keeps its top-k singular components
    (:class:`LowRankWeightEnsemblingMLP`); ``anchor`` (with ``rank`` > 0): what those correct, ``task_arithmetic``
    (the merged weight ``W_0 + lambda_ * sum_t tau_t`` stays exact) or ``pretrained`` (``W_0``;
    :mod:`wemoe.moe.lowrank`).
    """

    lambda_: float = 0.3
    router_hidden_layers: int = 1
    blocks: list[int] | None = None
    task_names: list[str] = field(default_factory=list)
    seed: int = 0
    rank: int = 0
    anchor: str = "task_arithmetic"

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-ready; :meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> WEMoEConfig:
        """The config :meth:`to_dict` wrote, also from older files: ``init_lambda`` (the lambda's name before it had
        one) is read as ``lambda_``, and a low-rank config without ``anchor`` (saved before anchors existed) as the
        plain low-rank form, anchored at the pretrained weights."""
        values = dict(saved)
        if "init_lambda" in values:
            values.setdefault("lambda_", values.pop("init_lambda"))
        if values.get("rank") and "anchor" not in values:
            values["anchor"] = PRETRAINED
        return cls(**values)


def _block_indices(num_blocks: int, blocks: Sequence[int] | None) -> list[int]:
    if blocks is None:
        return list(range(num_blocks))
    chosen = sorted({b if b >= 0 else num_blocks + b for b in blocks})
    bad = [b for b in chosen if not 0 <= b < num_blocks]
    if bad:
        raise ValueError(f"Blocks {bad} do not exist: this image tower has blocks 0..{num_blocks - 1}.")
    return chosen


def upscale_to_wemoe(zoo: Zoo, config: WEMoEConfig | None = None) -> nn.Module:
    """The WEMoE image tower of ``zoo`` as ``config`` says (default: ``WEMoEConfig()``): task-arithmetic non-MLP
    parameters, MoE MLPs in ``config.blocks`` (default: all).

    Only the routers' parameters require grad. The routers' hidden layers are initialised randomly from
    ``config.seed`` through a local generator (torch's global one is neither read nor changed), so the same call gives
    the same model, whatever other threads do. The tower carries ``wemoe_config``: ``config`` with its blocks resolved
    to indices and its task names filled in (what :func:`wemoe.evaluation.export.load_wemoe` rebuilds from).

    Built one tensor and one block at a time: no task vector of the whole tower is ever held, so the peak is about the
    final model (bit for bit the model that building every task vector first gave).
    """
    config = config or WEMoEConfig()
    if config.rank < 0:
        raise ValueError(f"rank must be 0 (exact experts) or a number of singular components >= 1, got {config.rank}.")
    if config.task_names and list(config.task_names) != list(zoo.task_names):
        raise ValueError(f"The config's experts {list(config.task_names)} are not the zoo's {zoo.task_names}.")
    base = zoo.base_state
    chosen = _block_indices(len(zoo.visual.transformer.resblocks), config.blocks)
    moe_prefixes = tuple(f"transformer.resblocks.{index}.mlp." for index in chosen)
    tower = zoo.visual_with(merged_state(base, zoo.experts, config.lambda_, skip=moe_prefixes))
    resblocks = tower.transformer.resblocks
    pretrained = zoo.visual.transformer.resblocks
    workspace = Workspace()
    generator = torch.Generator().manual_seed(config.seed)  # local: concurrent merges never share a random stream
    for index in chosen:
        prefix = f"transformer.resblocks.{index}.mlp."
        expert_mlps = [
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} for state in zoo.experts.values()
        ]
        resblocks[index].mlp = moe_mlp(pretrained[index].mlp, expert_mlps, config, workspace, generator)
    tower.requires_grad_(False)
    for module in moe_layers(tower).values():
        module.router.requires_grad_(True)
    tower.wemoe_config = replace(config, blocks=chosen, task_names=list(zoo.task_names))
    return tower


def moe_layers(tower: nn.Module) -> dict[int, WeightEnsemblingMLP]:
    """The upscaled MLPs of a tower, by block index; empty for any other model (a static tower, AdaMerging's)."""
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if blocks is None:
        return {}
    return {i: block.mlp for i, block in enumerate(blocks)
            if isinstance(getattr(block, "mlp", None), WeightEnsemblingMLP)}


def model_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers, each storage counted once (what holding the model costs; the exact
    WEMoE's stacked task vectors, or the compressed one's factors, included; a workspace's scratch not)."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def release_workspaces(model: nn.Module) -> None:
    """Free the scratch memory every WEMoE layer inside ``model`` keeps between calls (see :class:`Workspace`)."""
    for module in model.modules():
        if isinstance(module, WeightEnsemblingMLP):
            module.workspace.release()


def router_parameters(tower: nn.Module) -> list[nn.Parameter]:
    """Every router parameter (what adaptation trains)."""
    return [p for layer in moe_layers(tower).values() for p in layer.router.parameters()]
