"""Every ``python tools/X.py ...`` command in README.md and docs/*.md names a tool that exists and only
flags that tool accepts (read from ``python tools/X.py [subcommand] --help``, once per tool).

Commands are taken from fenced code blocks (backslash continuations joined) and from inline code
spans, which is where table cells hold them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: ``python tools/X.py`` or ``torchrun ... tools/X.py``, then its arguments up to the end of the
#: command (shell operators, a comment, the end of an inline code span or line).
_COMMAND = re.compile(r"\b(?:python3?|torchrun)\b[^`\n&|;#]*?\btools/(?P<tool>\w+)\.py(?P<args>[^`\n&|;#]*)")
_FLAG = re.compile(r"(?<!\S)--[A-Za-z][\w-]*")
_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_SUBCOMMANDS = re.compile(r"^  \{(?P<names>[\w,-]+)\}\s*$", re.MULTILINE)


@dataclass(frozen=True)
class DocCommand:
    """One tool invocation found in a document."""

    where: str  # "docs/x.md:12"
    tool: str
    #: First positional argument (a subcommand of tools such as benchmark.py), if any.
    first_arg: str | None
    flags: tuple[str, ...]


def _parse(text: str, where: str) -> list[DocCommand]:
    found = []
    for match in _COMMAND.finditer(text):
        args = match["args"].split()
        first = args[0] if args and not args[0].startswith("-") else None
        found.append(DocCommand(where, match["tool"], first, tuple(_FLAG.findall(match["args"]))))
    return found


def extract_commands(markdown: str, name: str) -> list[DocCommand]:
    """Tool commands in fenced code blocks and inline code spans of a Markdown text."""
    commands: list[DocCommand] = []
    in_fence = False
    pending: list[str] = []  # a fenced command continued with a trailing backslash
    start = 0
    for number, line in enumerate(markdown.splitlines(), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
            pending = []
            continue
        if in_fence:
            if not pending:
                start = number
            pending.append(line.rstrip().removesuffix("\\"))
            if not line.rstrip().endswith("\\"):
                commands += _parse(" ".join(pending), f"{name}:{start}")
                pending = []
        else:
            for span in _INLINE_CODE.findall(line):
                commands += _parse(span, f"{name}:{number}")
    return commands


_HELP: dict[tuple[str, str | None], str] = {}


def _help_command(tool: str, subcommand: str | None) -> list[str]:
    script = str(REPO / "tools" / f"{tool}.py")
    return [sys.executable, script, *([subcommand] if subcommand else []), "--help"]


def _fetch_help(keys: set[tuple[str, str | None]]) -> None:
    """Run the ``--help`` of every tool not read yet, all at once (each one imports torch)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    running = {
        key: subprocess.Popen(
            _help_command(*key), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for key in sorted(keys - set(_HELP), key=str)
    }
    for key, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{' '.join(_help_command(*key))} failed:\n{err[-2000:]}"
        _HELP[key] = out


def help_flags(help_text: str) -> set[str]:
    """Long options from argparse's option lines (``  -o OUT, --out OUT   help``)."""
    flags: set[str] = set()
    for line in help_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            invocation = re.split(r"\s{2,}", stripped)[0]
            flags.update(re.findall(r"--[A-Za-z0-9][\w-]*", invocation))
    return flags


def check_commands(commands: list[DocCommand]) -> list[str]:
    """One line per problem: a tool file that does not exist, or a flag its parser does not know."""
    problems = [f"{c.where}: tools/{c.tool}.py does not exist" for c in commands
                if not (REPO / "tools" / f"{c.tool}.py").is_file()]
    commands = [c for c in commands if (REPO / "tools" / f"{c.tool}.py").is_file()]
    _fetch_help({(c.tool, None) for c in commands})
    subcommands = {tool: set(m["names"].split(",")) for (tool, _), text in list(_HELP.items())
                   for m in _SUBCOMMANDS.finditer(text)}
    keyed = [(c, (c.tool, c.first_arg if c.first_arg in subcommands.get(c.tool, ()) else None))
             for c in commands]
    _fetch_help({key for _, key in keyed})
    for command, key in keyed:
        known = help_flags(_HELP[key]) | help_flags(_HELP[(command.tool, None)])
        name = " ".join(f for f in ("tools/" + command.tool + ".py", key[1]) if f)
        problems += [f"{command.where}: {name} has no flag {f}" for f in command.flags if f not in known]
    return problems


def test_extraction_from_fenced_code_table_cells_and_continuations() -> None:
    doc = "\n".join([
        "Run `python tools/eval.py --det-dir merged --json out.json` or see the table.",
        "| job | command |",
        "| --- | --- |",
        "| split | `python tools/split_dota.py --src a --dst b --rates 0.5 1.0` |",
        "```bash",
        "python tools/train.py --config c.yaml \\",
        "    --data d --set train.ema=true && python tools/test.py --checkpoint x.pt  # --not-a-flag",
        "torchrun --nproc_per_node 8 tools/train.py --epochs 3",
        "python tools/benchmark.py train --steps 3",
        "```",
        "Prose that mentions tools/train.py without python is not a command.",
    ])
    got = [(c.where, c.tool, c.first_arg, c.flags) for c in extract_commands(doc, "doc.md")]
    assert got == [
        ("doc.md:1", "eval", None, ("--det-dir", "--json")),
        ("doc.md:4", "split_dota", None, ("--src", "--dst", "--rates")),
        ("doc.md:6", "train", None, ("--config", "--data", "--set")),
        ("doc.md:6", "test", None, ("--checkpoint",)),
        ("doc.md:8", "train", None, ("--epochs",)),
        ("doc.md:9", "benchmark", "train", ("--steps",)),
    ]


def test_help_flags_reads_option_lines_only() -> None:
    text = "usage: x [-h] [--out OUT]\n\noptions:\n  -h, --help  show\n  -o OUT, --out OUT  where\n" \
           "  --very-long-option VALUE\n                        help that mentions --other\n"
    assert help_flags(text) == {"--help", "--out", "--very-long-option"}


def test_a_flag_that_does_not_exist_fails_the_check() -> None:
    doc = "```\npython tools/eval.py --det-dir merged --no-such-flag 1\npython tools/not_a_tool.py --x\n```\n"
    problems = check_commands(extract_commands(doc, "synthetic.md"))
    assert problems == [
        "synthetic.md:3: tools/not_a_tool.py does not exist",
        "synthetic.md:2: tools/eval.py has no flag --no-such-flag",
    ]
    assert check_commands(extract_commands("`python tools/eval.py --det-dir merged`", "ok.md")) == []


def test_docs_hold_commands() -> None:
    # The extraction must see the README's usage table, or the check below would pass on nothing.
    commands = extract_commands((REPO / "README.md").read_text(encoding="utf-8"), "README.md")
    assert len({c.tool for c in commands}) >= 10


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_use_existing_tools_and_flags(doc: Path) -> None:
    commands = extract_commands(doc.read_text(encoding="utf-8"), str(doc.relative_to(REPO)))
    problems = check_commands(commands)
    assert not problems, "\n".join(problems)
