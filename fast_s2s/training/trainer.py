"""The training loop behind `fast-s2s train`: model, Adam with clipping, bucketed batches,
validation every epoch, a learning-rate schedule (fast_s2s.training.schedule) and early stopping,
atomic checkpoints by rank 0, data-parallel replicas (fast_s2s.training.gradient_sync)."""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import asdict, dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fast_s2s.data import (
    Vocab,
    make_batches,
)
from fast_s2s.models import SearchOptions, Seq2Seq, Seq2SeqConfig
from fast_s2s.training import (
    checkpoint,
    distributed,
    evaluation,
    gradient_sync,
    memory,
    schedule,
)
from fast_s2s.training.data import PreparedData, TrainSettings, prepare_data, uses_frames
from fast_s2s.training.evaluation import evaluate
from fast_s2s.training.optimizer import adam, train_step
from fast_s2s.training.resume import RECORD_VERSION, check_resume, run_record


@dataclass
class TrainResult:
    best_exact: float = 0.0
    best_bleu: float = 0.0
    epochs_run: int = 0
    checkpoints_written: int = 0
    history: list[dict] = field(default_factory=list)
    model: Seq2Seq | None = None  # with the weights of the best epoch
    src_vocab: Vocab | None = None  # the model's vocabularies (src None for frames)
    tgt_vocab: Vocab | None = None


def budget_spent(settings: TrainSettings, elapsed: float) -> bool:
    """Whether `elapsed` seconds of training have spent --time-budget."""
    return settings.time_budget is not None and elapsed >= settings.time_budget


def out_of_time(settings: TrainSettings, started: float, world: distributed.World) -> bool:
    """Whether --time-budget is spent now, as rank 0 sees it (all ranks stop at the same epoch)."""
    return distributed.broadcast_flag(budget_spent(settings, time.perf_counter() - started), world)


class _LossModule(torch.nn.Module):
    """The step's loss as a module's forward: DistributedDataParallel only synchronises
    gradients of what its forward computed."""

    def __init__(self, model: Seq2Seq, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, src, src_lengths, tgt_in, tgt_out):
        loss, n_tokens = self.model.loss(
            src, src_lengths, tgt_in, tgt_out, label_smoothing=self.label_smoothing
        )
        return loss / max(1, n_tokens)


def _set_cosine_rate(
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    epochs_done: float,
    start_epoch: int,
    elapsed: float,
) -> None:
    """Sets every group's rate on the cosine schedule at the run's progress. `elapsed` is rank
    0's clock as of the last step, the same on every rank: replicas stepped at different rates
    would drift apart."""
    epochs_this_run = settings.epochs - start_epoch
    progress = schedule.run_progress(epochs_done, epochs_this_run, elapsed, settings.time_budget)
    for group in optimizer.param_groups:
        group["lr"] = settings.lr * schedule.cosine_factor(progress)


def describe(config: Seq2SeqConfig) -> str:
    """A short name of the model: "bahdanau/additive", "luong/general local-p (D=10)",
    "luong/general (post-attention GRU)", "classic (no attention)", "... on frames"."""
    if config.attention == "none":
        name = "classic (no attention)"
    else:
        name = f"{config.wiring}/{config.score}" + (
            " input-feeding" if config.input_feeding else ""
        )
        if config.local != "none":
            name += f" local-{config.local} (D={config.window})"
        if config.post_attention_gru:
            name += " (post-attention GRU)"
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


def _check_memory(
    config: Seq2SeqConfig,
    data: PreparedData,
    settings: TrainSettings,
    device: torch.device,
    later_beams: dict[str, int],
) -> None:
    """MemoryLimitError when the model, its validation search or a later one cannot fit."""
    # The batches hold at most all the pairs, each no longer than the longest.
    longest = max((max(len(src), len(tgt)) for src, tgt in data.train), default=1)
    batch = min(settings.batch_size, len(data.train))
    memory.check_training(config, batch_size=batch, max_len=longest, device=device)
    lengths = [len(src) for src, _ in data.valid]
    for option, beam in {"--eval-beam": settings.eval_beam, **later_beams}.items():
        evaluation.check_memory(config, lengths, beam, option, device)


def _payload(
    model, optimizer, config, data, settings, epoch, best, best_state, history, record, processes
):
    return {
        "config": config.to_dict(),
        # what the model was trained on and as, for --resume to check (fast_s2s.training.resume)
        "run": {"version": RECORD_VERSION, "settings": record},
        "src_vocab": None if data.src_vocab is None else data.src_vocab.to_dict(),
        "tgt_vocab": data.tgt_vocab.to_dict(),
        "src_tokenize": data.src_mode,
        "tgt_tokenize": data.tgt_mode,
        # The one mode of checkpoints before per-side tokenisation, for readers of that age:
        # None when the sides differ, which such a reader refuses rather than misreads.
        "tokenize": data.tgt_mode if data.src_mode in (None, data.tgt_mode) else None,
        "model": best_state,
        "last_model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "best": best,
        "settings": asdict(settings),
        "history": history,
        "processes": processes,  # data-parallel replicas that trained it (torch.distributed)
    }


