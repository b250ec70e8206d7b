"""Every argument of every public op and module, each made wrong in every way that applies (rank,
dtype, device, size, value): the call must raise, and the message must name the argument.

The table is generated: for each op a valid call, then one mutation of one argument at a time.
The checks run in fast_s2s.checks before any backend, so one backend would do; the ops are
called on "reference" and, where built, "cpp" to hold both paths to it.

The command line has its table too, generated from the parsers (tests/cli_cases.py): every
numeric option of every subcommand at 0, -1, NaN, infinity and a value too large, and --resume
with each setting of the run record changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib
from collections.abc import Callable

import pytest
import torch

import fast_s2s
from fast_s2s import cli
from fast_s2s.backends import why_unavailable
from fast_s2s.nn import GRU, Attention, GRUCell
from fast_s2s.training import TrainSettings
from fast_s2s.training.resume import run_record
from tests.cli_cases import (
    NUMERIC,
    VALUES,
    cli_commands,
    required_argv,
    resume_bases,
    resume_mutation,
    spelled,
)

B, BEAM, T, S, D, DV, A, I, H = 2, 2, 3, 5, 4, 6, 4, 3, 5
N = B * BEAM

BACKENDS = ["reference"] + (["cpp"] if why_unavailable("gru_cell", "cpp", "cpu") is None else [])


def valid_calls() -> dict[str, tuple[Callable, dict]]:
    """op name -> (function, keyword arguments of a valid call)."""
    f32 = dict(dtype=torch.float32)
    lengths = torch.tensor([S, 2])
    return {
        "dot_attention": (
            fast_s2s.dot_attention,
            dict(
                query=torch.randn(N, T, D, **f32),
                keys=torch.randn(B, S, D, **f32),
                values=torch.randn(B, S, DV, **f32),
                lengths=lengths,
                scale=0.5,
                need_weights=True,
            ),
        ),
        "additive_attention": (
            fast_s2s.additive_attention,
            dict(
                query_proj=torch.randn(N, T, A, **f32),
                keys_proj=torch.randn(B, S, A, **f32),
                v=torch.randn(A, **f32),
                values=torch.randn(B, S, DV, **f32),
                lengths=lengths,
                need_weights=True,
            ),
        ),
        "gru_cell": (
            fast_s2s.gru_cell,
            dict(
                x=torch.randn(B, I),
                h=torch.randn(B, H),
                w_ih=torch.randn(3 * H, I),
                w_hh=torch.randn(3 * H, H),
                b_ih=torch.randn(3 * H),
                b_hh=torch.randn(3 * H),
            ),
        ),
        "gru_layer": (
            fast_s2s.gru_layer,
            dict(
                x=torch.randn(T, B, I),
                h0=torch.randn(B, H),
                w_ih=torch.randn(3 * H, I),
                w_hh=torch.randn(3 * H, H),
                b_ih=torch.randn(3 * H),
                b_hh=torch.randn(3 * H),
                lengths=torch.tensor([T, 1]),
                reverse=False,
            ),
        ),
    }


@dataclasses.dataclass(frozen=True)
class Mutation:
    op: str
    argument: str
    how: str
    value: object

    @property
    def id(self) -> str:
        return f"{self.op}-{self.argument}-{self.how}"


# The dimension whose size the other arguments fix, where it is not the last one (values'
# feature size Dv and x's time steps T are free).
CONSTRAINED_DIM = {"values": 1, "lengths": 0}


def mutations_of(name: str, value: object) -> list[tuple[str, object]]:
    """(how, wrong value) for one argument."""
    if isinstance(value, torch.Tensor):
        wrong = [
            ("rank-up", value.unsqueeze(0)),
            ("device-meta", value.to("meta")),
            ("not-a-tensor", value.tolist()),
        ]
        if value.dim() > 0:
            dim = CONSTRAINED_DIM.get(name, -1)
            wrong.append(("rank-down", value[0]))
            wrong.append(("size", torch.cat([value, value.narrow(dim, 0, 1)], dim=dim)))
        if value.is_floating_point():
            wrong.append(("dtype-int", value.long()))
            wrong.append(("dtype-complex", value.to(torch.complex64)))
        else:  # lengths
            wrong.append(("dtype-float", value.float()))
            wrong.append(("value-negative", -value))
            wrong.append(("value-too-long", value + 100))
        return wrong
    if isinstance(value, bool):
        return [("int", 1), ("string", "no"), ("none", None)]
    if isinstance(value, float):
        return [
            ("string", "0.5"),
            ("complex", 1j),
            ("tensor", torch.ones(S)),
            ("nan", float("nan")),
        ]
    raise AssertionError(f"no mutations for {name}")


def all_mutations() -> list[Mutation]:
    table = []
    for op, (_, kwargs) in valid_calls().items():
        for argument, value in kwargs.items():
            table += [
                Mutation(op, argument, how, bad) for how, bad in mutations_of(argument, value)
            ]
    return table


MUTATIONS = all_mutations()


def test_the_valid_calls_run():
    for backend in BACKENDS:
        for fn, kwargs in valid_calls().values():
            fn(**kwargs, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_a_wrong_argument_is_named(mutation, backend):
    fn, kwargs = valid_calls()[mutation.op]
    kwargs[mutation.argument] = mutation.value
    with pytest.raises((ValueError, TypeError)) as info:
        fn(**kwargs, backend=backend)
    assert mutation.argument in str(info.value), str(info.value)
    assert str(info.value).startswith(mutation.op), str(info.value)


def test_the_table_covers_every_argument():
    """A new argument of an op must be added to valid_calls (and so to the table)."""
    import inspect

    for op, (fn, kwargs) in valid_calls().items():
        names = [p for p in inspect.signature(fn).parameters if p != "backend"]
        assert sorted(names) == sorted(kwargs), op
    assert len(MUTATIONS) > 120


# Modules: constructor arguments and call arguments.
# fmt: off
MODULE_CASES = [
    ("GRUCell-input_size", lambda: GRUCell(0, H), "input_size"),
    ("GRUCell-hidden_size", lambda: GRUCell(I, -1), "hidden_size"),
    ("GRUCell-backend", lambda: GRUCell(I, H, backend="cuda"), "backend"),
    ("GRU-num_layers", lambda: GRU(I, H, num_layers=0), "num_layers"),
    ("GRU-backend", lambda: GRU(I, H, backend=None), "backend"),
    ("Attention-kind", lambda: Attention("cosine", query_size=D, key_size=D), "kind"),
    ("Attention-backend", lambda: Attention("dot", D, D, backend="fast"), "backend"),
    ("GRUCell-input-dtype", lambda: GRUCell(I, H)(torch.ones(B, I, dtype=torch.long)), "x"),
    ("GRUCell-hx-device", lambda: GRUCell(I, H)(
        torch.randn(B, I), torch.randn(B, H, device="meta")), "h"),
]  # fmt: skip


@pytest.mark.parametrize(
    "make,argument", [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES]
)
def test_module_arguments_are_named(make, argument):  # noqa: E501
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert argument in str(info.value), str(info.value)


# The compiled ops called directly (torch.ops.fast_s2s.*, no Python checks in front): one
# argument on the meta device sends the call to the fake function, which must refuse it rather
# than return uninitialised memory as the result.
def direct_calls() -> list[tuple[str, str, Callable]]:
    if why_unavailable("gru_cell", "cpp", "cpu") is not None:
        return []
    ops = torch.ops.fast_s2s

    def calls(op, argument):
        def m(name, t):
            return t.to("meta") if name == argument else t

        x, h = torch.zeros(T, B, I), torch.zeros(B, H)
        w_ih, w_hh, bias = torch.randn(3 * H, I), torch.randn(3 * H, H), torch.randn(3 * H)
        q, k, vals, v = (
            torch.randn(N, D),
            torch.randn(B, S, D),
            torch.randn(B, S, DV),
            torch.randn(D),
        )
        lengths = torch.tensor([S, 1])
        if op == "dot_attention":
            return ops.dot_attention(m("query", q), m("keys", k), m("values", vals),
                                     m("lengths", lengths), 1.0, True)  # fmt: skip
        if op == "additive_attention":
            return ops.additive_attention(m("query_proj", q), m("keys_proj", k), m("v", v),
                                          m("values", vals), m("lengths", lengths),
                                          True)  # fmt: skip
        if op == "gru_cell":
            return ops.gru_cell(m("x", x[0]), m("h", h), m("w_ih", w_ih), m("w_hh", w_hh),
                                m("b_ih", bias), m("b_hh", bias))  # fmt: skip
        return ops.gru_layer(m("x", x), m("h0", h), m("w_ih", w_ih), m("w_hh", w_hh),
                             m("b_ih", bias), m("b_hh", bias), m("lengths", torch.tensor([T, 1])),
                             False)  # fmt: skip

    arguments = {
        "dot_attention": ["keys", "values", "lengths"],
        "additive_attention": ["keys_proj", "v", "values", "lengths"],
        "gru_cell": ["h", "w_ih", "w_hh", "b_ih", "b_hh"],
        "gru_layer": ["h0", "w_ih", "w_hh", "b_ih", "b_hh", "lengths"],
    }
    return [
        (op, argument, lambda op=op, argument=argument: calls(op, argument))
        for op, names in arguments.items()
        for argument in names
    ]


DIRECT = direct_calls()


@pytest.mark.skipif(not DIRECT, reason="C++ extension unavailable")
@pytest.mark.parametrize("op,argument,call", DIRECT, ids=[f"{o}-{a}" for o, a, _ in DIRECT])
def test_compiled_ops_refuse_one_meta_argument(op, argument, call):
    with pytest.raises((ValueError, RuntimeError)) as info:
        call()
    assert argument in str(info.value) and "meta" in str(info.value), str(info.value)


@pytest.mark.skipif(not DIRECT, reason="C++ extension unavailable")
def test_compiled_gru_layer_names_its_length_limit_t():
    x, h = torch.zeros(T, B, I), torch.zeros(B, H)
    w_ih, w_hh = torch.randn(3 * H, I), torch.randn(3 * H, H)
    with pytest.raises(RuntimeError, match=rf"lengths\[0\] = {T + 1} .* \[0, T\] = \[0, {T}\]"):
        torch.ops.fast_s2s.gru_layer(x, h, w_ih, w_hh, None, None, torch.tensor([T + 1, 1]), False)
    keys = torch.randn(B, S, D)
    with pytest.raises(RuntimeError, match=rf"\[0, S\] = \[0, {S}\]"):
        torch.ops.fast_s2s.dot_attention(
            torch.randn(N, D), keys, keys, torch.tensor([S + 1, 1]), 1.0, True
        )


# --------------------------------------------------------------------------------------------
# The command line: every numeric option of every subcommand, found by walking the parsers, at
# 0, -1, NaN, infinity and a value too large to allocate. A new option is in the table as soon
# as it is added; one with a plain type=int / type=float fails test_numeric_options_declare_
# their_range until it gets a range (fast_s2s.cli.options).
# --------------------------------------------------------------------------------------------


def test_numeric_options_declare_their_range():
    """No numeric option without a range: plain int / float types, or a number default with no
    type at all (argparse would pass a command line's text through), fail here."""
    plain = []
    for command, parser in cli_commands().items():
        for action in parser._actions:
            default = action.default
            numeric_default = isinstance(default, int | float) and not isinstance(default, bool)
            if action.type in (int, float) or (numeric_default and action.type is None):
                plain.append(f"{command} {action.option_strings[0]}")
            if hasattr(action.type, "admits") and default is not None:
                assert action.type.admits(str(default)), (command, action.option_strings, default)
    assert not plain, f"numeric options without a range (fast_s2s.cli.options): {plain}"
    commands = {c for c, _, _ in NUMERIC}
    assert {"train", "translate", "evaluate", "bench", "experiment"} <= commands
    assert len(NUMERIC) >= 30


CLI_TABLE = [(c, o, t, v) for c, o, t in NUMERIC for v in VALUES]


@pytest.mark.parametrize(
    "command,option,kind,value", CLI_TABLE, ids=[f"{c}{o}={v}" for c, o, _, v in CLI_TABLE]
)
def test_a_numeric_option_takes_its_range_only(command, option, kind, value, capsys):
    parser = cli_commands()[command]
    text = spelled(value, kind)
    argv = [command, *required_argv(parser), option, text]  # as typed: "--lr -inf" too
    if value in ("nan", "inf", "-inf", "huge"):  # never a count, size, rate or seed
        assert not kind.admits(text), f"{command} {option} takes {text}"
    if kind.admits(text):
        args = cli.build_parser().parse_args(argv)
        assert getattr(args, option.lstrip("-").replace("-", "_")) is not None
        return
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"fast-s2s {command}: {option}: must be {kind.describe()}"), err
    assert text in err, err


