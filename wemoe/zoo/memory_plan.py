"""How much memory a zoo and each merge method need, estimated before anything is loaded or merged.

A zoo's :class:`ZooShape` (parameter counts and the ViT's layers, width and tokens) comes from an open_clip
architecture config (a preset or spec, nothing loaded: :func:`shape_of_spec`) or from a loaded zoo
(:func:`shape_of_zoo`). :func:`plan` turns it into bytes: the download, the loaded zoo, and the peak of each kind of
merge. :func:`check_merge_fits` refuses a merge whose estimated peak exceeds the memory budget
(``MERGE_EXPLORER_MEMORY_MB``, else the machine's memory) with a :class:`~wemoe.errors.MergeTooLarge` naming what it
needs and what to choose instead.

The figures are estimates of a process's peak resident memory (VmHWM), calibrated on one measured zoo:
``bench/zoo_memory.py`` on the ViT-B/32 eight-task preset (bench/README.md, "Memory of a real zoo": load 4341 MB,
task arithmetic 7995 MB, WEMoE 10006 MB, 10 adaptation steps of 16 images 10289 MB) and the WEMoE forward+backward
of ``bench/moe_vs_fusionbench.py`` (525 MB above the model at batch 16). The constants below are those figures
divided by the quantities they scale with. ``bench/memory_plan_check.py`` measured every kind of merge again on
another width and depth with 4, 12 (and 20) experts (bench/README.md, "The memory planner against measured merges"):
task arithmetic and WEMoE came within 2% of these constants; TIES, the per-matrix merges (measured: TSV-M; Iso-C,
Iso-CTS and WUDI taken alike), EMR, AdaMerging and compressed WEMoE got their own constants, fitted there
(:data:`MERGE_TOWERS`). WEMoE is built one tensor and one block at a time (``wemoe.moe.layer.upscale_to_wemoe``): its
peak is its own model plus about two towers, refitted on both benches (bench/README.md, "The WEMoE merge one block at a
time": B/32 9627 -> 6551 MB), no longer task arithmetic's task vectors. Task arithmetic, simple averaging and TIES
are merged one tensor at a time too (issue #31: TIES held six towers per expert, 17 GB on the B/32 stand-in, task
arithmetic one per expert): their peaks no longer grow with the number of experts but for TIES' per-tensor stacks
(bench/README.md, "Step 2's memory").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from wemoe.errors import MergeTooLarge
from wemoe.zoo.zoo import Zoo, ZooSpec

MB = 1e6
FLOAT32 = 4

BARE_PROCESS_BYTES = 495 * MB
"""A process with torch, open_clip and wemoe imported (bench/README.md, "Memory of a real zoo")."""
BASE_LOAD_SLACK = 0.71
"""Allocator slack of open_clip's base load, per byte of the base CLIP: (4341 - 495 - 3416) / 605 MB."""
STATIC_MERGE_TOWERS = 2.4
"""Task arithmetic (one tensor at a time, ``wemoe.task_vector.merged_state``) holds this many towers whatever the number
of experts (the merged weights, the tower built from them, transients): (4784 - 3955) MB / 351.4 MB on the ViT-B/32
stand-in (zoo_memory.py), 2.08 on width 512 at 4, 12 and 20 experts (memory_plan_check.py)."""
TIES_TOWERS = 5.1
"""TIES (one tensor at a time, ``wemoe.methods.ties.ties_merge``) holds about this many towers while it finds each task
vector's trim threshold (one vector's magnitudes, and ``kthvalue``'s copy and int64 indices of them): 4.0 on the B/32
stand-in (1414 MB over the load, zoo_memory.py), 4.1-5.1 on width 512 at 2 to 12 experts (5.06 at 8: the largest)."""
TIES_TENSOR_FACTOR = 5.0
"""...or, where more, one tower (the merged direction) plus this many times every expert's largest tensor (an MLP
weight, ``width x mlp_width``: the stacked, trimmed and agreeing copies of it): 4.9 on width 512 at 20 and 40
experts."""
WEMOE_STACK_FACTOR = 1.0
"""WEMoE's peak per byte of stacked MLP task vectors (it keeps them, and builds them one block at a time):
bench/memory_plan_check.py, 50.5 MB more per expert of 50.4 MB (width 512, 6 blocks, 4 to 20 experts)."""
WEMOE_TOWERS = 2.2
"""WEMoE's peak besides its task vectors, in image towers (its pretrained MLP and other weights, the copied tower it
starts from, a block's transients): (2590 - 8 x 226.7) / 351.4 MB on ViT-B/32 (zoo_memory.py), 1.96 on width 512."""
ACTIVATION_BYTES_B32 = 525 * MB / 16
"""Forward+backward memory of one ViT-B/32 image through WEMoE (bench/README.md: 525 MB at batch 16)."""
COMPRESSED_BLOCK_FACTOR = 3.3
"""Compressed WEMoE: its factors, :data:`COMPRESSED_TOWERS` towers and this many times one block's stacked MLP task
vectors (the stack and its decomposition's workspace), fitted on bench/memory_plan_check.py's 4 and 12 experts (20
measured below the fit)."""
COMPRESSED_TOWERS = 1.0
"""Compressed WEMoE's towers besides (fit: 0.81 on width 512, rounded up)."""
ATTENTION_FLOATS = 3
"""Floats kept per attention score for the backward pass (scores, softmax, its gradient); the rest of the
activations is scaled so that ViT-B/32 gives :data:`ACTIVATION_BYTES_B32`."""

