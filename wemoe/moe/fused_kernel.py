"""The fused CPU kernel for WEMoE's per-sample linear layer: compiled on first use, called through ctypes.

``wemoe/moe/kernels/ensembled_linear.cpp`` computes ``y_b = x_b W_b^T + c_b`` with ``W_b = W_0 + sum_t r_bt tau_t``
without writing any ``W_b`` to memory: it builds each sample's weights a tile at a time in cache and multiplies
there (how much that saves depends on the CPU: bench/README.md has the figures per CPU measured).
It is used for the forward pass on CPU in float32; everything else (CUDA, other dtypes, the backward pass) uses
torch ops, and so does every call when the kernel cannot be built.

It pays only for large layers, many samples and few tokens (ViT-B/32 at batch 8 and more: :func:`worthwhile`);
``wemoe.moe.ensembled_linear`` asks it for each call. Where exactly depends on the CPU:
``python -m wemoe calibrate-kernel`` measures it on this machine and stores a policy that :func:`worthwhile` then
follows (``wemoe.moe.kernel_policy``).
``WEMOE_FUSED_KERNEL`` (read on every call): ``auto`` (default), ``1`` for every float32 CPU call (the tests use this),
``0`` never.

The first call compiles it with ``$CXX`` (default ``g++``), ``-O3 -march=native``, about 2 s, into
``$WEMOE_KERNEL_CACHE`` (default ``~/.cache/wemoe/kernels``), keyed by the source, the compiler and the CPU, so a
machine reuses its build and a different CPU gets its own. No compiler, or a failed build: one warning, then torch
ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from wemoe.moe import kernel_policy
from wemoe.moe.kernel_cache import KERNEL_SOURCE, cache_dir, cpu_signature

FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")
ENV_SWITCH = "WEMOE_FUSED_KERNEL"

log = logging.getLogger(__name__)


def _switch() -> str:
    """``WEMOE_FUSED_KERNEL``: ``auto`` (default: where it pays, see :func:`worthwhile`), ``1`` (always), ``0``
    (never)."""
    value = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    return "0" if value in {"0", "false", "no", "off"} else "1" if value in {"1", "true", "yes", "on"} else "auto"


@contextlib.contextmanager
def switched(value: str) -> Iterator[None]:
    """``WEMOE_FUSED_KERNEL=value`` inside the block, restored after (benchmarks time both paths this way)."""
    previous = os.environ.get(ENV_SWITCH)
    os.environ[ENV_SWITCH] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[ENV_SWITCH]
        else:
            os.environ[ENV_SWITCH] = previous


def enabled() -> bool:
    """Whether the kernel may be used at all (``WEMOE_FUSED_KERNEL`` is not ``0``)."""
    return _switch() != "0"


# Where the kernel beats torch ops with the model's reused workspace (one layer, 2 threads, this project's dev box,
# bench/README.md): it saves writing and re-reading every sample's weights, and pays with a matmul at about 75% of
# MKL's rate. ViT-B/32's MLP matrices (2.4M weights, 50 tokens): 0.80-0.96x the time at batch 8-64, but 1.3-1.8x at
# batch 2-4 and 2.1x at batch 1; 197 tokens (ViT-B/16): 1.28x; 0.25-1M weights: 1.0-1.9x; the pocket zoo's
# 65K-weight layers: 1.3-6.5x.
MIN_BATCH = 8
MAX_TOKENS = 64
MIN_WEIGHTS = 2_000_000
# The kernel's unrolled paths take up to 17 stack rows (16 experts + W_0); beyond, its generic loop is far slower:
# T=20, ViT-B/32's MLP at batch 16-64: 43-45x the dense MLP against 4.7-5.7x for torch ops (bench/wemoe_scaling.py).
MAX_EXPERTS = 16


def worthwhile(batch: int, tokens: int, out_features: int, in_features: int, experts: int = 0) -> bool:
    """Whether the kernel should serve a layer of this shape: always under ``WEMOE_FUSED_KERNEL=1``, never under ``0``,
    otherwise only where it measured faster: at least ``MIN_WEIGHTS`` weights and at most ``MAX_EXPERTS`` experts,
    and then this CPU's measured policy (``python -m wemoe calibrate-kernel``, ``wemoe.moe.kernel_policy``) or, without
    one, the built-in rule (at least ``MIN_BATCH`` samples of at most ``MAX_TOKENS`` tokens)."""
    switch = _switch()
    if switch != "auto":
        return switch == "1"
    if out_features * in_features < MIN_WEIGHTS or experts > MAX_EXPERTS:
        return False
    policy = kernel_policy.measured()
    if policy is not None:
        return policy.kernel_for(batch, tokens, experts)
    return batch >= MIN_BATCH and tokens <= MAX_TOKENS


def _compile(compiler: str) -> Path:
    """Build the shared library (or find it built) and return its path; raises on a failed build."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\n".join([KERNEL_SOURCE.read_text(), compiler, version, *FLAGS, cpu_signature()]).encode())
    target = cache_dir() / f"ensembled_linear-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([compiler, *FLAGS, str(KERNEL_SOURCE), "-o", str(built)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed:\n{result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: two processes building at once both end with a whole file
    return target


