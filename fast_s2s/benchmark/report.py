"""Showing and saving results: the rich table, the JSON file (written atomically) and the PNG."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fast_s2s.benchmark.cases import FAMILIES
from fast_s2s.benchmark.peers import FAST_S2S, PEER_NAMES
from fast_s2s.benchmark.summary import check_goals, fastest_backends

MODEL_FAMILY = "model"  # cases.FAMILIES of op "model": printed by model_table

MACHINE_KEYS = (
    ("cpu", "CPU"),
    ("cpu_count", "CPU cores (os)"),
    ("torch_threads", "torch threads"),
    ("load_average_1min", "load average (1 min)"),
    ("cpu_capability", "fast_s2s CPU kernels"),
    ("torch_cpu_capability", "torch CPU capability"),
    ("gpu", "GPU"),
    ("gpu_capability", "GPU compute capability"),
    ("gpu_sm_count", "GPU multiprocessors"),
    ("gpu_l2_mib", "GPU L2 (MiB)"),
    ("cudnn", "cuDNN"),
    ("copy_gbps", "copy bandwidth (GB/s, read + written)"),
    ("torch", "torch"),
    ("torch_cuda", "torch CUDA"),
    ("triton", "triton"),
    ("python", "python"),
    ("fast_s2s", "fast_s2s"),
    ("extension_loaded", "extension loaded"),
)


def print_machine(console: Console, info: dict) -> None:
    """The machine block printed above the results."""
    table = Table(title="machine", show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, name in MACHINE_KEYS:
        if key in info and info[key] is not None:
            value = info[key]
            if key == "copy_gbps":
                value = f"{value:,.1f} ({info.get('copy_bytes', 0) / 2**20:,.0f} MiB each way)"
            table.add_row(name, str(value))
    if not info.get("extension_loaded") and info.get("extension_error"):
        table.add_row("extension error", str(info["extension_error"]))
    console.print(table)


def peer_columns(rows: list[dict]) -> list[str]:
    """Peer labels that appear in `rows`, in the canonical order."""
    present = {r["impl"] for r in rows if r["kind"] != FAST_S2S}
    ordered = [p for p in PEER_NAMES if p in present]
    return ordered + sorted(present - set(ordered))


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    style = "green" if value >= 1.05 else ("red" if value < 0.95 else "")
    text = f"{value:.2f}x"
    return f"[{style}]{text}[/{style}]" if style else text


def _gbps(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _us(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def results_table(rows: list[dict], title: str = "results") -> Table:
    """One section per case and dtype; fast_s2s rows carry 'speedup vs <peer>' (peer time /
    fast_s2s time: above 1 means fast_s2s is faster), forward cases of memory-bound ops GB/s, %
    of the read roofline and % of the copy roofline."""
    peers = peer_columns(rows)
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("case", no_wrap=True)
    table.add_column("implementation", no_wrap=True)
    table.add_column("median us", justify="right")
    table.add_column("IQR us", justify="right")
    for peer in peers:
        table.add_column(f"vs {peer}", justify="right")
    table.add_column("GB/s", justify="right")
    table.add_column("% roof", justify="right")
    table.add_column("% copy", justify="right")

    several_dtypes = len({r["dtype"] for r in rows}) > 1
    cases: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["status"] != "skipped":
            cases.setdefault((row["case_id"], row["dtype"]), []).append(row)
    for i, case_rows in enumerate(cases.values()):
        if i:
            table.add_section()
        first = case_rows[0]
        roof, copy_roof = first.get("roofline_gbps"), first.get("copy_roofline_gbps")
        captions = [
            f"{first['op']}" + (f" {first['dtype']}" if several_dtypes else ""),
            first["case"],
        ]
        if roof:
            captions.append(f"[dim]read roofline {_gbps(roof)} GB/s[/dim]")
        if copy_roof:
            captions.append(f"[dim]copy roofline {_gbps(copy_roof)} GB/s[/dim]")
        for j, row in enumerate(case_rows):
            case_cell = captions[j] if j < len(captions) else ""
            name = Text(row["impl"], style="bold" if row["kind"] == FAST_S2S else "")
            if row["status"] != "ok":
                table.add_row(
                    case_cell, name, "[red]failed[/red]", "", *([""] * len(peers)), "", "", ""
                )
                continue
            ratios = [_ratio(row["speedup_vs"].get(p)) for p in peers]
            gbps, frac, copy = (
                row.get("gbps"),
                row.get("roofline_fraction"),
                row.get("copy_fraction"),
            )
            table.add_row(
                case_cell,
                name,
                _us(row["median_us"]),
                _us(row["iqr_us"]),
                *ratios,
                _gbps(gbps),
                f"{100 * frac:.0f}%" if frac is not None else "",
                f"{100 * copy:.0f}%" if copy is not None else "",
            )
        for caption in captions[len(case_rows) :]:
            table.add_row(caption, *([""] * (len(table.columns) - 1)))
    return table


def _throughput(value: float | None, unit: str | None) -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{text} {unit or 'call'}s/s"


def _ms(value_us: float | None) -> str:
    if value_us is None:
        return ""
    ms = value_us / 1000
    return f"{ms:,.1f}" if ms >= 10 else f"{ms:.2f}"


def threads_caption(rows: list[dict]) -> str:
    """ "torch threads N" (or "N, M" if rows ran with different counts)."""
    counts = sorted({r["threads"] for r in rows if r.get("threads") is not None})
    return f"torch threads {', '.join(map(str, counts))}" if counts else ""


def model_table(rows: list[dict], title: str = "model") -> Table:
    """The whole-model rows (op "model"): one section per case; median and IQR in ms, the
    throughput (training steps/s, decoded tokens/s), and 'vs <peer>' (peer time / this row's
    time = this row's throughput / the peer's: above 1 means fast_s2s is faster). The title says
    how many torch threads ran."""
    peers = peer_columns(rows)
    threads = threads_caption(rows)
    table = Table(
        title=f"{title} ({threads})" if threads else title, title_justify="left", show_lines=False
    )
    table.add_column("case", no_wrap=True)
    table.add_column("implementation", no_wrap=True)
    table.add_column("median ms", justify="right")
    table.add_column("IQR ms", justify="right")
    table.add_column("throughput", justify="right")
    for peer in peers:
        table.add_column(f"vs {peer}", justify="right")
    cases: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] != "skipped":
            cases.setdefault(row["case_id"], []).append(row)
    for i, case_rows in enumerate(cases.values()):
        if i:
            table.add_section()
        first = case_rows[0]
        captions = [first["case"]]
        if first.get("hypothesis_tokens"):
            captions.append(f"[dim]{first['hypothesis_tokens']:,} hypothesis tokens/call[/dim]")
        for j, row in enumerate(case_rows):
            case_cell = captions[j] if j < len(captions) else ""
            name = Text(row["impl"], style="bold" if row["kind"] == FAST_S2S else "")
            if row["status"] != "ok":
                table.add_row(case_cell, name, "[red]failed[/red]", "", "", *([""] * len(peers)))
                continue
            table.add_row(
                case_cell,
                name,
                _ms(row["median_us"]),
                _ms(row["iqr_us"]),
                _throughput(row.get("throughput"), row.get("work_unit")),
                *[_ratio(row["speedup_vs"].get(p)) for p in peers],
            )
        for caption in captions[len(case_rows) :]:
            table.add_row(caption, *([""] * (len(table.columns) - 1)))
    return table


MODEL_NOTE = (
    "[dim]model: the same fast_s2s.models.Seq2Seq and weights on each backend; reference = "
    "backend='reference'. steps/s: training steps (loss, backward, clipping, Adam) per second; "
    "tokens/s: B x (max_len + 1) output tokens per decode (the best hypothesis per sentence, eos "
    "included), eos kept from winning before max_len so every decode runs the same steps.[/dim]"
)
OPS_NOTE = (
    "[dim]vs X = X's median / this row's median (above 1: fast_s2s is faster). GB/s counts "
    "the compulsory reads (query, keys, values; x, h and the weights for gru_cell), for "
    "memory-bound cases only; % roof = of the read roofline (torch.sum over as many bytes); "
    "% copy = reads + writes (context and weights; h') per second, of the copy roofline "
    "(dst.copy_(src) moving as many bytes, read + written); both measured in the same run.[/dim]"
)


def family_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by op family (cases.FAMILIES: ops compared against the same peers), in the
    order the families first appear; an op without a family is its own."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(FAMILIES.get(row["op"], row["op"]), []).append(row)
    return groups


def print_results(console: Console, rows: list[dict], title: str = "results") -> None:
    """One table per op family (each with its own peer columns; the model family's with
    throughput, model_table), then the rows that failed and the implementations not timed, each
    with its reason."""
    groups = family_rows(rows)
    for family, group in groups.items():
        name = f"{title}: {family}" if len(groups) > 1 else title
        if family == MODEL_FAMILY:
            console.print(model_table(group, name))
        else:
            console.print(results_table(group, name))
    if any(family != MODEL_FAMILY for family in groups):
        console.print(OPS_NOTE)
    if MODEL_FAMILY in groups:
        console.print(MODEL_NOTE)
    failed: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        if row["status"] == "failed":
            key = (row["op"], row["impl"], row["reason"] or "")
            failed.setdefault(key, []).append(row["case"])
    for (op, impl, reason), cases in failed.items():
        where = cases[0] if len(cases) == 1 else f"{len(cases)} cases"
        console.print(f"[red]failed[/red] {escape(impl)} on {op} ({where}): {escape(reason)}")
    skipped: dict[tuple[str, str, str], None] = {}
    for row in rows:
        if row["status"] == "skipped":
            skipped[(row["op"], row["impl"], row["reason"] or "")] = None
    for op, impl, reason in skipped:
        console.print(f"[yellow]not timed[/yellow] {escape(impl)} on {op}: {escape(reason)}")


def build_payload(machine: dict, settings: dict, rows: list[dict]) -> dict:
    """What the JSON file holds: the machine (GPU name, copy bandwidth, ...), the settings of the
    run, the result rows, the fastest backend per op at the target shapes
    (summary.fastest_backends: what AUTO_PREFERENCE should say) and the goals checked
    (summary.check_goals)."""
    return {
        "machine": machine,
        "settings": settings,
        "results": rows,
        "fastest_backends": fastest_backends(rows),
        "goals": check_goals(rows),
    }


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Writes `payload` to `path` atomically (a temporary file in the same folder, then
    os.replace), creating the folder if needed. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_plot(path: str | os.PathLike, rows: list[dict], machine: dict) -> str | None:
    """A horizontal bar chart of median time per implementation and case (log scale) to `path`.

    Returns None on success, else the reason no plot was written (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no plot was written (pip install matplotlib)"

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return "no successful rows to plot"
    dtypes = list(dict.fromkeys(r["dtype"] for r in ok))

    def case_key(r: dict) -> str:
        return f"{r['op']}" + (f" {r['dtype']}" if len(dtypes) > 1 else "") + f"\n{r['case']}"

    cases = list(dict.fromkeys(case_key(r) for r in ok))
    impls = list(dict.fromkeys(r["impl"] for r in ok))
    height = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(10, 1.2 + len(cases) * (0.12 * len(impls) + 0.25)))
    for k, impl in enumerate(impls):
        ys, xs = [], []
        for i, case in enumerate(cases):
            for r in ok:
                if r["impl"] == impl and case_key(r) == case:
                    ys.append(i + k * height)
                    xs.append(r["median_us"])
        ax.barh(ys, xs, height=height, label=impl)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(cases))])
    ax.set_yticklabels(cases, fontsize=7)
    ax.margins(y=0.005)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (us, log scale; shorter is faster)")
    where = machine.get("gpu") or machine.get("cpu")
    dtype = ", ".join(dtypes)
    ax.set_title(f"fast_s2s vs peers, {machine.get('device')} {dtype}: {where}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return None
