"""fast_s2s.machine: the machine block of `fast-s2s bench` and the line `fast-s2s verify` prints
name the SIMD levels fast_s2s's kernels and torch run at, which a figure needs beside it."""

from __future__ import annotations

import torch

from fast_s2s import _extension, machine


def test_the_block_names_both_isas_and_the_summary_repeats_them(monkeypatch):
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    info = machine.describe("cpu")
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["mkl_enable_instructions"] == "AVX2"
    line = machine.summary(info)
    assert f"torch {info['torch_cpu_capability']}" in line
    assert "MKL_ENABLE_INSTRUCTIONS=AVX2" in line
    if _extension.extension_loaded():
        assert f"fast_s2s CPU kernels {_extension.cpu_capability()}" in line
    else:
        assert "fast_s2s CPU kernels not loaded" in line


def test_the_summary_shortens_mkls_banner_and_names_a_gpu():
    info = {
        "cpu": "Some CPU", "cpu_count": 8, "torch_threads": 4, "cpu_capability": "avx2",
        "torch_cpu_capability": "AVX2",
        "blas": "mkl (Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605)",
        "gpu": "NVIDIA H100", "gpu_capability": "9.0",
    }  # fmt: skip
    assert machine.summary(info) == (
        "Some CPU, 8 cores, torch threads 4; fast_s2s CPU kernels avx2, torch AVX2, BLAS mkl "
        "2024.2; GPU NVIDIA H100 (compute capability 9.0)"
    )
