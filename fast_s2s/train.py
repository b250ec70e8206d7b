"""`fast-s2s train`: data, model, Adam with clipping, bucketed batches, validation, checkpoints.

    fast-s2s train --task dates --checkpoint dates.pt          # generated task, no download
    fast-s2s train --data pairs.tsv --tokenize word ...          # source<TAB>target per line
    fast-s2s train --task tones ...                              # frames source (generated)
    fast-s2s train --data frames.npz ...                         # frames source (.pt / .npz)
    fast-s2s train --attention none ...                          # classic, no attention
    fast-s2s train ... --resume                                  # continue from --checkpoint
    torchrun --nproc-per-node 2 -m fast_s2s.cli train ...        # DistributedDataParallel

Each epoch ends with greedy decoding of the validation set (exact match and sacrebleu BLEU);
the checkpoint (model config, vocabularies, weights of the best epoch and the state to resume)
is rewritten atomically after every epoch by rank 0 only. An epoch without a better validation
exact match halves the learning rate; training stops after --epochs, after --patience such
epochs in a row, or once --time-budget is spent.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fast_s2s import checkpoint, distributed
from fast_s2s.data import (
    FRAME_TASKS,
    TASKS,
    Vocab,
    build_vocabs,
    detokenize,
    encode_pairs,
    filter_by_length,
    generate_frames,
    generate_pairs,
    is_frames_file,
    load_frames,
    make_batches,
    read_tsv,
    split,
    task_tokenization,
    tokenize,
    tokenize_pairs,
)
from fast_s2s.models import Seq2Seq, Seq2SeqConfig
from fast_s2s.models.search import beam_search, greedy_decode


@dataclass
class TrainSettings:
    """Everything about a run that is not the model: saved in the checkpoint for --resume."""

    task: str | None = "dates"
    data: str | None = None
    tokenize: str | None = None
    num_examples: int = 20000
    valid_size: int = 2000
    max_len: int = 60
    min_freq: int = 1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    patience: int = 3
    time_budget: float | None = None
    seed: int = 0
    eval_beam: int = 1


@dataclass
class PreparedData:
    """Encoded examples: (source ids or (T, F) frames tensor, target ids)."""

    train: list
    valid: list
    valid_refs: list[str]
    src_vocab: Vocab | None  # None for a frames source
    tgt_vocab: Vocab
    mode: str
    frame_size: int = 0  # F of a frames source, else 0


@dataclass
class TrainResult:
    best_exact: float = 0.0
    best_bleu: float = 0.0
    epochs_run: int = 0
    checkpoints_written: int = 0
    history: list[dict] = field(default_factory=list)
    model: Seq2Seq | None = None  # with the weights of the best epoch


def uses_frames(settings: TrainSettings) -> bool:
    """Whether the source is frames: a frames task (tones) or a .pt / .npz --data file."""
    if settings.data:
        return is_frames_file(settings.data)
    return settings.task in FRAME_TASKS


def load_pairs(settings: TrainSettings) -> tuple[list[tuple[str, str]], str]:
    """(text pairs, tokenisation mode) from the generated task or the TSV file."""
    if settings.data:
        mode = settings.tokenize or "word"
        return read_tsv(settings.data), mode
    if settings.task not in TASKS:
        choices = ", ".join(TASKS + FRAME_TASKS)
        raise ValueError(f"--task must be one of {choices}, got {settings.task!r}")
    mode = settings.tokenize or task_tokenization(settings.task)
    return generate_pairs(settings.task, settings.num_examples, seed=settings.seed), mode


def _prepare_frames(settings: TrainSettings, tgt_vocab: Vocab | None) -> PreparedData:
    """The frames path of prepare_data: --max-len limits the target tokens only."""
    if settings.data:
        frames, targets = load_frames(settings.data)
    else:
        frames, targets = generate_frames(settings.task, settings.num_examples, settings.seed)
    mode = settings.tokenize or "char"
    examples = [(f, tokenize(t, mode)) for f, t in zip(frames, targets, strict=True)]
    examples = [(f, t) for f, t in examples if t and len(t) <= settings.max_len]
    if not examples:
        raise ValueError(f"no training pairs left after filtering to --max-len {settings.max_len}")
    valid_fraction = min(0.5, settings.valid_size / len(examples))
    train_pairs, valid_pairs = split(examples, valid_fraction, seed=settings.seed)
    if tgt_vocab is None:
        tgt_vocab = Vocab.build((t for _, t in train_pairs), min_freq=settings.min_freq)
    return PreparedData(
        train=[(f, tgt_vocab.encode(t)) for f, t in train_pairs],
        valid=[(f, tgt_vocab.encode(t)) for f, t in valid_pairs],
        valid_refs=[detokenize(t, mode) for _, t in valid_pairs],
        src_vocab=None,
        tgt_vocab=tgt_vocab,
        mode=mode,
        frame_size=int(frames[0].shape[1]),
    )


def prepare_data(
    settings: TrainSettings, vocabs: tuple[Vocab | None, Vocab] | None = None
) -> PreparedData:
    """Tokenise, filter by length, split off validation, build (or reuse) vocabularies, encode.

    A frames source (uses_frames) has no source vocabulary (vocabs[0] is then None)."""
    if uses_frames(settings):
        return _prepare_frames(settings, vocabs[1] if vocabs else None)
    pairs, mode = load_pairs(settings)
    tokenized = filter_by_length(tokenize_pairs(pairs, mode), settings.max_len, settings.max_len)
    if not tokenized:
        raise ValueError(f"no training pairs left after filtering to --max-len {settings.max_len}")
    valid_fraction = min(0.5, settings.valid_size / len(tokenized))
    train_pairs, valid_pairs = split(tokenized, valid_fraction, seed=settings.seed)
    src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, min_freq=settings.min_freq)
    return PreparedData(
        train=encode_pairs(train_pairs, src_vocab, tgt_vocab),
        valid=encode_pairs(valid_pairs, src_vocab, tgt_vocab),
        valid_refs=[detokenize(tgt, mode) for _, tgt in valid_pairs],
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        mode=mode,
    )


def translate_examples(
    model: Seq2Seq,
    examples: list,
    tgt_vocab: Vocab,
    mode: str,
    *,
    batch_size: int = 128,
    beam: int = 1,
    max_len: int = 100,
    device: torch.device | str = "cpu",
) -> list[str]:
    """Decode every example's source (ids or a frames tensor), in the input order."""
    model.eval()
    outputs: list[str] = [""] * len(examples)
    batches = make_batches(
        [(src, []) for src, _ in examples],
        batch_size,
        pad_id=tgt_vocab.pad_id,
        bos_id=tgt_vocab.bos_id,
        eos_id=tgt_vocab.eos_id,
    )
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            if beam > 1:
                hyps = beam_search(model, batch.src, batch.src_lengths, beam, max_len)
            else:
                hyps = greedy_decode(model, batch.src, batch.src_lengths, max_len)
            for index, hyp in zip(batch.indices, hyps, strict=True):
                outputs[index] = detokenize(tgt_vocab.decode(hyp.tokens), mode)
    return outputs


