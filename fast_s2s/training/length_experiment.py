"""The bottleneck experiment (`fast-s2s experiment length`, fast_s2s.cli.experiment).

The argument of Bahdanau et al. (2014): a classic encoder-decoder (Sutskever et al. 2014, Cho
et al. 2014) squeezes the whole source into one fixed vector, so its quality falls as sources
get longer; attention reads every encoder state and removes that bottleneck. This command
measures it: it trains the classic model (attention="none"), the attentional one (Bahdanau,
global attention over every source position) and Luong's local-p attention (general score, a
window of 2D + 1 = 21 positions around a predicted position, Luong et al. 2015) with the same
sizes, data, seed and budget (the same number of Adam steps, or the same seconds each) on the
reverse task with sources of 5 to 60 symbols, then decodes held-out sources bucketed by length
(greedy) and reports exact match and token accuracy per bucket:

    fast-s2s experiment length                       # defaults: 3 models x 3000 steps, 1 thread
    fast-s2s experiment length --budget 300s --out runs/bottleneck
    fast-s2s experiment length --models attention,luong,local_p --window 10
    fast-s2s experiment length --tiny                # seconds: a smoke test of the pipeline

The models (--models, MODEL_CHOICES): classic, attention (Bahdanau additive), luong (Luong
general, global), local_p and local_m (Luong general, local, window --window). On the reverse
task the alignment runs backwards (target t reads source L - 1 - t), which local-p can predict
and local-m (p_t = t) cannot: local_m is there to show that.

Outputs in --out: bottleneck.json (settings and every number), bottleneck.png (accuracy against
source length, one line per model), and the same numbers as a table on the console.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch
from rich.console import Console
from rich.table import Table

from fast_s2s.data import (
    Vocab,
    build_vocabs,
    encode_pairs,
    generate_pairs,
    make_batches,
    tokenize_pairs,
)
from fast_s2s.models import Seq2Seq, Seq2SeqConfig, greedy_decode
from fast_s2s.training.optimizer import adam

__all__ = [
    "DEFAULT_MODELS",
    "MODEL_CHOICES",
    "TINY",
    "LengthSettings",
    "length_buckets",
    "parse_budget",
    "run_length_experiment",
]

# classic: attention="none"; attention: Bahdanau additive; luong: Luong general (global);
# local_p / local_m: Luong general with local-p / local-m attention (window LengthSettings.window).
MODEL_CHOICES = ("classic", "attention", "luong", "local_p", "local_m")
DEFAULT_MODELS = ("classic", "attention", "local_p")


@dataclass
class LengthSettings:
    """Everything the length experiment depends on (saved in the JSON)."""

    min_len: int = 5
    max_len: int = 60
    bucket_width: int = 10
    vocab_size: int = 20  # symbols t0 .. t19
    train_size: int = 40000  # generated training pairs, cycled in shuffled epochs
    test_per_bucket: int = 100
    embed_size: int = 64
    hidden_size: int = 128
    batch_size: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    steps: int | None = 3000  # the budget: Adam steps per model ...
    seconds: float | None = None  # ... or seconds of training per model
    seed: int = 0
    backend: str = "auto"
    threads: int = 1
    buckets: list[tuple[int, int]] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    window: int = 10  # D of local_p / local_m

    def __post_init__(self) -> None:
        self.models = list(self.models)
        unknown = [m for m in self.models if m not in MODEL_CHOICES]
        if unknown or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(
                f"--models must name distinct models of {', '.join(MODEL_CHOICES)}, got "
                f"{','.join(self.models) or 'none'}"
            )
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 0:
            raise ValueError(f"--window must be a non-negative integer, got {self.window!r}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("give exactly one budget: steps or seconds")
        if not self.buckets:
            self.buckets = length_buckets(self.min_len, self.max_len, self.bucket_width)


TINY = dict(
    train_size=400,
    test_per_bucket=4,
    embed_size=8,
    hidden_size=16,
    batch_size=16,
    steps=6,
    seconds=None,
)


def length_buckets(min_len: int, max_len: int, width: int) -> list[tuple[int, int]]:
    """Inclusive (low, high) source-length ranges: 5-10, 11-20, ... 51-60 for 5..60 by 10."""
    edges = list(range(math.ceil((min_len + 1) / width) * width, max_len, width))
    lows = [min_len] + [edge + 1 for edge in edges]
    highs = edges + [max_len]
    return list(zip(lows, highs, strict=True))


def parse_budget(text: str) -> tuple[int | None, float | None]:
    """--budget: "2000" (Adam steps per model, at most 2**31 - 1) or "300s" (seconds per model,
    a finite number); NaN, infinity and anything not positive are refused."""
    value = text.strip().lower()
    try:
        if value.endswith("s"):
            seconds = float(value[:-1])
            if 0 < seconds < math.inf:
                return None, seconds
        else:
            steps = int(value)
            if 0 < steps < 2**31:
                return steps, None
    except ValueError:
        pass
    raise ValueError(
        f"--budget must be a positive step count (2000) or seconds (300s), got {text!r}"
    )


def _data(s: LengthSettings) -> tuple[list, dict[tuple[int, int], list], tuple[Vocab, Vocab]]:
    """Training examples, held-out examples per bucket, and the (source, target) vocabularies."""
    common = dict(min_len=s.min_len, max_len=s.max_len, vocab_size=s.vocab_size)
    train_pairs = tokenize_pairs(generate_pairs("reverse", s.train_size, s.seed, **common), "word")
    src_vocab, tgt_vocab = build_vocabs(train_pairs)
    train = encode_pairs(train_pairs, src_vocab, tgt_vocab)
    tests = {}
    for i, (low, high) in enumerate(s.buckets):
        pairs = generate_pairs(
            "reverse", s.test_per_bucket, s.seed + 1000 + i, low, high, s.vocab_size
        )
        tests[(low, high)] = encode_pairs(tokenize_pairs(pairs, "word"), src_vocab, tgt_vocab)
    return train, tests, (src_vocab, tgt_vocab)


def _model_fields(s: LengthSettings, model: str) -> dict:
    """The Seq2SeqConfig fields that make `model` (MODEL_CHOICES) what it is."""
    if model == "classic":
        return dict(attention="none")
    if model == "attention":
        return dict(wiring="bahdanau", score="additive")
    luong = dict(wiring="luong", score="general")
    if model == "luong":
        return luong
    return dict(luong, local=model[-1], window=s.window)  # local_p / local_m


def _config(s: LengthSettings, vocabs: tuple[Vocab, Vocab], model: str) -> Seq2SeqConfig:
    src_vocab, tgt_vocab = vocabs
    return Seq2SeqConfig(
        src_vocab_size=len(src_vocab),
        tgt_vocab_size=len(tgt_vocab),
        embed_size=s.embed_size,
        hidden_size=s.hidden_size,
        backend=s.backend,
        pad_id=tgt_vocab.pad_id,
        bos_id=tgt_vocab.bos_id,
        eos_id=tgt_vocab.eos_id,
        **_model_fields(s, model),
    )


def train_one(s: LengthSettings, config: Seq2SeqConfig, train: list) -> tuple[Seq2Seq, dict]:
    """Adam with clipping over shuffled, length-bucketed epochs until the budget is spent."""
    torch.manual_seed(s.seed)
    model = Seq2Seq(config)
    optimizer = adam(model.parameters(), s.lr)
    steps, losses, epoch = 0, [], 0
    started = time.perf_counter()

    def spent() -> bool:
        if s.steps is not None:
            return steps >= s.steps
        return time.perf_counter() - started >= s.seconds

    model.train()
    while not spent():
        for batch in make_batches(train, s.batch_size, shuffle=True, seed=s.seed + epoch):
            loss, n_tokens = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            loss = loss / max(1, n_tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
            optimizer.step()
            losses.append(loss.item())
            steps += 1
            if spent():
                break
        epoch += 1
    tail = losses[-50:]
    stats = {
        "steps": steps,
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(sum(tail) / max(1, len(tail)), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model.eval(), stats


def _token_accuracy(hyp: list[int], ref: list[int]) -> float:
    """Positions where hyp and ref agree, over the longer of the two."""
    hits = sum(a == b for a, b in zip(hyp, ref, strict=False))
    return hits / max(len(hyp), len(ref), 1)


def evaluate_buckets(model: Seq2Seq, tests: dict, batch_size: int = 100) -> list[dict]:
    """Greedy decoding of every bucket: exact match and mean token accuracy."""
    rows = []
    for (low, high), examples in tests.items():
        exact = token = 0.0
        for batch in make_batches([(src, []) for src, _ in examples], batch_size):
            hyps = greedy_decode(model, batch.src, batch.src_lengths, max_len=high + 10)
            for index, hyp in zip(batch.indices, hyps, strict=True):
                ref = examples[index][1]
                exact += hyp.tokens == ref
                token += _token_accuracy(hyp.tokens, ref)
        n = max(1, len(examples))
        rows.append(
            {"lengths": f"{low}-{high}", "low": low, "high": high, "n": len(examples),
             "exact": round(exact / n, 4), "token_accuracy": round(token / n, 4)}
        )  # fmt: skip
    return rows


def run_length_experiment(s: LengthSettings, out: str, console: Console | None = None) -> dict:
    """Train every model of s.models, evaluate per length bucket, write bottleneck.json / .png
    to `out`."""
    console = console or Console()
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        train, tests, vocabs = _data(s)
        budget = f"{s.steps} steps" if s.steps is not None else f"{s.seconds:g} s"
        console.print(
            f"bottleneck experiment: reverse, lengths {s.min_len}-{s.max_len}, "
            f"{len(train):,} training pairs, embed {s.embed_size}, hidden {s.hidden_size}, "
            f"budget {budget} per model, {s.threads} thread(s); models {', '.join(s.models)}"
        )
        results: dict = {"task": "reverse", "settings": asdict(s), "models": {}}
        for name in s.models:
            config = _config(s, vocabs, name)
            model, stats = train_one(s, config, train)
            stats["config"] = config.to_dict()
            stats["buckets"] = evaluate_buckets(model, tests)
            results["models"][name] = stats
            console.print(
                f"{name}: {stats['steps']} steps in {stats['train_seconds']} s, "
                f"final loss {stats['final_loss']}"
            )
    finally:
        torch.set_num_threads(threads)
    console.print(results_table(results))
    os.makedirs(out, exist_ok=True)
    json_path, png_path = os.path.join(out, "bottleneck.json"), os.path.join(out, "bottleneck.png")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    from fast_s2s.training.plotting import plot_length_curves, plotting_unavailable

    missing = plotting_unavailable()
    if missing:  # the numbers are in the JSON and the table; only the figure is skipped
        console.print(f"wrote {json_path}; no {png_path}: {missing}", markup=False)
        return results
    plot_length_curves(results, png_path)
    console.print(f"wrote {json_path} and {png_path}", markup=False)
    return results


def results_table(results: dict) -> Table:
    """The per-bucket numbers of every model as a rich table."""
    table = Table(title="accuracy by source length (greedy decoding, held-out)")
    table.add_column("source length")
    table.add_column("n", justify="right")
    names = list(results["models"])
    for name in names:
        table.add_column(f"{name} exact", justify="right")
    for name in names:
        table.add_column(f"{name} token acc.", justify="right")
    buckets = [results["models"][name]["buckets"] for name in names]
    for rows in zip(*buckets, strict=True):
        exact = [f"{100 * r['exact']:.1f}%" for r in rows]
        token = [f"{100 * r['token_accuracy']:.1f}%" for r in rows]
        table.add_row(rows[0]["lengths"], str(rows[0]["n"]), *exact, *token)
    return table
