"""What a benchmark ran on, printed beside its figures: sessions land on different machine types
(AVX2 or AVX-512 + AMX), so a figure without its machine cannot be compared with another."""

from __future__ import annotations

import os

import torch

from deepfm.training.precision import bf16_support, cpu_model

# The flags that decide which kernels oneDNN and torch pick for the model's arithmetic.
ARITHMETIC_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in ARITHMETIC_FLAGS if flag in present]
    except OSError:
        pass
    return []


def machine() -> dict:
    described = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_cpu": bf16_support("cpu").unit,
    }
    if torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name(0)
        described["bf16_gpu"] = bf16_support("cuda").unit
    return described
