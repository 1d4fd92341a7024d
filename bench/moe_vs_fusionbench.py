"""WEMoE forward and forward+backward: dense tower vs ours (``wemoe.moe.layer``) vs FusionBench's WeightEnsemblingMoE.

The tower is open_clip's ViT-B/32 image tower with random weights; the experts are the base plus small random task
vectors. Three variants of the same tower:

- dense: the task-arithmetic merge (``theta_0 + lambda * sum_t tau_t``);
- ours: ``wemoe.moe.layer.upscale_to_wemoe`` (every block's MLP upscaled), routers given random weights so routing
  differs per sample; on CPU its forward runs the fused kernel (``wemoe.moe.fused_kernel``);
- ours_torch_ops: the same model with the kernel switched off (``WEMOE_FUSED_KERNEL=0`` during its steps): torch ops,
  per-sample weights written into the model's workspace;
- fusionbench: the dense tower with every block's MLP wrapped by ``fusion_bench.models.we_moe.WeightEnsemblingMoE``
  (batch_first=True, batch_reduce=False), its gates holding copies of our routers' weights.

Times are taken interleaved in one process (warm-up, then the median of ``--runs`` runs); the extra peak memory of
one step is measured per variant in a fresh process. Every process runs with ``MALLOC_MMAP_THRESHOLD_=1048576`` (the
script re-executes itself to set it): glibc then returns freed scratch space at once, so a peak reflects what a step
really holds, and the timing process does not keep FusionBench's freed per-sample weights (without it, the full-size
run grew past 20 GB). The last line printed is one JSON object; progress goes to stderr.

Run it in the FusionBench venv (``bash bench/setup_fusionbench.sh`` makes it):
    bench/.venv-fusionbench/bin/python bench/moe_vs_fusionbench.py
Without FusionBench (any python with our requirements): ``python bench/moe_vs_fusionbench.py --no-fusionbench``.
Tiny run: ``--layers 2 --width 64 --image-size 32 --patch-size 16 --batch 2 --runs 2 --warmup 1``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wemoe  # noqa: E402,F401  (before open_clip: the torchvision compatibility step)  # isort: skip
import open_clip  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from wemoe.methods import get_method  # noqa: E402
from wemoe.moe import fused_kernel  # noqa: E402
from wemoe.moe.layer import WEMoEConfig, moe_layers, upscale_to_wemoe  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402

VARIANTS = ("dense", "ours", "ours_torch_ops", "fusionbench")
OURS_ONLY = ("dense", "ours", "ours_torch_ops")
MODES = ("fwd", "fwdbwd")
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are the issue's setting (ViT-B/32, T=8, batch 16 at 224, 2 threads)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12, help="transformer blocks in the image tower")
    p.add_argument("--width", type=int, default=768, help="token width (heads = width // 64)")
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--experts", type=int, default=8, help="T, the number of experts")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--runs", type=int, default=10, help="timed runs per variant and mode (the median is reported)")
    p.add_argument("--fusionbench-runs", type=int, default=None,
                   help="timed runs of FusionBench (default: --runs); its fwd+bwd takes minutes on 2 busy cores")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds first (after the correctness check, which already ran every variant once)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--tv-scale", type=float, default=0.01, help="task vector size relative to each tensor's std")
    p.add_argument("--lambda", dest="lambda_", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fusionbench", action="store_true", help="only dense and ours (no FusionBench install needed)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant peak memory subprocesses")
    p.add_argument("--default-malloc", action="store_true",
                   help="time with glibc's default malloc settings (memory probes still set MALLOC_MMAP_THRESHOLD_); "
                        "with FusionBench this can grow past 20 GB")
    p.add_argument("--memory-probe", nargs=2, metavar=("VARIANT", "MODE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- building the three towers


def build_zoo(args: argparse.Namespace) -> Zoo:
    """A random open_clip CLIP (the image tower as configured, a tiny text tower) and T noisy copies as experts."""
    torch.manual_seed(args.seed)
    vision = {"image_size": args.image_size, "layers": args.layers, "width": args.width, "patch_size": args.patch_size,
              "head_width": 64}
    clip = open_clip.CLIP(embed_dim=512, vision_cfg=vision, text_cfg=TINY_TEXT).eval()
    generator = torch.Generator().manual_seed(args.seed + 1)
    base = clip.visual.state_dict()
    experts = {}
    for t in range(args.experts):
        state = {}
        for key, value in base.items():
            if not torch.is_floating_point(value):
                state[key] = value.clone()
                continue
            scale = args.tv_scale * (float(value.std()) if value.numel() > 1 else 1.0)
            state[key] = value + torch.randn(value.shape, generator=generator) * scale
        experts[f"task{t}"] = state
    return Zoo("bench", clip, experts, preprocess=lambda image: image, tokenizer=open_clip.get_tokenizer("ViT-B-32"))


def build_ours(zoo: Zoo, args: argparse.Namespace) -> nn.Module:
    """Our WEMoE tower, every router given small random weights (seeded) so that each sample routes differently."""
    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lambda_, router_hidden_layers=1))
    generator = torch.Generator().manual_seed(args.seed + 2)
    with torch.no_grad():
        for layer in moe_layers(tower).values():
            for linear in (m for m in layer.router.net if isinstance(m, nn.Linear)):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.02)
    return tower


def build_fusionbench(zoo: Zoo, ours: nn.Module, args: argparse.Namespace) -> nn.Module:
    """The task-arithmetic tower with every block's MLP wrapped by FusionBench's WeightEnsemblingMoE.

    FusionBench counts router layers by Linear layers: its ``router_hidden_layers=2`` (fc1 - ReLU - fc2) is our
    ``router_hidden_layers=1`` (Linear - ReLU - Linear), so the gates take our routers' weights one to one.
    """
    from fusion_bench.models.we_moe import WeightEnsemblingMoE

    tower = build_dense(zoo, args)
    routers = moe_layers(ours)
    for index, block in enumerate(tower.transformer.resblocks):
        prefix = f"transformer.resblocks.{index}.mlp."
        # It computes task vectors in place from the experts' *trainable* parameters: pass copies, grad on.
        base_mlp = copy.deepcopy(zoo.visual.transformer.resblocks[index].mlp).requires_grad_(True)
        expert_mlps = []
        for state in zoo.experts.values():
            mlp = copy.deepcopy(base_mlp)
            mlp.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            expert_mlps.append(mlp)
        moe = WeightEnsemblingMoE(args.width, base_mlp, expert_mlps, init_lambda=args.lambda_, batch_first=True,
                                  router_hidden_layers=2, batch_reduce=False)
        net = routers[index].router.net
        with torch.no_grad():
            for ours_linear, fb_linear in ((net[0], moe.gate.fc1), (net[2], moe.gate.fc2)):
                fb_linear.weight.copy_(ours_linear.weight)
                fb_linear.bias.copy_(ours_linear.bias)
        block.mlp = moe
    tower.requires_grad_(False)
    for block in tower.transformer.resblocks:
        block.mlp.gate.requires_grad_(True)
    return tower


def build_dense(zoo: Zoo, args: argparse.Namespace) -> nn.Module:
    """The task-arithmetic merge of the zoo (through our method registry)."""
    return get_method("task_arithmetic")(zoo, **{"lambda": args.lambda_})


def build_variants(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, nn.Module]:
    """The requested towers on ``args.device``; the zoo (T full expert towers) is dropped before returning."""
    zoo = build_zoo(args)
    ours = build_ours(zoo, args)
    towers: dict[str, nn.Module] = {}
    for name in names:
        if name == "dense":
            towers[name] = build_dense(zoo, args)
        elif name in ("ours", "ours_torch_ops"):
            towers[name] = ours
        elif name == "fusionbench":
            towers[name] = build_fusionbench(zoo, ours, args)
        else:
            raise ValueError(f"Unknown variant {name!r}; variants: dense, ours, ours_torch_ops, fusionbench.")
    del zoo, ours
    gc.collect()
    return {name: tower.to(args.device).eval() for name, tower in towers.items()}


# ---------------------------------------------------------------- one step of each kind


def trainable(tower: nn.Module) -> list[nn.Parameter]:
    """The parameters a step trains: the routers (none for the dense tower)."""
    return [p for p in tower.parameters() if p.requires_grad]


def make_step(tower: nn.Module, mode: str, images: torch.Tensor, kernel: bool = True) -> Callable[[], torch.Tensor]:
    """A callable running one forward (no grad) or one forward+backward into the routers; returns the output.

    The dense tower has no routers: its forward+backward takes the gradient with respect to the input images, so
    the backward pass still runs through every block (the lower bound for any router gradient).
    ``kernel=False``: WEMoE's fused CPU kernel is switched off during the step.
    """
    params = trainable(tower)
    step = forward_step if mode == "fwd" else forward_backward_step
    if kernel:
        return lambda: step(tower, images, params)

    def without_kernel() -> torch.Tensor:
        with fused_kernel.switched("0"):
            return step(tower, images, params)

    return without_kernel


def variant_step(towers: dict[str, nn.Module], name: str, mode: str,
                 images: torch.Tensor) -> Callable[[], torch.Tensor]:
    """:func:`make_step` for a named variant (``ours_torch_ops`` runs ours with the kernel off)."""
    return make_step(towers[name], mode, images, kernel=name != "ours_torch_ops")


def forward_step(tower: nn.Module, images: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """One forward pass without gradients."""
    with torch.no_grad():
        return tower(images)


def forward_backward_step(tower: nn.Module, images: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """One forward pass, loss = mean of squared outputs, backward into ``params`` (or the images when none)."""
    for p in params:
        p.grad = None
    x = images if params else images.detach().requires_grad_(True)
    out = tower(x)
    out.square().mean().backward()
    return out.detach()


def sync(device: str) -> None:
    """Wait for queued GPU work so that wall-clock times are honest."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(steps: dict[str, Callable[[], torch.Tensor]], runs: dict[str, int], warmup: int,
                     device: str) -> dict[str, float]:
    """Median milliseconds per step, the variants taking turns in every round so drifts hit all of them alike.

    ``runs[name]`` timed runs of each variant after ``warmup`` untimed rounds; a variant with fewer runs stops early.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(warmup + max(runs.values())):
        for name, step in steps.items():
            if round_ >= warmup + runs[name]:
                continue
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(ms) for name, ms in times.items()}


# ---------------------------------------------------------------- memory


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def model_bytes(tower: nn.Module) -> int:
    """Bytes of the tower's parameters and buffers (each storage counted once)."""
    seen: dict[int, int] = {}
    for tensor in list(tower.parameters()) + list(tower.buffers()):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def stacked_mlp_task_vector_bytes(tower: nn.Module) -> int:
    """Bytes of the MLP task vectors stacked for every upscaled layer (what any WEMoE must hold besides the tower)."""
    return sum(
        getattr(layer, name).numel() * getattr(layer, name).element_size()
        for layer in moe_layers(tower).values()
        for name in ("c_fc_weight_tvs", "c_fc_bias_tvs", "c_proj_weight_tvs", "c_proj_bias_tvs")
    )