STATIC = "static"
TIES = "ties"
PER_MATRIX = "per_matrix"
EMR = "emr"
WEMOE = "wemoe"
WEMOE_COMPRESSED = "wemoe_compressed"
ADAMERGING = "adamerging"
KINDS = (STATIC, PER_MATRIX, EMR, TIES, WEMOE, WEMOE_COMPRESSED, ADAMERGING)
KIND_LABELS = {
    STATIC: "task arithmetic, simple average",
    PER_MATRIX: "TSV-M, Iso-C, Iso-CTS, WUDI",
    EMR: "EMR-merging",
    TIES: "TIES",
    WEMOE: "WEMoE (dense experts)",
    WEMOE_COMPRESSED: "WEMoE (compressed experts, rank 8)",
    ADAMERGING: "AdaMerging",
}
MERGE_TOWERS = {
    STATIC: (0.0, STATIC_MERGE_TOWERS),  # zoo_memory.py, ViT-B/32, 8 experts; memory_plan_check.py, 4-20 experts
    PER_MATRIX: (1.07, 3.1),  # memory_plan_check.py, TSV-M at 4 and 12 experts
    EMR: (1.26, 4.4),  # EMR-merging at 4 and 12 experts
    ADAMERGING: (2.0, 2.0),  # layer-wise AdaMerging at 4 and 12 experts
}
"""A static merge's peak over the loaded zoo, in image towers: ``per expert x experts + constant`` (TIES: its own
formula, :func:`merge_bytes`)."""
DEFAULT_COMPRESSED_RANK = 8  # wemoe.methods.wemoe_compressed.DEFAULT_RANK (not imported: methods sit above zoo)


@dataclass(frozen=True)
class ZooShape:
    """What a zoo's memory depends on: its parameter counts, the image tower's geometry and the number of experts."""

    name: str
    experts: int
    clip_params: int
    tower_params: int
    mlp_params: int
    in_proj_params: int
    layers: int
    width: int
    mlp_width: int
    heads: int
    tokens: int
    hf_experts: bool = True  # Hugging Face experts: their q, k, v are copied into a fused in_proj at load
    expert_file_params: int | None = None  # parameters in one expert's checkpoint (HF: the tower without proj)

    @property
    def tower_bytes(self) -> int:
        """One image tower in float32."""
        return self.tower_params * FLOAT32

    def with_experts(self, experts: int) -> ZooShape:
        """The same zoo with ``experts`` experts."""
        return replace(self, experts=experts)


