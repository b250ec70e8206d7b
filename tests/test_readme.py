"""Every code block of README.md and docs/*.md runs as written, so the documentation cannot lie.

What runs (a block is a fenced block; its language is the word after the opening fence):

- ```python: executed in a fresh namespace, in a temporary directory.
- ```bash (or sh, shell): run with `bash -e -o pipefail` in a temporary directory holding a link
  to the repository's scripts/, with this Python first on PATH (also as $PYTHON), this checkout
  first on PYTHONPATH, and `fast-s2s` defined as `python -m fast_s2s.cli`: this checkout's code
  (one torch thread unless OMP_NUM_THREADS says otherwise; python blocks run on one too).
- Any other language, or none (text, json: listings and output), is not code and does not run.

A block that cannot run here is marked by an HTML comment (invisible when rendered) on the line
right before its opening fence:

- `<!-- not-run: REASON -->`: needs a GPU, builds the package, runs for minutes. At most
  MAX_NOT_RUN such blocks in all, and fewer than the blocks that run. Their `fast-s2s` commands
  are still checked against the CLI's parser.
- `<!-- same-as: PATH -->`: the block shows the repository's file PATH verbatim (how the README
  shows what its two commands run); checked against the file, not run.

Besides: every `fast-s2s` command in a bash block, run or not, parses with the CLI, and so does
every one in an inline code span, which may name options without their values (an option
renamed or a choice dropped in the code fails here); and .ci/run runs the README's two commands
verbatim; every relative link leads to a file and heading. The last tests feed the checker
broken documents and commands, so it is seen to fail.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MAX_NOT_RUN = 5
BASH_TIMEOUT_S = 600

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARK = re.compile(r"^\s*<!--\s*(not-run|same-as):\s*(.*?)\s*-->\s*$")
MARK_LIKE = re.compile(r"<!--\s*(not[-_ ]?run|same[-_ ]?as|skip)", re.I)


@dataclass(frozen=True)
class Block:
    document: str  # path relative to the repository
    line: int  # of the opening fence, 1-based
    language: str  # "python", "bash", or "" for anything else
    code: str
    mark: str = ""  # "", "not-run" or "same-as"
    argument: str = ""  # the reason, or the file

    @property
    def name(self) -> str:
        return f"{self.document}:{self.line}"


def parse(text: str, document: str) -> tuple[list[Block], list[str], str]:
    """The fenced blocks of a markdown text, the errors in its marks and fences, and the text
    outside the blocks (for the inline code spans)."""
    blocks, errors, prose = [], [], []
    lines = text.splitlines()
    i, pending = 0, None  # pending: (line number, mark, argument) waiting for its fence
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        mark = MARK.match(line)
        if pending and not fence:
            errors.append(
                f"{document}:{pending[0]}: a {pending[1]} mark must be right before a fence"
            )
            pending = None
        if mark:
            if not mark.group(2):
                errors.append(f"{document}:{i + 1}: {mark.group(1)} needs a reason or a file")
            pending = (i + 1, mark.group(1), mark.group(2))
        elif MARK_LIKE.search(line):
            errors.append(f"{document}:{i + 1}: not a mark this test knows: {line.strip()!r}")
        if not fence:
            prose.append(line)
            i += 1
            continue
        indent, ticks, language = fence.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            errors.append(f"{document}:{start}: the fence opened here is never closed")
        i += 1
        kind, argument = (pending[1], pending[2]) if pending else ("", "")
        pending = None
        code = "\n".join(body) + "\n"
        blocks.append(Block(document, start, LANGUAGES.get(language, ""), code, kind, argument))
        if kind and not blocks[-1].language:
            errors.append(f"{document}:{start}: a {kind} mark on a block that is not code")
    if pending:
        errors.append(f"{document}:{pending[0]}: a {pending[1]} mark at the end of the file")
    return blocks, errors, "\n".join(prose)


def _load() -> tuple[list[Block], list[str], dict[str, str]]:
    blocks, errors, prose = [], [], {}
    for path in DOCUMENTS:
        name = str(path.relative_to(ROOT))
        found, wrong, outside = parse(path.read_text(), name)
        blocks += found
        errors += wrong
        prose[name] = outside
    return blocks, errors, prose


BLOCKS, PARSE_ERRORS, PROSE = _load()
TO_RUN = [b for b in BLOCKS if b.language and not b.mark]
NOT_RUN = [b for b in BLOCKS if b.mark == "not-run"]
SAME_AS = [b for b in BLOCKS if b.mark == "same-as"]


# -- running a block ----------------------------------------------------------------------------

BASH_PRELUDE = 'fast-s2s() { "$PYTHON" -m fast_s2s.cli "$@"; }\n'


def run_bash(code: str, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    env = dict(os.environ)
    env["PYTHON"] = sys.executable
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    # One torch thread: the blocks show usage, not speed, and on a machine shared with other
    # jobs a two-thread run can take many times longer (its threads wait for each other).
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", BASH_PRELUDE + code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BASH_TIMEOUT_S,
    )


def run_block(block: Block, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the block; fails the test with its output when it fails."""
    if block.language == "python":
        import torch

        monkeypatch.chdir(cwd)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the bash blocks (see run_bash)
        try:
            exec(compile(block.code, block.name, "exec"), {"__name__": "__readme__"})
        finally:
            torch.set_num_threads(threads)
        return
    result = run_bash(block.code, cwd)
    if result.returncode != 0:
        pytest.fail(
            f"{block.name}: the bash block exited {result.returncode}\n--- stdout (end)\n"
            f"{result.stdout[-3000:]}\n--- stderr (end)\n{result.stderr[-3000:]}"
        )