@functools.lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The compiled kernel library, or None (with one warning) when it cannot be built or loaded on this machine."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        log.warning("WEMoE fused CPU kernel off: no C++ compiler (%s) found; using torch ops", compiler)
        return None
    try:
        library = ctypes.CDLL(str(_compile(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log.warning("WEMoE fused CPU kernel off, using torch ops: %s", error)
        return None
    function = library.wemoe_ensembled_linear_forward
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 6
    sizing = library.wemoe_ensembled_linear_scratch_floats
    sizing.restype = ctypes.c_int64
    sizing.argtypes = [ctypes.c_int64] * 4
    return library


def available() -> bool:
    """Whether the kernel is enabled and built (builds it on the first call)."""
    return enabled() and load() is not None


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernel serves these tensors: all float32 on CPU, the kernel enabled and built."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and available()


def scratch_numel(x: torch.Tensor, weight_stack: torch.Tensor) -> int:
    """Floats of scratch the kernel needs for input ``x`` ``[B, N, in]`` and a ``[T + 1, out, in]`` weight stack."""
    library = load()
    if library is None:
        raise RuntimeError("the fused kernel is not available on this machine")
    batch, tokens, in_features = x.shape
    return int(library.wemoe_ensembled_linear_scratch_floats(batch, tokens, weight_stack.shape[1], in_features))


def ensembled_linear_forward(
    x: torch.Tensor,
    routing: torch.Tensor,
    weight_stack: torch.Tensor,
    bias: torch.Tensor,
    bias_tvs: torch.Tensor,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``y_b = x_b W_b^T + c_b`` through the kernel, or None where it does not apply (then use torch ops).

    Shapes as ``ensembled_linear.stacked_ensembled_linear``: x ``[B, N, in]``, routing ``[B, T]``, weight_stack
    ``[T + 1, out, in]`` (task vectors, then W_0), bias ``[out]``, bias_tvs ``[T, out]``. Applies to float32 CPU
    tensors only (see :func:`usable`); no autograd (callers wrap it). ``scratch``: float32 CPU memory of at least
    :func:`scratch_numel` elements for the kernel's reordered copy of x and its running sums (default: allocated).
    """
    if x.dim() != 3 or x.numel() == 0 or not usable(x, routing, weight_stack, bias, bias_tvs):
        return None
    library = load()
    batch, tokens, in_features = x.shape
    experts, out_features = weight_stack.shape[0], weight_stack.shape[1]
    x = x.contiguous()
    stack = weight_stack.contiguous()
    coef = torch.cat([routing, routing.new_ones(batch, 1)], dim=1).contiguous()
    biases = torch.addmm(bias.reshape(1, -1), routing, bias_tvs).contiguous()
    y = x.new_empty(batch, tokens, out_features)
    needed = scratch_numel(x, weight_stack)
    if scratch is None or scratch.numel() < needed or scratch.dtype != x.dtype or not scratch.is_contiguous():
        scratch = x.new_empty(needed)
    library.wemoe_ensembled_linear_forward(
        x.data_ptr(), coef.data_ptr(), stack.data_ptr(), biases.data_ptr(), y.data_ptr(), scratch.data_ptr(),
        batch, tokens, experts, out_features, in_features, torch.get_num_threads(),
    )
    return y