def _tower_params(width: int, layers: int, mlp_width: int, tokens: int, patch: int, embed_dim: int) -> dict[str, int]:
    block_mlp = width * mlp_width + mlp_width + mlp_width * width + width
    block_in_proj = 3 * width * width + 3 * width
    block = 4 * width + block_in_proj + width * width + width + block_mlp  # two LayerNorms, attention, MLP
    stem = 3 * patch * patch * width + width + tokens * width + 2 * width  # conv, class token, positions, ln_pre
    total = stem + layers * block + 2 * width + width * embed_dim  # ln_post, proj
    return {"total": total, "mlp": layers * block_mlp, "in_proj": layers * block_in_proj,
            "proj": width * embed_dim}


def shape_of_config(name: str, config: Mapping[str, Any], experts: int, hf_experts: bool = True) -> ZooShape:
    """The shape of a ViT CLIP from its open_clip architecture config (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
    vision, text, embed = config["vision_cfg"], config["text_cfg"], int(config["embed_dim"])
    width, layers, patch = int(vision["width"]), int(vision["layers"]), int(vision["patch_size"])
    grid = int(vision["image_size"]) // patch
    tokens = grid * grid + 1
    mlp_width = int(width * float(vision.get("mlp_ratio", 4.0)))
    tower = _tower_params(width, layers, mlp_width, tokens, patch, embed)
    t_width, t_layers = int(text["width"]), int(text["layers"])
    t_mlp = int(t_width * float(text.get("mlp_ratio", 4.0)))
    t_block = 4 * t_width + 4 * t_width * t_width + 4 * t_width + 2 * t_width * t_mlp + t_mlp + t_width
    text_params = (int(text["vocab_size"]) * t_width + int(text["context_length"]) * t_width
                   + t_layers * t_block + 2 * t_width + t_width * embed + 1)  # ln_final, projection, logit_scale
    return ZooShape(name=name, experts=experts, clip_params=tower["total"] + text_params,
                    tower_params=tower["total"], mlp_params=tower["mlp"], in_proj_params=tower["in_proj"],
                    layers=layers, width=width, mlp_width=mlp_width, heads=width // int(vision.get("head_width", 64)),
                    tokens=tokens, hf_experts=hf_experts,
                    expert_file_params=tower["total"] - tower["proj"] if hf_experts else tower["total"])


def shape_of_spec(spec: ZooSpec) -> ZooShape:
    """The shape of a preset or spec's zoo, from its open_clip config alone (nothing is loaded or downloaded)."""
    import open_clip  # the config registry only

    config = spec.model_config or open_clip.get_model_config(spec.model)
    if not config:
        raise ValueError(f"No open_clip config for {spec.model!r}: give the spec a model_config.")
    hf = all(not str(source).endswith((".safetensors", ".pt", ".pth", ".bin")) for source in spec.experts.values())
    return shape_of_config(spec.name, config, len(spec.experts), hf_experts=hf)


def shape_of_zoo(zoo: Zoo) -> ZooShape:
    """The shape of a loaded zoo, counted from its modules; ``experts`` is the zoo's (a subset's) number of experts.

    A tower that is not an open_clip ViT counts its parameters only (no activation estimate)."""
    visual = zoo.clip.visual
    state = zoo.base_state
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None) or []
    first = blocks[0] if len(blocks) else None
    conv = getattr(visual, "conv1", None)
    positions = getattr(visual, "positional_embedding", None)
    layouts = zoo.info.get("expert_layouts") or {}
    return ZooShape(
        name=zoo.name, experts=len(zoo.experts), clip_params=sum(p.numel() for p in zoo.clip.parameters()),
        tower_params=sum(p.numel() for p in visual.parameters()),
        mlp_params=sum(v.numel() for k, v in state.items() if ".mlp." in k),
        in_proj_params=sum(v.numel() for k, v in state.items() if ".attn.in_proj_" in k),
        layers=len(blocks), width=int(getattr(conv, "out_channels", 0)),
        mlp_width=int(first.mlp.c_fc.out_features) if first is not None else 0,
        heads=int(first.attn.num_heads) if first is not None else 0,
        tokens=int(positions.shape[0]) if positions is not None else 0,
        hf_experts=bool(layouts) and all(v == "hf" for v in layouts.values()),
    )


# ---------------------------------------------------------------------------------------------------------------
# The estimates


def download_bytes(shape: ZooShape) -> int:
    """Estimated download: the base CLIP and every expert's checkpoint, float32 (parameter counts x 4 bytes)."""
    expert = shape.expert_file_params if shape.expert_file_params is not None else shape.tower_params
    return FLOAT32 * (shape.clip_params + shape.experts * expert)


