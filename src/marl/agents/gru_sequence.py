"""A GRU over whole padded sequences on the CPU: PyTorch's maths, a fused C++ forward and backward.

Why: on the CPU ``nn.GRU`` is built from per-step ATen ops that autograd records one by one, so
its backward runs ~10 small ops and a weight-gradient matmul per step. At PyMARL's sizes (32
episodes x 2 agents x 50 steps, hidden 64) that made the agent's forward + backward the largest
part of a learner update. Here forward and backward are one C++ call each: time runs in
chunks of ~512 rows whose input projection (and, going back, dx, dW_ih, dW_hh) is one matmul
into buffers that stay in cache; each step does one small matmul and fused elementwise loops;
a no-grad pass (the target network) keeps no per-step intermediates.
The maths is ``nn.GRU``'s; tests/test_gru_sequence.py checks outputs and every gradient.

The kernel (``gru_sequence.cpp``) is compiled on first use (a C++ compiler is needed, ~30 s once)
into ``$MARL_CACHE`` (default ``~/.cache/marl``), keyed by the source, torch and Python versions.
Each build happens in its own temporary folder and is renamed into place, so concurrent sweep
jobs never wait on each other's lock files and a job killed mid-build leaves nothing behind.
On CUDA, ``nn.GRU`` (cuDNN) is already fused: the agent uses this on the CPU only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

SOURCE = Path(__file__).with_suffix(".cpp")
MODULE = "marl_gru_sequence"
CFLAGS = ["-O3", "-fno-trapping-math"]  # as torch itself; lets the gate loops vectorise


def cache_dir() -> Path:
    return Path(os.environ.get("MARL_CACHE", Path.home() / ".cache" / "marl"))


def _library_path() -> Path:
    key = f"{SOURCE.read_text()}|{CFLAGS}|{torch.__version__}|{sys.version}|{platform.machine()}"
    return cache_dir() / f"{MODULE}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def _build(target: Path) -> None:
    from torch.utils.cpp_extension import load

    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"marl: compiling the fused CPU GRU (once per machine and version, ~30 s) into {target.parent}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as tmp:
        module = load(name=MODULE, sources=[str(SOURCE)], extra_cflags=CFLAGS, build_directory=tmp)
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(module.__file__, staged)
        os.replace(staged, target)


@functools.cache
def kernel() -> ModuleType:
    """The compiled extension: built once per machine and version, then loaded from the cache."""
    path = _library_path()
    if not path.exists():
        _build(path)
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def available() -> bool:
    """Whether the kernel builds and loads here. If not, says why once (the agent then uses
    ``nn.GRU``: the same results, slower updates) instead of failing the run over speed."""
    try:
        kernel()
    except Exception as err:  # noqa: BLE001 - any build or load failure means "use nn.GRU"
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"the fused CPU GRU could not be built ({reason[:300]}); using nn.GRU instead, "
                      "which gives the same results with slower updates. It needs a C++ compiler "
                      "(g++) and ninja.", RuntimeWarning, stacklevel=2)
        return False
    return True


def _biases(b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """[b_ih + b_hh for r, z | b_ih for n | b_hh for n]: what the kernel adds per step."""
    H = b_ih.shape[0] // 3
    return torch.cat([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:], b_hh[2 * H:]])


class _GRUSequence(torch.autograd.Function):
    """The kernel as an autograd op; under ``torch.func.vmap`` (a vectorised learner's members)
    it runs once per member, so members keep the fused kernel rather than per-step ops."""

    @staticmethod
    def forward(x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,  # type: ignore[override]
                b_ih: torch.Tensor, b_hh: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(kernel().forward(x, h0, w_ih, w_hh, _biases(b_ih, b_hh), True))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]) -> None:
        x, h0, w_ih, w_hh, _, _ = inputs
        out, rz, n, ghn = output
        ctx.mark_non_differentiable(rz, n, ghn)
        ctx.save_for_backward(x, h0, w_ih, w_hh, out, rz, n, ghn)

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, *unused: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return tuple(kernel().backward(dout.contiguous(), *ctx.saved_tensors))

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], *args: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
        """Members one after another, each through the fused kernel.

        unbind, not select per member: autograd then joins the members' gradients with one stack;
        S selects would each scatter into a zero tensor of all S members (O(S^2) memory traffic).
        Only the output is stacked. ``rz, n, ghn`` are the kernel's intermediates for backward,
        which each member's own autograd node keeps and no caller reads, so they are returned as
        expanded zeros of the right shape rather than copied; without gradients (the target
        network) they are not computed at all.
        """
        S = info.batch_size
        split = [a.unbind(d) if d is not None else (a,) * S for a, d in zip(args, in_dims)]
        members = [[a[i].contiguous() for a in split] for i in range(S)]
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            outs = [_GRUSequence.apply(*m) for m in members]
        else:
            outs = [tuple(kernel().forward(*m[:4], _biases(*m[4:]), False)) for m in members]
        out = torch.stack([o[0] for o in outs])
        unused = tuple(torch.zeros((), dtype=x.dtype, device=x.device).expand(S, *x.shape) for x in outs[0][1:])
        return (out, *unused), (0, 0, 0, 0)


def _batched(x: torch.Tensor) -> bool:
    return bool(torch._C._functorch.is_batchedtensor(x))


def gru_sequence(rnn: nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Output of the one-layer ``rnn`` at every step: x [T, N, in], h0 [N, H] -> [T, N, H]."""
    args = (x.contiguous(), h0.contiguous(), rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    if torch.is_grad_enabled() and any(a.requires_grad for a in args) or any(_batched(a) for a in args):
        return _GRUSequence.apply(*args)[0]
    return kernel().forward(*args[:4], _biases(*args[4:]), False)[0]