def test_documents_parse():
    assert not PARSE_ERRORS, "\n".join(PARSE_ERRORS)
    names = {b.document for b in TO_RUN}
    assert "README.md" in names and "docs/usage.md" in names, names


def test_readme_has_an_example_of_each_part():
    readme = [b.code for b in TO_RUN if b.document == "README.md"]
    for needle in ("fast_s2s.dot_attention", "fast_s2s.gru_layer", "fnn.GRU", "beam_search"):
        assert any(needle in code for code in readme), f"no README example runs {needle}"
    assert any(
        b.language == "bash" and "fast-s2s train" in b.code
        for b in TO_RUN
        if b.document == "README.md"
    )


def test_blocks_not_run_are_few():
    where = [f"{b.name} ({b.argument})" for b in NOT_RUN]
    assert len(NOT_RUN) <= MAX_NOT_RUN, f"{len(NOT_RUN)} blocks marked not-run: {where}"
    assert len(NOT_RUN) < len(TO_RUN), f"more blocks marked not-run than run: {where}"


@pytest.mark.parametrize("block", TO_RUN, ids=lambda b: b.name)
def test_block_runs(block, tmp_path, monkeypatch):
    run_block(block, tmp_path, monkeypatch)


@pytest.mark.parametrize("block", SAME_AS, ids=lambda b: b.name)
def test_block_shows_the_file(block):
    path = ROOT / block.argument
    assert path.is_file(), f"{block.name}: same-as names {block.argument}, which does not exist"
    assert block.code == path.read_text(), f"{block.name} differs from {block.argument}"


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("document", list(PROSE))
def test_links_resolve(document):
    """Every relative link names a file of the repository, and its #anchor a heading there."""
    wrong = []
    for target in re.findall(r"\]\(([^)\s]+)\)", PROSE[document]):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (ROOT / document).parent / file if file else ROOT / document
        if not path.exists():
            wrong.append(f"{target}: no {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)
            if anchor not in {slug(h) for h in headings}:
                wrong.append(f"{target}: no heading #{anchor} in {file or document}")
    assert not wrong, f"{document}: " + "; ".join(wrong)


# -- fast-s2s commands against the CLI's parser --------------------------------------------------

OPERATORS = set(";&|<>()\n")


def cli_commands(code: str) -> list[list[str]]:
    """The argument lists of the `fast-s2s` (or `python -m fast_s2s.cli`) calls in shell code."""
    lexer = shlex.shlex(code.replace("\\\n", " "), posix=True, punctuation_chars=";&|<>()\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    commands, current = [], []
    for token in [*lexer, ";"]:
        if token and set(token) <= OPERATORS:
            for i, word in enumerate(current):
                if os.path.basename(word) == "fast-s2s":
                    commands.append(current[i + 1 :])
                    break
                if word == "-m" and current[i + 1 : i + 2] == ["fast_s2s.cli"]:
                    commands.append(current[i + 2 :])
                    break
            current = []
        else:
            current.append(token)
    return commands


def _cli():
    import argparse

    from fast_s2s.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


# What a mention (an inline span naming options, not giving their values) may lack.
MENTION_GAPS = ("expected one argument", "expected at least one argument", "are required")


def cli_error(args: list[str], invocation: bool = True) -> str | None:
    """Why the CLI rejects `fast-s2s ARGS`, or None. An invocation (a code block's command)
    must parse in full. A mention (an inline span) must too, except that it may name options
    without their values (`--plot`, `--src-tokenize / --tgt-tokenize`) and leave out
    required ones; a bare `fast-s2s train` is a name."""
    import contextlib
    import io

    parser, commands = _cli()
    if args and not args[0].startswith("-") and args[0] not in commands:
        return f"no subcommand {args[0]!r}"
    if not invocation:
        if len(args) <= 1:
            return None
        args = [a for a in args if a != "/"]
        known = {s for action in commands[args[0]]._actions for s in action.option_strings}
        unknown = [a for a in args[1:] if a.startswith("--") and a.split("=")[0] not in known]
        if unknown:
            return f"fast-s2s {args[0]} has no option {unknown[0]}"
    from fast_s2s.cli.options import UsageError

    stderr = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except UsageError as exc:  # the CLI's parsers raise their errors as one line
        error = str(exc)
    except SystemExit as exit:  # --help, or a parser of argparse's own
        error = stderr.getvalue().strip().splitlines()[-1] if exit.code else None
    if error and not (not invocation and any(gap in error for gap in MENTION_GAPS)):
        return error
    return None


def document_commands(document: str) -> list[tuple[str, list[str], bool]]:
    """(where, arguments, whether it is an invocation) of every fast-s2s command in it."""
    found = []
    for block in BLOCKS:
        if block.document == document and block.language == "bash":
            found += [(block.name, args, True) for args in cli_commands(block.code)]
    for span in re.findall(r"`([^`]+)`", PROSE[document]):
        if "fast-s2s" in span or "fast_s2s.cli" in span:
            if re.search(r"<\w+>", span):  # `fast-s2s <command> --help`: a placeholder
                continue
            span = span.replace("\n", " ")
            found += [(f"{document}: `{span}`", args, False) for args in cli_commands(span)]
    return found


@pytest.mark.parametrize("document", list(PROSE))
def test_cli_commands_parse(document):
    wrong = []
    for where, args, invocation in document_commands(document):
        error = cli_error(args, invocation)
        if error:
            wrong.append(f"{where}: fast-s2s {shlex.join(args)}: {error}")
    assert not wrong, "\n".join(wrong)


def test_ci_runs_the_readme_commands_verbatim():
    """The README's two commands are lines of .ci/run, and the README shows what each runs."""
    section = (ROOT / "README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks, errors, _ = parse(section, "README.md")
    assert not errors, errors
    commands = [b.code.strip() for b in blocks if b.mark == "not-run"]
    shown = [b.argument for b in blocks if b.mark == "same-as"]
    assert len(commands) == 2, commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci, f".ci/run does not run the README command: {command}"
        script = command.split()[-1]
        assert script in shown, f"the README does not show {script}, which {command!r} runs"


# -- the checker fails on broken documents -------------------------------------------------------

BROKEN = """\
<!-- not-run: a mark with no fence after it -->
Some prose.

<!-- not-run: -->
```bash
true
```

<!-- notrun: misspelled -->
```python
pass
```

```bash
echo never closed
"""


def test_checker_finds_broken_marks():
    blocks, errors, _ = parse(BROKEN, "broken.md")
    assert len(errors) == 4, errors
    assert [b.mark for b in blocks] == ["not-run", "", ""]


def test_checker_fails_a_failing_block(tmp_path, monkeypatch):
    cases = {
        "bash-e": ("bash", "true\nfalse\necho unreachable\n"),
        "pipefail": ("bash", "false | cat\n"),
        "python": ("python", "1 / 0\n"),
    }
    for name, (language, code) in cases.items():
        (tmp_path / name).mkdir()
        with pytest.raises((pytest.fail.Exception, ZeroDivisionError)):
            run_block(Block("broken.md", 1, language, code), tmp_path / name, monkeypatch)


def test_checker_rejects_a_wrong_command():
    commands = cli_commands("echo x | fast-s2s translate --checkpoint m.pt --bam 5  # typo\n")
    assert commands == [["translate", "--checkpoint", "m.pt", "--bam", "5"]]
    assert cli_error(commands[0]) is not None
    assert cli_error(commands[0], invocation=False) is not None
    assert cli_error(["tarin"]) is not None
    assert cli_error(["translate", "--checkpoint", "m.pt", "--beam", "5"]) is None
    assert cli_error(["translate", "--beam"], invocation=False) is None  # a mention
    assert cli_error(["translate", "--beam"]) is not None  # an invocation: --beam needs a value
    assert cli_error(["train", "--task", "dtaes"], invocation=False) is not None
    assert cli_error(["experiment", "length", "--tiny", "--budget", "6"]) is None