def memory_probe(args: argparse.Namespace) -> dict:
    """In this (fresh) process: build one variant, warm up, then the extra peak memory of one step in MB."""
    variant, mode = args.memory_probe
    towers = build_variants(args, (variant,))
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device)
    # warm-up (lazy initialisations) on 2 images: FusionBench's fwd+bwd is slow
    variant_step(towers, variant, mode, images[:2])()
    step = variant_step(towers, variant, mode, images)
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return {"extra_mb": (torch.cuda.max_memory_allocated() - before) / 2**20}
    reset_peak_rss()
    before = _rss_kb("VmRSS")
    step()
    return {"extra_mb": (_rss_kb("VmHWM") - before) / 1024}


def measure_memory(args: argparse.Namespace, argv: list[str], variant: str, mode: str) -> float:
    """Run :func:`memory_probe` for one variant and mode in a fresh process; the extra peak in MB."""
    env = {**os.environ, **MMAP_ENV}
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory-probe", variant, mode]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {variant}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["extra_mb"]


# ---------------------------------------------------------------- main


def fusionbench_available() -> str | None:
    """None when FusionBench's WEMoE imports, else why not."""
    try:
        from fusion_bench.models.we_moe import WeightEnsemblingMoE  # noqa: F401
    except Exception as error:  # noqa: BLE001  (any import failure means: not installed here)
        return f"{type(error).__name__}: {error}"
    return None


