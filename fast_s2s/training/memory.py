"""Whether a search or a training run fits in memory, checked before it starts.

    check_search(config, batch=64, beam=5, max_len=100, src_len=30, options=("--beam",
                 "--max-len"))           # MemoryLimitError (a ValueError) in one line, or None
    check_training(config, batch_size=64, max_len=60, options=("--hidden-size", ...))

A beam of 10**9 or a --max-len of 10**11 used to reach the allocator, which failed with a
traceback. The estimates count what the searches allocate up front (fast_s2s.models.decoding,
the native loop of csrc/cpu/native_search.cpp, the CUDA-graph loops): per step of the search,
every row's attention over the source, token and back-pointer (times the copies the loop holds
at once, HISTORY_COPIES), and per row its decoder states, logits and log-probabilities; for
training, the parameters with their gradients, Adam's two moments and the best epoch's copy,
and the activations of one batch. They are estimates of the peak: a search they accept may
still fail on a machine that is nearly full, one far past them never runs.

The memory available is the operating system's figure for the device: on the CPU the smaller
of /proc/meminfo's MemAvailable (os.sysconf's free pages elsewhere) and what the process's
cgroup still allows; on CUDA torch.cuda.mem_get_info's free bytes. None (unknown) skips the
check.
"""

from __future__ import annotations

import os

import torch

from fast_s2s.models import Seq2Seq, Seq2SeqConfig

__all__ = [
    "MemoryLimitError",
    "available_memory",
    "check_search",
    "check_training",
    "search_bytes",
    "training_bytes",
]


class MemoryLimitError(ValueError):
    """A search or a training run that needs more memory than the device has: one line naming
    the options to lower."""


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return int(text)
    except (OSError, ValueError):
        return None  # missing, or "max" (no limit)


