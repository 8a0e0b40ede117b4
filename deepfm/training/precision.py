"""Arithmetic precision: fp32, or bf16 where the hardware computes it faster.

With `bf16` the MLP's matrix products run under autocast in bfloat16 while everything that
accumulates stays fp32: the weights (the optimizer's master copy), the embedding tables, the FM
(its square-of-sum minus sum-of-squares cancels, which 8 mantissa bits would not survive) and the
loss. The model records its precision (model.json), so every forward pass, in training,
evaluation, the score job, the pyfunc and the exported model, computes the same way.

bf16 pays only where matrix units take it natively: AMX (Intel Sapphire Rapids and later),
AVX512-BF16 (Cooper Lake, AMD Zen 4 and later) or a CUDA GPU with bf16 (Ampere and later).
Elsewhere oneDNN converts every operand and bf16 runs slower than fp32, so training refuses it
there rather than quietly taking longer.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

from deepfm.errors import UserError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
# For checking bf16 numerics on hardware that computes it slowly (tests, CI machines): never for speed.
ALLOW_SLOW_BF16 = "DEEPFM_ALLOW_SLOW_BF16"


class PrecisionError(UserError, ValueError):
    """bf16 asked for where it would be slower than fp32."""


@dataclass(frozen=True)
class Bf16Support:
    fast: bool
    unit: str  # what computes it, or why nothing does


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_support(device: torch.device | str = "cpu") -> Bf16Support:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Bf16Support(True, f"CUDA bf16 on {name}")
        return Bf16Support(False, f"the GPU ({name}) has no native bf16")
    # torch's own checks also ask whether the OS enabled the AMX tiles, which CPU flags do not say.
    if torch.cpu._is_amx_tile_supported():
        return Bf16Support(True, f"AMX on {cpu_model()}")
    if torch.cpu._is_avx512_bf16_supported():
        return Bf16Support(True, f"AVX512-BF16 on {cpu_model()}")
    return Bf16Support(False, f"this CPU ({cpu_model()}) has neither AMX nor AVX512-BF16")


def check_precision(precision: str, device: torch.device | str, key: str = "train.precision") -> None:
    """Refuse bf16 where this device would compute it slower than fp32 (PrecisionError names `key`)."""
    if precision == "bf16" and os.environ.get(ALLOW_SLOW_BF16) != "1":
        refuse_slow_bf16(precision, bf16_support(device), key)


def refuse_slow_bf16(precision: str, support: Bf16Support, key: str) -> None:
    if precision == "bf16" and not support.fast:
        raise PrecisionError(
            f"{key} is bf16 but {support.unit}, so bf16 would train slower than fp32: set {key}: fp32, or train "
            "on a CPU with AMX or AVX512-BF16 or on a GPU with bf16 (train.device: cuda)")


def autocast(precision: str, device_type: str) -> torch.autocast:
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def round_stochastically(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 `values` in `dtype`; into bfloat16 rounded up or down at random, in proportion to the
    distance (unbiased: E[result] = values).

    A bf16 table row keeps 8 bits of mantissa: an optimizer's step smaller than half its last bit
    would round to nothing every time, and a rare value's row, which takes small steps, would stop
    learning. Rounded stochastically, such steps add up in expectation (Gupta et al., 2015;
    FBGEMM's bf16/fp16 tables do the same). The randomness is torch's global generator, which
    checkpoints keep, so a resumed run draws what the uninterrupted one drew.
    """
    if dtype != torch.bfloat16:
        return values.to(dtype)
    bits = values.float().contiguous().view(torch.int32)
    # bf16 is fp32's upper 16 bits: a uniform 16-bit carry into them, then truncation.
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)