def evaluate(model: Seq2Seq, data: PreparedData, beam: int, device) -> dict[str, float]:
    """Exact match (fraction) and corpus BLEU (sacrebleu) on the validation set."""
    import sacrebleu

    hyps = translate_examples(
        model, data.valid, data.tgt_vocab, data.mode, beam=beam, device=device
    )
    exact = sum(h == r for h, r in zip(hyps, data.valid_refs, strict=True)) / max(1, len(hyps))
    tokenize = "char" if data.mode == "char" else "13a"
    bleu = sacrebleu.corpus_bleu(hyps, [data.valid_refs], tokenize=tokenize).score
    return {"exact": exact, "bleu": bleu}


def out_of_time(settings: TrainSettings, started: float, world: distributed.World) -> bool:
    """Whether --time-budget is spent, as rank 0 sees it (all ranks stop at the same batch)."""
    spent = (
        settings.time_budget is not None and time.perf_counter() - started >= settings.time_budget
    )
    return distributed.broadcast_flag(spent, world)


class _LossModule(torch.nn.Module):
    """DistributedDataParallel only synchronises gradients of what its forward computed."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src, src_lengths, tgt_in, tgt_out):
        loss, n_tokens = self.model.loss(src, src_lengths, tgt_in, tgt_out)
        return loss / max(1, n_tokens)


def describe(config: Seq2SeqConfig) -> str:
    """A short name of the model: "bahdanau/additive", "classic (no attention)", "... on frames"."""
    if config.attention == "none":
        name = "classic (no attention)"
    else:
        name = f"{config.wiring}/{config.score}" + (
            " input-feeding" if config.input_feeding else ""
        )
    if config.source == "frames":
        name += f" on frames (F={config.frame_size})"
    return name


def _model_config(data: PreparedData, overrides: dict) -> Seq2SeqConfig:
    """A new model's config for `data`: vocabulary sizes, special ids and the source kind."""
    if data.src_vocab is None:
        source = dict(src_vocab_size=1, source="frames", frame_size=data.frame_size)
    else:
        source = dict(src_vocab_size=len(data.src_vocab))
    return Seq2SeqConfig(
        tgt_vocab_size=len(data.tgt_vocab),
        pad_id=data.tgt_vocab.pad_id,
        bos_id=data.tgt_vocab.bos_id,
        eos_id=data.tgt_vocab.eos_id,
        **source,
        **overrides,
    )