def _cgroup_room() -> int | None:
    """What the process's memory cgroup still allows (v2, then v1), None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < 2**60:  # v1 writes "no limit" as a huge number
            return max(0, limit - (_read_int(usage_file) or 0))
    return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes a new allocation on `device` can take now; None when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    known = [b for b in (_meminfo_available(), _cgroup_room()) if b is not None]
    return min(known) if known else None


# How many copies of the per-step history (attention rows, tokens, back-pointers) a loop holds at
# its peak: the Python loop reorders its history by the beams' parents every step (the old, the
# reordered and the extended copies live at once); the native and CUDA-graph loops write each
# step once into buffers allocated up front, and copy the finished hypotheses out of them
# (measured on the CPU: peak growth 1.3x the history for the native loop, 3.2x for Python's).
HISTORY_COPIES = {"native": 1.5, "cuda-graph": 1.5, "python": 3.5}


def search_bytes(
    config: Seq2SeqConfig,
    *,
    batch: int,
    beam: int,
    max_len: int,
    src_len: int,
    n_best: int = 1,
    itemsize: int = 4,
    loop: str = "python",
) -> int:
    """An estimate of the bytes a search of `batch` sources of up to `src_len` positions, with
    `beam` rows each (1: greedy) and up to `max_len` tokens, allocates for `config`'s model on
    `loop` ("native", "cuda-graph" or "python", fast_s2s.models.decode_path's first word; the
    default, the Python loop's, is the largest)."""
    rows, steps, source = batch * beam, max_len + 1, max(1, src_len)
    hidden, vocab, layers = config.hidden_size, config.tgt_vocab_size, config.decoder_state_layers
    # Kept for every step: each row's attention over the source (float32), its token and its
    # back-pointer (int64); and the n_best results' tokens and attention.
    copies = HISTORY_COPIES[loop.split(":")[0]]
    history = int(copies * steps * rows * (4 * source + 16))
    history += steps * batch * n_best * (4 * source + 8)
    # Per row: the decoder states (this step's and the next), context and attentional state,
    # logits and log-probabilities, attention scores and weights.
    per_row = itemsize * (2 * layers * hidden + 3 * hidden + 2 * vocab + 2 * source)
    # Once per source: encoder states, key projection and values.
    encoder = itemsize * batch * source * 3 * hidden
    return history + rows * per_row + encoder


def _size(n: int) -> str:
    """Bytes in words: "740 MB", "23.6 GB", "2,470 GB"."""
    if n < 1e9:
        return f"{n / 1e6:.3g} MB"
    return f"{n / 1e9:.3g} GB" if n < 1e12 else f"{n / 1e9:,.0f} GB"


def check_search(
    config: Seq2SeqConfig,
    *,
    batch: int,
    beam: int,
    max_len: int,
    src_len: int,
    n_best: int = 1,
    itemsize: int = 4,
    device: torch.device | str = "cpu",
    options: tuple[str, str | None] = ("--beam", "--max-len"),
    available: int | None = None,
    loop: str = "python",
) -> None:
    """Raise MemoryLimitError when search_bytes exceeds the memory available on `device` (or
    `available`, given): one line naming options[0] (the beam's option) and options[1] (the
    length's, None when it is fixed), what the search needs and the largest beam that fits."""
    available = available_memory(device) if available is None else available
    sizes = dict(
        batch=batch, max_len=max_len, src_len=src_len, n_best=n_best, itemsize=itemsize, loop=loop
    )
    need = search_bytes(config, beam=beam, **sizes)
    if available is None or need <= available:
        return
    beam_option, length_option = options
    fixed = search_bytes(config, beam=0, **sizes)
    per_beam = search_bytes(config, beam=1, **sizes) - fixed
    fits = (available - fixed) // per_beam if available > fixed else 0
    given = f"{beam_option} {beam}" + (f" with {length_option} {max_len}" if length_option else "")
    if fits >= 1:
        advice = f"the largest {beam_option} that fits is about {fits}"
    else:
        advice = f"lower {length_option or beam_option}"
    raise MemoryLimitError(
        f"{given}: the search would need about {_size(need)} of memory ({batch} source(s) "
        f"of up to {src_len} positions x beam {beam} x {max_len + 1} steps, "
        f"{config.tgt_vocab_size} target tokens, hidden size {config.hidden_size}), more than "
        f"the {_size(available)} available; {advice}"
    )


def training_bytes(
    config: Seq2SeqConfig, *, batch_size: int, max_len: int, itemsize: int = 4
) -> tuple[int, int]:
    """(a lower bound of the bytes training `config`'s model takes, its parameter count). The
    model is built on the meta device: no memory, whatever the sizes."""
    with torch.device("meta"):
        parameters = sum(p.numel() for p in Seq2Seq(config).parameters())
    # The weights, their gradients, Adam's two moments and the best epoch's copy.
    state = 5 * parameters * itemsize
    hidden, layers = config.hidden_size, config.encoder_layers + config.decoder_state_layers
    per_token = 8 * hidden * layers + 3 * config.tgt_vocab_size + 2 * config.embed_size
    activations = batch_size * (max_len + 1) * per_token * itemsize
    return state + activations, parameters


def check_training(
    config: Seq2SeqConfig,
    *,
    batch_size: int,
    max_len: int,
    itemsize: int = 4,
    device: torch.device | str = "cpu",
    available: int | None = None,
) -> None:
    """Raise MemoryLimitError when training_bytes exceeds the memory available on `device` (or
    `available`, given): one line with the sizes, their options and what the model needs."""
    available = available_memory(device) if available is None else available
    if available is None:
        return
    need, parameters = training_bytes(
        config, batch_size=batch_size, max_len=max_len, itemsize=itemsize
    )
    if need <= available:
        return
    raise MemoryLimitError(
        f"--embed-size {config.embed_size}, --hidden-size {config.hidden_size}: training this "
        f"model would need about {_size(need)} of memory "
        f"({parameters:,} parameters, each with its gradient, Adam's two moments and the best "
        f"epoch's copy, and one batch's activations), more than the {_size(available)} "
        "available; lower --hidden-size or --embed-size"
    )
