"""docs/user-guide.md, statically: its shell blocks parse, and every `tenantflow` command and
option they use exists. (CI runs the blocks for real against `make dev`'s stack:
tests/deploy/user_guide.py.)"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import typer

from cli.main import app
from tests.deploy.user_guide import script, shell_blocks

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
PROGRAM = ".venv/bin/tenantflow"


def _text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _tenantflow_lines() -> list[list[str]]:
    lines = []
    for block in shell_blocks(_text()):
        joined = re.sub(r"\$\(|\)(?=\s|$)", " ", block.replace("\\\n", " "))
        for line in joined.splitlines():
            if PROGRAM in line:
                argv = shlex.split(line, comments=True)
                # A command inside a quoted string ("Bearer $(.venv/bin/tenantflow token ...)").
                quoted = [arg for arg in argv if PROGRAM in arg and arg != PROGRAM]
                if PROGRAM not in argv and quoted:
                    argv = quoted[0].split()
                lines.append(argv[argv.index(PROGRAM) + 1 :])
    return lines


def test_the_guide_walks_every_step() -> None:
    text = _text()
    for step in (
        "Start the stack",
        "Three tenant databases",
        "Roll it out",
        "Roll back one",
        "Provision a tenant",
        "Events in",
        "Webhooks",
        "The dashboard",
        "Take over",
    ):
        assert re.search(rf"^### \d+\. {step}", text, re.MULTILINE), step
    assert len(shell_blocks(text)) >= 14
    assert "<<OUT:" not in text, "an output was never recorded"


def test_the_guide_script_parses_as_bash() -> None:
    result = subprocess.run(
        ["bash", "-n"], input=script(_text()), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_tenantflow_command_and_option_exists() -> None:
    used = _tenantflow_lines()
    assert len(used) >= 20
    seen = set()
    for argv in used:
        command: Any = typer.main.get_command(app)
        path = []
        while argv and hasattr(command, "commands") and argv[0] in command.commands:
            path.append(argv[0])
            command = command.commands[argv.pop(0)]
        assert not hasattr(command, "commands"), f"tenantflow {' '.join(path)}: no subcommand"
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for arg in argv:
            if arg.startswith("--"):
                assert arg.split("=")[0] in options, f"tenantflow {' '.join(path)} {arg}"
        seen.add(" ".join(path))
    assert {
        "token",
        "db add",
        "sets register",
        "migrate apply",
        "migrate rollback",
        "tenant create",
        "migrate adopt",
    } <= seen
