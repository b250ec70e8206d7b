"""Median latency of one GRU forward on the CPU, interleaved in one process: torch.nn.GRU,
fast_s2s.nn.GRU (the same weights), ONNX Runtime and OpenVINO (f32, and OpenVINO's default
precision) at the same thread count. A quick look before the peers join `fast-s2s bench`.

    .venv/bin/python scripts/runtime_peers_probe.py [--threads 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch

import fast_s2s.nn
from fast_s2s.peers.onnx_gru import RUNTIMES, gru_inputs, gru_onnx_model, make_runner

# (label, T, B, I = H, layers, bidirectional)
SHAPES = [
    ("encoder, batch 1", 25, 1, 64, 1, True),
    ("T=25 B=1 H=256 2L bi", 25, 1, 256, 2, True),
    ("T=50 B=16 H=512 1L", 50, 16, 512, 1, False),
    ("T=50 B=16 H=512 2L bi", 50, 16, 512, 2, True),
]


def implementations(steps, batch, hidden, layers, bi, threads) -> dict[str, Callable]:
    """One forward call of each implementation on the same weights and inputs, by label."""
    gru = torch.nn.GRU(hidden, hidden, layers, bidirectional=bi).eval()
    ours = fast_s2s.nn.GRU(hidden, hidden, layers, bidirectional=bi).eval()
    ours.load_state_dict(gru.state_dict())
    x = torch.randn(steps, batch, hidden)
    h0 = torch.randn(layers * (2 if bi else 1), batch, hidden)
    inputs = gru_inputs(x, h0)  # converted once, outside the timed calls
    model = gru_onnx_model(gru, steps=steps, batch=batch)
    calls = {"torch.nn.GRU": lambda: gru(x, h0), "fast_s2s.nn.GRU": lambda: ours(x, h0)}
    runners = [make_runner(name, model, threads) for name in RUNTIMES]
    bf16 = make_runner("openvino", model, threads, precision="default")
    runners += [bf16] if bf16.precision != "f32" else []
    calls.update({r.description: functools.partial(r, inputs) for r in runners})
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for label, steps, batch, hidden, layers, bi in SHAPES:
        calls = implementations(steps, batch, hidden, layers, bi, args.threads)
        times = {key: [] for key in calls}
        with torch.inference_mode():
            for call in calls.values():  # warm-up: first-call set-up is not timed
                for _ in range(5):
                    call()
            for _ in range(args.repeats):
                for key, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[key].append(time.perf_counter() - start)
        print(f"{label}: T={steps} B={batch} I=H={hidden} layers={layers} bidirectional={bi}")
        base = statistics.median(times["torch.nn.GRU"])
        for key, samples in times.items():
            median = statistics.median(samples)
            print(f"  {median * 1e6:10.1f} us  x{base / median:5.2f} vs torch.nn  {key}")


if __name__ == "__main__":
    main()
