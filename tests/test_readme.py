"""The README's Python examples run as written (so the README cannot lie)."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    namespace: dict = {}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    if "context" in namespace and "weights" in namespace:
        assert namespace["context"].shape[0] == namespace["weights"].shape[0]


def test_ci_runs_the_readme_commands_verbatim():
    """.ci/run must run the README's two set-up commands exactly as written."""
    text = README.read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(commands) == 2, commands
    ci = (README.parent / ".ci" / "run").read_text()
    for command in commands:
        assert command.strip() in ci, f"CI does not run the README command: {command}"
