"""Models shipped in the package, read by name wherever a checkpoint path is taken:

    fast-s2s translate --checkpoint g2p:en tomato         # English words -> ARPAbet, stress kept
    Translator.from_checkpoint("g2p:en").translate(["tomato"], beam=1)

NAMES maps each name to its file in this folder (checkpoint format, float16 weights) and the
record beside it (`<file>.json`: how it was trained and its test figures, measured on the
float16 weights as shipped). `python -m fast_s2s.pretrained CHECKPOINT NAME` makes both from a
trained checkpoint (scripts/build_pretrained_g2p.sh is the whole recipe, training included).
A shipped model is read-only: `fast-s2s train --checkpoint g2p:en` is refused.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

__all__ = ["NAMES", "is_pretrained", "record", "resolve"]

# name -> file in this folder
NAMES: dict[str, str] = {"g2p:en": "g2p_en.pt"}


def is_pretrained(name: str | os.PathLike) -> bool:
    """Whether `name` names a shipped model (a name, never a path: "g2p:en")."""
    return isinstance(name, str) and name in NAMES


def resolve(path: str | os.PathLike) -> str | os.PathLike:
    """The file of a shipped model's name; any other path as it is."""
    if not is_pretrained(path):
        return path
    return str(resources.files(__name__).joinpath(NAMES[str(path)]))


def record(name: str) -> dict[str, Any]:
    """A shipped model's record: its training command, date, machine and test figures."""
    if not is_pretrained(name):
        raise ValueError(f"name must be one of {sorted(NAMES)}, got {name!r}")
    with open(f"{resolve(name)}.json", encoding="utf-8") as f:
        return json.load(f)