def _check_resumed(config: Seq2SeqConfig, frames: bool, path: str) -> None:
    """The resumed model must read the kind of source the data has (frames or tokens)."""
    kind = "frames" if frames else "tokens"
    if config.source != kind:
        raise ValueError(
            f"--resume: {path} holds a model reading {config.source}, but the data is {kind}"
        )


def _check_frame_size(config: Seq2SeqConfig, data: PreparedData, path: str) -> None:
    if config.source == "frames" and config.frame_size != data.frame_size:
        raise ValueError(
            f"--resume: {path} holds a model reading frames of {config.frame_size} features, "
            f"but the data's frames have {data.frame_size}"
        )


def _payload(model, optimizer, config, data, settings, epoch, best, best_state, history):
    return {
        "config": config.to_dict(),
        "src_vocab": None if data.src_vocab is None else data.src_vocab.to_dict(),
        "tgt_vocab": data.tgt_vocab.to_dict(),
        "tokenize": data.mode,
        "model": best_state,
        "last_model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "best": best,
        "settings": asdict(settings),
        "history": history,
    }


def train(
    settings: TrainSettings,
    config_overrides: dict,
    checkpoint_path: str | None,
    *,
    resume: bool = False,
    device: str = "cpu",
    console: Console | None = None,
) -> TrainResult:
    """Run a whole training; returns what happened (also on every rank under torchrun)."""
    dev = torch.device(device)
    world = distributed.init_from_env(dev)
    console = console or Console(quiet=not world.is_main)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    state = None
    if resume:
        if not checkpoint_path:
            raise ValueError("--resume needs --checkpoint PATH")
        state = checkpoint.load_checkpoint(
            checkpoint_path, ("config", "src_vocab", "tgt_vocab", "last_model", "optimizer")
        )
        config = Seq2SeqConfig.from_dict(state["config"])
        _check_resumed(config, uses_frames(settings), checkpoint_path)
        saved_src = state["src_vocab"]
        src_vocab = None if saved_src is None else Vocab.from_dict(saved_src)
        data = prepare_data(settings, (src_vocab, Vocab.from_dict(state["tgt_vocab"])))
        _check_frame_size(config, data, checkpoint_path)
    else:
        data = prepare_data(settings)
        config = _model_config(data, config_overrides)
    model = Seq2Seq(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    result = TrainResult()
    start_epoch, best, best_state = 0, -1.0, None
    if state is not None:
        model.load_state_dict(state["last_model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        best = float(state["best"])
        best_state = state["model"]
        result.history = list(state.get("history", []))
        console.print(f"resumed from {checkpoint_path} after epoch {start_epoch}")
    step_module = _LossModule(model)
    if world.distributed:
        step_module = torch.nn.parallel.DistributedDataParallel(step_module)
    console.print(
        f"training {describe(config)} GRU seq2seq "
        f"({sum(p.numel() for p in model.parameters()):,} parameters, backend {config.backend}) "
        f"on {len(data.train):,} pairs, validating on {len(data.valid):,}; "
        f"{world.size} process(es)"
    )
    started = time.perf_counter()
    stale = 0
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        batches = make_batches(
            data.train,
            settings.batch_size,
            shuffle=True,
            seed=settings.seed + epoch,
            pad_id=config.pad_id,
            bos_id=config.bos_id,
            eos_id=config.eos_id,
        )
        if len(batches) < world.size:
            raise ValueError(
                f"only {len(batches)} batch(es) of --batch-size {settings.batch_size} for "
                f"{world.size} processes: lower --batch-size or give more data"
            )
        batches = distributed.shard(batches, world)
        total_loss, total_batches = 0.0, 0
        with Progress(
            TextColumn(f"epoch {epoch + 1}/{settings.epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} batches, loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not world.is_main,
        ) as progress:
            task = progress.add_task("train", total=len(batches), loss=math.nan)
            for batch in batches:
                batch = batch.to(dev)
                loss = step_module(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
                optimizer.step()
                total_loss += loss.item()
                total_batches += 1
                progress.update(task, advance=1, loss=total_loss / total_batches)
                if out_of_time(settings, started, world):
                    break  # the budget is spent mid-epoch: validate and save what we have
        metrics = evaluate(model, data, settings.eval_beam, dev)
        metrics.update(epoch=epoch + 1, loss=total_loss / max(1, total_batches))
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        result.history.append(metrics)
        improved = metrics["exact"] > best
        if improved:
            best = metrics["exact"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            # Halve the learning rate on a plateau (Luong et al. 2015 halve it on a schedule).
            stale += 1
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        result.best_exact = max(result.best_exact, metrics["exact"])
        result.best_bleu = max(result.best_bleu, metrics["bleu"])
        result.epochs_run += 1
        console.print(
            f"epoch {epoch + 1}: loss {metrics['loss']:.4f}, valid exact match "
            f"{100 * metrics['exact']:.2f}%, BLEU {metrics['bleu']:.2f}, "
            f"{metrics['seconds']:.0f} s{' (best)' if improved else ''}"
        )
        if checkpoint_path and world.is_main:
            checkpoint.save_checkpoint(
                checkpoint_path,
                _payload(
                    model,
                    optimizer,
                    config,
                    data,
                    settings,
                    epoch,
                    best,
                    best_state,
                    result.history,
                ),
            )
            result.checkpoints_written += 1
        spent = out_of_time(settings, started, world)
        stop = stale >= settings.patience or spent or metrics["exact"] >= 1.0
        if distributed.broadcast_flag(stop, world):
            why = "time budget spent" if spent else "no improvement" if stale else "perfect"
            console.print(f"stopping after epoch {epoch + 1}: {why}")
            break
    distributed.barrier(world)
    if best_state is not None:
        model.load_state_dict(best_state)
    result.model = model
    distributed.shutdown(world)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--task",
        choices=TASKS + FRAME_TASKS,
        default=None,
        help="generated task (default dates; tones has frames as its source)",
    )
    source.add_argument(
        "--data",
        metavar="FILE",
        help="parallel corpus PAIRS.tsv (source<TAB>target per line), or a frames file "
        "FRAMES.pt / FRAMES.npz (float feature sequences and target strings, see "
        "fast_s2s.data.frames)",
    )
    parser.add_argument(
        "--tokenize",
        choices=["char", "word"],
        help="default: char for dates and frames sources, else word",
    )
    parser.add_argument("--checkpoint", metavar="PATH", help="where to save (and --resume from)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    parser.add_argument("--backend", default="auto", choices=["auto", "reference", "cpp", "triton"])
    parser.add_argument("--device", default="cpu")
    d = TrainSettings()
    parser.add_argument("--num-examples", type=int, default=d.num_examples, help="generated pairs")
    parser.add_argument("--valid-size", type=int, default=d.valid_size)
    parser.add_argument("--max-len", type=int, default=d.max_len, help="drop longer pairs (tokens)")
    parser.add_argument(
        "--min-freq", type=int, default=d.min_freq, help="rarer tokens become <unk>"
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--clip", type=float, default=d.clip, help="gradient norm clipping")
    parser.add_argument("--patience", type=int, default=d.patience, help="early stopping")
    parser.add_argument(
        "--time-budget", type=float, help="seconds; stop after the epoch that passes it"
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--eval-beam", type=int, default=d.eval_beam, help="beam for validation")
    c = Seq2SeqConfig(src_vocab_size=4, tgt_vocab_size=4)
    parser.add_argument(
        "--attention",
        choices=["on", "none"],
        default=c.attention,
        help="none: the classic encoder-decoder (Sutskever / Cho): the fixed final encoder "
        "state, no attention",
    )
    parser.add_argument("--wiring", choices=["bahdanau", "luong"], default=c.wiring)
    parser.add_argument("--score", choices=["additive", "dot", "general", "concat"], default=None)
    parser.add_argument("--input-feeding", action="store_true")
    parser.add_argument("--embed-size", type=int, default=c.embed_size)
    parser.add_argument("--hidden-size", type=int, default=c.hidden_size)
    parser.add_argument("--encoder-layers", type=int, default=c.encoder_layers)
    parser.add_argument("--decoder-layers", type=int, default=c.decoder_layers)
    parser.add_argument("--dropout", type=float, default=c.dropout)
    parser.add_argument("--tie-embeddings", action="store_true")
    parser.add_argument("--demo", nargs="*", metavar="TEXT", help="translate these after training")
    parser.add_argument("--plot", metavar="PNG", help="with --demo: attention map of the first")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        task=None if args.data else (args.task or "dates"),
        data=args.data,
        tokenize=args.tokenize,
        num_examples=args.num_examples,
        valid_size=args.valid_size,
        max_len=args.max_len,
        min_freq=args.min_freq,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        clip=args.clip,
        patience=args.patience,
        time_budget=args.time_budget,
        seed=args.seed,
        eval_beam=args.eval_beam,
    )


def config_from_args(args: argparse.Namespace) -> dict:
    score = args.score or ("additive" if args.wiring == "bahdanau" else "general")
    return dict(
        embed_size=args.embed_size,
        hidden_size=args.hidden_size,
        encoder_layers=args.encoder_layers,
        decoder_layers=args.decoder_layers,
        wiring=args.wiring,
        score=score,
        input_feeding=args.input_feeding,
        dropout=args.dropout,
        tie_embeddings=args.tie_embeddings,
        backend=args.backend,
        attention=args.attention,
    )


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, before any work; None if nothing."""
    if args.plot and args.attention == "none":
        return "--plot: a model without attention (--attention none) has no attention map"
    frames = args.task in FRAME_TASKS or (args.data and is_frames_file(args.data))
    if args.demo and frames:
        return (
            "--demo translates text, but this model reads frames; translate frames with "
            "`fast-s2s translate --checkpoint PATH --frames FILE.pt`"
        )
    return None


def main(args: argparse.Namespace) -> int:
    # Under torchrun every process runs main(); only rank 0 talks.
    console = Console(quiet=int(os.environ.get("RANK", "0")) != 0)
    problem = check_args(args)
    if problem:
        print(f"fast-s2s train: {problem}", file=sys.stderr)
        return 2
    try:
        result = train(
            settings_from_args(args),
            config_from_args(args),
            args.checkpoint,
            resume=args.resume,
            device=args.device,
        )
    except (checkpoint.CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"fast-s2s train: {exc}", file=sys.stderr)
        return 2
    console.print(
        f"best validation exact match {100 * result.best_exact:.2f}%, BLEU {result.best_bleu:.2f}"
        + (f"; checkpoint {args.checkpoint}" if args.checkpoint else "")
    )
    if args.demo and args.checkpoint:
        from fast_s2s import translate

        return translate.run(args.checkpoint, args.demo, beam=5, plot=args.plot, console=console)
    return 0