def load_bytes(shape: ZooShape, loaded_experts: int | None = None) -> int:
    """Estimated peak of loading the zoo and reading every weight: the bare process, the base CLIP with open_clip's
    load slack, every expert's tower; experts loaded but not merged (``loaded_experts`` above ``shape.experts``)
    only their fused attention copies (the rest stays mapped and unread)."""
    unchosen = max(0, (loaded_experts or shape.experts) - shape.experts)
    fused = unchosen * shape.in_proj_params * FLOAT32 if shape.hf_experts else 0
    clip = shape.clip_params * FLOAT32
    return int(BARE_PROCESS_BYTES + clip * (1 + BASE_LOAD_SLACK) + shape.experts * shape.tower_bytes + fused)


def activation_bytes(shape: ZooShape, images: int) -> int:
    """Estimated forward+backward memory of ``images`` images through a WEMoE (or AdaMerging) tower of this shape."""
    def floats(layers: int, tokens: int, width: int, heads: int, per_token: float) -> float:
        return layers * (tokens * width * per_token + heads * tokens * tokens * ATTENTION_FLOATS)

    b32_attention = floats(12, 50, 768, 12, 0.0)
    per_token = (ACTIVATION_BYTES_B32 / FLOAT32 - b32_attention) / (12 * 50 * 768)
    return int(images * FLOAT32 * floats(shape.layers, shape.tokens, shape.width, shape.heads, per_token))


def merge_bytes(shape: ZooShape, kind: str, rank: int = DEFAULT_COMPRESSED_RANK) -> int:
    """Estimated memory a merge of ``kind`` adds over the loaded zoo at its peak (see the module's notes)."""
    if kind in MERGE_TOWERS:
        per_expert, constant = MERGE_TOWERS[kind]
        return int((per_expert * shape.experts + constant) * shape.tower_bytes)
    if kind == TIES:
        per_tensor = shape.tower_bytes + TIES_TENSOR_FACTOR * shape.experts * shape.width * shape.mlp_width * FLOAT32
        return int(max(TIES_TOWERS * shape.tower_bytes, per_tensor))
    stack = shape.experts * shape.mlp_params * FLOAT32
    if kind == WEMOE:
        return int(WEMOE_TOWERS * shape.tower_bytes + WEMOE_STACK_FACTOR * stack)
    if kind == WEMOE_COMPRESSED:
        matrices = 2 * shape.layers  # c_fc and c_proj of every block
        factors = shape.experts * matrices * rank * (shape.width + shape.mlp_width) * FLOAT32
        one_block = COMPRESSED_BLOCK_FACTOR * stack / max(1, shape.layers)
        return int(COMPRESSED_TOWERS * shape.tower_bytes + factors + one_block)
    raise ValueError(f"Unknown kind of merge {kind!r}; known: {', '.join(KINDS)}.")


def kind_of(method: str, params: Mapping[str, Any] | None = None) -> str:
    """The kind of merge a method name and its parameters make (what :func:`merge_bytes` estimates)."""
    params = params or {}
    if method in ("wemoe", "wemoe_compressed"):
        rank = int(params.get("rank", DEFAULT_COMPRESSED_RANK if method == "wemoe_compressed" else 0))
        return WEMOE_COMPRESSED if rank > 0 else WEMOE
    if method in ("adamerging", "task_wise_adamerging"):
        return ADAMERGING
    return {"ties": TIES, "emr_merging": EMR, "tsv_m": PER_MATRIX, "iso_c": PER_MATRIX, "iso_cts": PER_MATRIX,
            "wudi": PER_MATRIX}.get(method, STATIC)


@dataclass(frozen=True)
class MemoryPlan:
    """A zoo's estimated memory (bytes): the download, the loaded zoo, and each kind of merge's peak (zoo included);
    adaptation's peak is the merge's plus :attr:`adapt_step` for a step of :attr:`adapt_images` images."""

    shape: ZooShape
    download: int
    load: int
    merges: dict[str, int]
    adapt_images: int
    adapt_step: int

    def peak(self, kind: str, adapting: bool = False) -> int:
        """The estimated peak of a merge of ``kind`` (with an adaptation step when ``adapting``)."""
        return self.merges[kind] + (self.adapt_step if adapting else 0)