def table(rows: list[list[str]]) -> str:
    """A plain aligned text table, the first row as header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress on stderr (stdout carries the tables and the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Build the variants, check ours against FusionBench, time them, measure memory; print tables, return figures."""
    variants = OURS_ONLY if args.no_fusionbench else VARIANTS
    log(f"building {', '.join(variants)}")
    towers = build_variants(args, variants)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size,
                         generator=torch.Generator().manual_seed(args.seed + 3)).to(args.device)
    result: dict = {"malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "default"),
                    "device": args.device, "threads": torch.get_num_threads(), "batch": args.batch,
                    "layers": args.layers, "width": args.width, "image_size": args.image_size,
                    "patch_size": args.patch_size, "experts": args.experts, "runs": args.runs,
                    "torch": torch.__version__, "machine": platform.processor() or platform.machine()}

    ours_out = make_step(towers["ours"], "fwd", images)()
    result["max_abs_diff_ours_dense"] = float((ours_out - make_step(towers["dense"], "fwd", images)()).abs().max())
    torch_ops_out = variant_step(towers, "ours_torch_ops", "fwd", images)()
    result["max_abs_diff_ours_torch_ops"] = float((ours_out - torch_ops_out).abs().max())
    tokens = (args.image_size // args.patch_size) ** 2 + 1
    result["fused_kernel"] = fused_kernel.available() and fused_kernel.worthwhile(
        args.batch, tokens, 4 * args.width, args.width
    )
    log("checking ours against FusionBench (outputs, router gradients)")
    if "fusionbench" in towers:
        result["max_abs_diff"] = float((ours_out - make_step(towers["fusionbench"], "fwd", images)()).abs().max())
        grads = {}
        for name in ("ours", "fusionbench"):
            make_step(towers[name], "fwdbwd", images)()
            grads[name] = torch.cat([p.grad.flatten() for p in trainable(towers[name])])
        result["max_abs_diff_router_grad"] = float((grads["ours"] - grads["fusionbench"]).abs().max())

    for mode in MODES:
        log(f"timing {mode}: {args.warmup} + {args.runs} rounds")
        steps = {name: variant_step(towers, name, mode, images) for name in towers}
        runs = {name: args.fusionbench_runs or args.runs if name == "fusionbench" else args.runs for name in steps}
        result[f"runs_{mode}"] = runs
        for name, ms in time_interleaved(steps, runs, args.warmup, args.device).items():
            result[f"{mode}_ms_{name}"] = ms
        log(f"{mode} ms: " + ", ".join(f"{name} {result[f'{mode}_ms_{name}']:.0f}" for name in steps))

    ours = towers["ours"]
    dense_bytes, tv_bytes = model_bytes(towers["dense"]), stacked_mlp_task_vector_bytes(ours)
    ours_bytes = model_bytes(ours)
    result["model_mb_dense"] = dense_bytes / 2**20
    result["model_mb_stacked_mlp_tvs"] = tv_bytes / 2**20
    result["model_mb_ours"] = ours_bytes / 2**20
    result["model_memory_ratio"] = ours_bytes / (dense_bytes + tv_bytes)
    if "fusionbench" in towers:
        result["model_mb_fusionbench"] = model_bytes(towers["fusionbench"]) / 2**20
    del towers, steps
    gc.collect()

    if not args.no_memory:
        for mode in MODES:
            for name in variants:
                log(f"peak memory {name} {mode} (fresh process)")
                result[f"extra_mem_mb_{name}_{mode}"] = measure_memory(args, argv, name, mode)
                log(f"  {result[f'extra_mem_mb_{name}_{mode}']:.0f} MB")

    for mode in MODES:
        for name in variants:
            result[f"{mode}_ratio_{name}_vs_dense"] = result[f"{mode}_ms_{name}"] / result[f"{mode}_ms_dense"]
        if "fusionbench" in variants:
            result[f"{mode}_ratio_fusionbench_vs_ours"] = result[f"{mode}_ms_fusionbench"] / result[f"{mode}_ms_ours"]
    return result


def report(result: dict, variants: tuple[str, ...]) -> str:
    """The human-readable tables."""
    rows = [["variant", "fwd ms", "x dense", "fwd+bwd ms", "x dense", "extra MB fwd", "extra MB fwd+bwd"]]
    for name in variants:
        rows.append([name, f"{result[f'fwd_ms_{name}']:.1f}", f"{result[f'fwd_ratio_{name}_vs_dense']:.2f}",
                     f"{result[f'fwdbwd_ms_{name}']:.1f}", f"{result[f'fwdbwd_ratio_{name}_vs_dense']:.2f}",
                     *(f"{result[k]:.0f}" if k in result else "-"
                       for k in (f"extra_mem_mb_{name}_fwd", f"extra_mem_mb_{name}_fwdbwd"))])
    lines = [
        f"WEMoE tower: {result['layers']} blocks, width {result['width']}, {result['image_size']}px/patch "
        f"{result['patch_size']}, T={result['experts']}, batch {result['batch']}, {result['device']} "
        f"({result['threads']} threads), median of "
        + ", ".join(f"{n} {name}" for name, n in result["runs_fwd"].items()) + " runs",
        table(rows),
        "(dense fwd+bwd: gradient w.r.t. the input images, through every block)",
        f"model memory: ours {result['model_mb_ours']:.0f} MB = {result['model_memory_ratio']:.3f} x "
        f"(dense {result['model_mb_dense']:.0f} MB "
        f"+ stacked MLP task vectors {result['model_mb_stacked_mlp_tvs']:.0f} MB)",
        f"fused CPU kernel used by ours' forward: {result['fused_kernel']}; max |ours - ours_torch_ops| "
        f"{result['max_abs_diff_ours_torch_ops']:.2e}",
    ]
    if "fusionbench" in variants:
        lines += [
            f"FusionBench / ours: fwd {result['fwd_ratio_fusionbench_vs_ours']:.2f}x, "
            f"fwd+bwd {result['fwdbwd_ratio_fusionbench_vs_ours']:.2f}x",
            f"max |ours - FusionBench|: output {result['max_abs_diff']:.2e}, "
            f"router grads {result['max_abs_diff_router_grad']:.2e}  (must be <= 1e-4)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Entry point: prints the tables, then the figures as one JSON line (also returned)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        result = memory_probe(args)
        print(json.dumps(result))
        return result
    if not args.no_fusionbench and (why := fusionbench_available()):
        sys.exit(f"FusionBench is not importable here ({why}). Run `bash bench/setup_fusionbench.sh` and use "
                 "bench/.venv-fusionbench/bin/python, or pass --no-fusionbench.")
    result = run(args, argv)
    print(report(result, OURS_ONLY if args.no_fusionbench else VARIANTS))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and "--default-malloc" not in sys.argv:
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
                  {**os.environ, **MMAP_ENV})
    main()