# --------------------------------------------------------------------------------------------
# --resume with each setting of the run record changed (task, data, tokenisation, each model
# config field...): refused in one line naming it, the checkpoint byte for byte as it was. The
# settings come from fast_s2s.training.resume.run_record, the command lines from the parser
# (tests/cli_cases.py), so a new setting is in the table as soon as the record holds it.
# --------------------------------------------------------------------------------------------

RESUME_OPTIONS = list(run_record(TrainSettings(), {}))


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    """(folder, base command lines, {base: its trained checkpoint}, trained lazily)."""
    folder = tmp_path_factory.mktemp("resume")
    bases = resume_bases(str(folder))
    trained: dict[str, pathlib.Path] = {}

    def checkpoint_of(name: str) -> pathlib.Path:
        if name not in trained:
            torch.set_num_threads(1)
            path = folder / f"{name}.pt"
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli.main([*bases[name], "--checkpoint", str(path)]) == 0
            trained[name] = path
        return trained[name]

    return folder, bases, checkpoint_of


def test_the_resume_table_covers_the_model_config_and_the_data():
    from fast_s2s.training.resume import MODEL_FIELDS

    assert {"--task", "--data", "--src-tokenize", "--tgt-tokenize"} <= set(RESUME_OPTIONS)
    assert {f"--{f.replace('_', '-')}" for f in MODEL_FIELDS} <= set(RESUME_OPTIONS)
    assert len(MODEL_FIELDS) >= 12


@pytest.mark.parametrize("option", RESUME_OPTIONS)
def test_resume_with_one_setting_changed_is_refused(resume_runs, option, capsys):
    folder, bases, checkpoint_of = resume_runs
    found = resume_mutation(option, bases, str(folder))
    assert found is not None, f"no base command line changes only {option}: add one"
    base, extra = found
    path = checkpoint_of(base)
    before = path.read_bytes()
    capsys.readouterr()
    assert cli.main([*bases[base], *extra, "--checkpoint", str(path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    named = "it was trained on --data" if option == "--data" else f"it was trained with {option} "
    assert err.startswith(f"fast-s2s train: --resume: {path} is another run: {named}"), err
    assert "nothing was written" in err
    assert path.read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