def plan(shape: ZooShape, per_task: int = 16, loaded_experts: int | None = None) -> MemoryPlan:
    """The memory plan of a zoo, adaptation drawing ``per_task`` images from every task per step (the default's 16)."""
    load = load_bytes(shape, loaded_experts)
    images = per_task * shape.experts
    return MemoryPlan(shape=shape, download=download_bytes(shape), load=load,
                      merges={kind: load + merge_bytes(shape, kind) for kind in KINDS},
                      adapt_images=images, adapt_step=activation_bytes(shape, images))


# ---------------------------------------------------------------------------------------------------------------
# The budget and the refusal


BUDGET_VARIABLE = "MERGE_EXPLORER_MEMORY_MB"


def memory_budget() -> tuple[int, str]:
    """The memory a merge may use (bytes) and where that figure comes from: ``MERGE_EXPLORER_MEMORY_MB`` when set,
    else the machine's physical memory."""
    text = os.environ.get(BUDGET_VARIABLE, "").strip()
    if text:
        try:
            return int(float(text) * 2**20), f"{BUDGET_VARIABLE}={text}"
        except ValueError:
            pass  # a broken value: the machine's memory still bounds the merge
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: no bound
        return 2**62, "no known limit"
    return int(total), "the machine's memory"


def gb(size: float) -> str:
    """Bytes as a short figure: ``12.3 GB`` (or MB below one GB)."""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def most_experts_that_fit(shape: ZooShape, kind: str, budget: int, loaded_experts: int) -> int:
    """The largest number of this zoo's experts (2 or more) whose merge of ``kind`` fits ``budget``; 0 if none."""
    for count in range(shape.experts, 1, -1):
        if plan(shape.with_experts(count), loaded_experts=loaded_experts).peak(kind) <= budget:
            return count
    return 0


def check_merge_fits(shape: ZooShape, method: str, params: Mapping[str, Any] | None = None,
                     loaded_experts: int | None = None) -> None:
    """Raise :class:`MergeTooLarge` when the merge's estimated peak exceeds :func:`memory_budget`, naming the memory
    it needs, the budget and what to choose instead (compressed experts, fewer experts, a smaller zoo)."""
    budget, source = memory_budget()
    kind = kind_of(method, params)
    loaded = loaded_experts or shape.experts
    needed = plan(shape, loaded_experts=loaded).peak(kind)
    if needed <= budget:
        return
    raise MergeTooLarge(refusal(shape, method, kind, needed, budget, source, loaded))


def refusal(shape: ZooShape, method: str, kind: str, needed: int, budget: int, source: str, loaded: int) -> str:
    """The one message of a refused merge: what it needs, what may be used, what would fit."""
    choices = []
    if kind == WEMOE:
        compressed = plan(shape, loaded_experts=loaded).peak(WEMOE_COMPRESSED)
        verdict = "fits" if compressed <= budget else "does not fit either"
        choices.append(f"compressed experts (method wemoe_compressed, or wemoe.rank={DEFAULT_COMPRESSED_RANK}: "
                       f"about {gb(compressed)}, {verdict})")
    for option in ([kind, WEMOE_COMPRESSED] if kind == WEMOE else [kind]):
        count = most_experts_that_fit(shape, option, budget, loaded)
        if 2 <= count < shape.experts:
            what = "" if option == kind else " with compressed experts"
            choices.append(f"fewer experts: {count} of the {shape.experts} fit{what} (--tasks, or the expert choice)")
    if not any("fewer experts" in c for c in choices):
        choices.append("a zoo of a smaller model (e.g. ViT-B/32 instead of ViT-L/14), or a machine with more memory")
    return (f"{method} on {shape.name} ({shape.experts} experts) would need about {gb(needed)} at its peak "
            f"(estimated: the zoo {gb(load_bytes(shape, loaded))}, the merge the rest), more than the "
            f"{gb(budget)} allowed ({source}). Nothing was merged. Choose instead: {'; '.join(choices)}.")