def train(
    settings: TrainSettings,
    config_overrides: dict,
    checkpoint_path: str | None,
    *,
    resume: bool = False,
    device: str = "cpu",
    console: Console | None = None,
    later_beams: dict[str, int] | None = None,
) -> TrainResult:
    """Run a whole training; returns what happened (also on every rank under torchrun).

    resume: continue the run in `checkpoint_path`, which must have been trained on what
    `settings` and `config_overrides` say (fast_s2s.training.resume: task, data, tokenisation,
    model config; ResumeMismatchError naming the first difference, before anything is read or
    written); the model config is then the checkpoint's.

    Before any training, the model and the validation search (settings.eval_beam) are checked
    to fit in memory (fast_s2s.training.memory), and so are `later_beams`, {option: beam} of
    the searches the caller runs after training (g2p's --test-beam), on the validation set's
    shapes; a MemoryLimitError names the option."""
    if settings.lr_schedule not in schedule.SCHEDULES:
        raise ValueError(
            f"lr_schedule must be one of {schedule.SCHEDULES}, got {settings.lr_schedule!r}"
        )
    dev = distributed.replica_device(torch.device(device))
    world = distributed.init_from_env(dev)
    console = console or Console(quiet=not world.is_main)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)

    if checkpoint_path and world.is_main:
        for stale in checkpoint.remove_stale_temporaries(checkpoint_path):
            console.print(f"removed {stale}, left by an interrupted checkpoint write", markup=False)
    state = None
    record = run_record(settings, config_overrides)
    if resume:
        if not checkpoint_path:
            raise ValueError("--resume needs --checkpoint PATH")
        state = checkpoint.load_checkpoint(
            checkpoint_path, ("config", "src_vocab", "tgt_vocab", "last_model", "optimizer")
        )
        config = checkpoint.model_config(state, checkpoint_path)
        check_resume(state, record, checkpoint_path)  # before anything is read or written
        _check_resumed(config, uses_frames(settings), checkpoint_path)
        saved_src = state["src_vocab"]
        src_vocab = None if saved_src is None else Vocab.from_dict(saved_src)
        data = prepare_data(settings, (src_vocab, Vocab.from_dict(state["tgt_vocab"])))
        _check_frame_size(config, data, checkpoint_path)
    else:
        data = prepare_data(settings)
        config = _model_config(data, config_overrides)
    _check_memory(config, data, settings, dev, later_beams or {})
    model = Seq2Seq(config).to(dev)
    optimizer = adam(model.parameters(), settings.lr)
    result = TrainResult()
    start_epoch, best, best_state = 0, -1.0, None
    if state is not None:
        checkpoint.load_weights(model, state["last_model"], checkpoint_path, "last_model")
        if state["model"] is not None:  # the best epoch's, loaded when training ends
            checkpoint.load_weights(Seq2Seq(config), state["model"], checkpoint_path, "model")
        checkpoint.load_optimizer(optimizer, state["optimizer"], model, checkpoint_path)
        start_epoch = int(state["epoch"]) + 1
        best = float(state["best"])
        best_state = state["model"]
        result.history = list(state.get("history", []))
        console.print(f"resumed from {checkpoint_path} after epoch {start_epoch}")
    sync = gradient_sync.for_replicas(model, world, dev)
    step_module = sync.wrap(_LossModule(model, settings.label_smoothing))
    console.print(
        f"training {describe(config)} GRU seq2seq "
        f"({sum(p.numel() for p in model.parameters()):,} parameters, backend {config.backend}) "
        f"on {len(data.train):,} pairs, validating on {len(data.valid):,}; "
        f"{world.size} process(es)"
    )
    started = time.perf_counter()
    stale = 0

    def exchange() -> None:  # after each backward pass: the replicas' gradients and clock
        sync.exchange(time.perf_counter() - started)

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
            replicas=world.size,
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
            for index, batch in enumerate(batches):
                if settings.lr_schedule == "cosine":
                    done = epoch - start_epoch + index / len(batches)
                    _set_cosine_rate(optimizer, settings, done, start_epoch, sync.elapsed)
                batch = batch.to(dev)
                loss_of_batch = functools.partial(
                    step_module, batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out
                )
                loss = train_step(
                    loss_of_batch, optimizer, model.parameters(), settings.clip, exchange
                )
                total_loss += loss.item()
                total_batches += 1
                progress.update(task, advance=1, loss=total_loss / total_batches)
                if budget_spent(settings, sync.elapsed):  # rank 0's clock, on every rank
                    break  # the budget is spent mid-epoch: validate and save what we have
        metrics = evaluate(model, data, settings.eval_beam, dev, world)
        search_label = SearchOptions(beam=settings.eval_beam).describe()
        metrics.update(epoch=epoch + 1, loss=total_loss / max(1, total_batches))
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        result.history.append(metrics)
        improved = metrics["exact"] > best
        if improved:
            best = metrics["exact"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if settings.lr_schedule == "plateau":  # fast_s2s.training.schedule
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
        result.best_exact = max(result.best_exact, metrics["exact"])
        result.best_bleu = max(result.best_bleu, metrics["bleu"])
        result.epochs_run += 1
        console.print(
            f"epoch {epoch + 1}: loss {metrics['loss']:.4f}, valid exact match ({search_label}) "
            f"{100 * metrics['exact']:.2f}%, "
            + (
                f"PER {100 * metrics['per']:.2f}%, WER {100 * metrics['wer']:.2f}%, "
                if "per" in metrics
                else f"BLEU {metrics['bleu']:.2f}, "
            )
            + f"{metrics['seconds']:.0f} s{' (best)' if improved else ''}"
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
                    record,
                    world.size,
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
    result.model, result.src_vocab, result.tgt_vocab = model, data.src_vocab, data.tgt_vocab
    distributed.shutdown(world)
    return result
