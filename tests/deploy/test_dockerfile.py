"""Static checks of deploy/Dockerfile and .dockerignore (no Docker engine here: the file is parsed).

What the image must be: multi-stage on one pinned base, the project installed without extras, run
as a fixed non-root uid that owns only its home (never the code nor the working directory), no
package-manager caches in any layer, and a health check and entry point that name what the CLI
and the settings really have. CI builds the image and checks the same on the built image
(.github/workflows/ci.yml, job `image`).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel

from cli.main import app
from common.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PYPROJECT = REPO_ROOT / "pyproject.toml"

# A patch release of Python on a named Debian release, or anything pinned by digest.
PINNED_BASE = re.compile(r"^python:3\.\d+\.\d+-slim-(bookworm|trixie)$|@sha256:[0-9a-f]{64}$")
UID = 10001


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def _instructions() -> list[Instruction]:
    """Logical instructions (continuations joined, comments dropped) with their stage index."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"

    instructions: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), args.strip(), stage))
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return _instructions()


def _final(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _env(instructions: list[Instruction]) -> dict[str, str]:
    """``ENV`` of the given instructions, ``KEY=value`` pairs (shell-quoted values allowed)."""
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV":
            for pair in shlex.split(i.args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {i.args!r}: use the KEY=value form"
                env[key] = value
    return env


def _runs(instructions: list[Instruction]) -> list[str]:
    return [i.args for i in instructions if i.keyword == "RUN"]


def _bases(instructions: list[Instruction]) -> list[str]:
    args = {
        name: default
        for i in instructions
        if i.keyword == "ARG" and i.stage == -1
        for name, _, default in [i.args.partition("=")]
    }
    bases = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) for base in bases]


# ---------------------------------------------------------------------------------------------
# base image and build
# ---------------------------------------------------------------------------------------------


def test_both_stages_use_one_pinned_base(dockerfile: list[Instruction]) -> None:
    bases = _bases(dockerfile)
    assert len(bases) == 2, "a builder and a runtime stage"
    assert len(set(bases)) == 1, f"the stages run different bases: {bases}"
    assert PINNED_BASE.search(bases[0]), f"{bases[0]!r} is not pinned to a patch release"
    froms = [i.args for i in dockerfile if i.keyword == "FROM"]
    assert froms[0].endswith(" AS builder") and froms[1].endswith(" AS runtime")


def test_no_layer_keeps_a_package_cache(dockerfile: list[Instruction]) -> None:
    builder_env = _env([i for i in dockerfile if i.stage == 0])
    assert builder_env["PIP_NO_CACHE_DIR"] == "1"
    for run in _runs(dockerfile):
        if "apt-get install" in run:
            assert "--no-install-recommends" in run, run
            assert "rm -rf /var/lib/apt/lists/*" in run, f"apt lists stay in the layer: {run}"
        assert "pip cache" not in run or "pip cache purge" in run
    assert not [i for i in dockerfile if i.keyword == "ADD"], "COPY only: no remote or tar ADDs"


def test_build_tools_are_not_upgraded_to_whatever_is_newest(dockerfile: list[Instruction]) -> None:
    for run in _runs(dockerfile):
        assert not re.search(r"pip install (-U|--upgrade) pip\b", run), run
        assert "apt-get upgrade" not in run and "apt-get dist-upgrade" not in run, run


def test_the_runtime_stage_installs_nothing(dockerfile: list[Instruction]) -> None:
    for run in _runs(_final(dockerfile)):
        assert "pip install" not in run and "apt-get" not in run, run


def test_the_project_is_installed_without_extras(dockerfile: list[Instruction]) -> None:
    installs = [run for run in _runs(dockerfile) if "pip install" in run]
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$)", run) for run in installs)
    for run in installs:
        assert not re.search(r"\[[^\]]*\b(embedded|dev)\b", run), f"extras installed: {run}"
        assert ".[" not in run
    assert any("pip check" in run for run in installs), "a broken dependency set must fail"


def test_the_runtime_copies_the_venv_from_the_builder_as_roots(
    dockerfile: list[Instruction],
) -> None:
    copies = [i.args for i in _final(dockerfile) if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/tenantflow /opt/tenantflow"], copies
    # pip compiles bytecode in the builder: the runtime user cannot write next to the code.
    assert not any("--no-compile" in run for run in _runs(dockerfile))


# ---------------------------------------------------------------------------------------------
# the user
# ---------------------------------------------------------------------------------------------


def test_runs_as_a_fixed_non_root_uid(dockerfile: list[Instruction]) -> None:
    users = [i.args for i in dockerfile if i.keyword == "USER"]
    assert users == [f"{UID}:{UID}"], f"one USER, numeric uid:gid (a pod can check it): {users}"


def test_the_user_is_created_with_that_uid_and_no_login(dockerfile: list[Instruction]) -> None:
    runs = " ".join(_runs(_final(dockerfile)))
    assert f"groupadd --system --gid {UID} tenantflow" in runs
    useradd = re.search(r"useradd ([^&]*)", runs)
    assert useradd, "the runtime stage creates no user"
    options = useradd.group(1)
    assert f"--uid {UID}" in options and f"--gid {UID}" in options
    assert "--shell /usr/sbin/nologin" in options and "--system" in options


def test_nothing_runs_or_is_copied_after_the_user_switch(dockerfile: list[Instruction]) -> None:
    final = _final(dockerfile)
    switch = next(n for n, i in enumerate(final) if i.keyword == "USER")
    after = {i.keyword for i in final[switch + 1 :]}
    assert after <= {"EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "STOPSIGNAL", "LABEL"}, after


def test_the_user_owns_its_home_and_nothing_else(dockerfile: list[Instruction]) -> None:
    final = _final(dockerfile)
    env = _env(final)
    runs = " ".join(_runs(final))
    home = env["HOME"]
    assert f"--home-dir {home} --create-home" in runs
    workdir = [i.args for i in final if i.keyword == "WORKDIR"]
    assert workdir == ["/app"] and home != "/app"
    assert "chown" not in runs, "only useradd gives the user a directory: its home"
    for mode in re.findall(r"chmod (\S+)", runs):
        assert re.fullmatch(r"0?[0-7]{3}", mode), f"chmod {mode}: numeric modes only"
        group, other = int(mode[-2]), int(mode[-1])
        assert not (group | other) & 0o2, f"chmod {mode} lets others write"
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert not any("--chown" in c or "--chmod" in c for c in copies), copies


# ---------------------------------------------------------------------------------------------
# what it runs
# ---------------------------------------------------------------------------------------------


def _cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))


def test_entrypoint_is_tenantflow_gateway(dockerfile: list[Instruction]) -> None:
    final = {i.keyword: i.args for i in _final(dockerfile)}
    assert json.loads(final["ENTRYPOINT"]) == ["tenantflow"]
    assert json.loads(final["CMD"]) == ["gateway"]
    assert {"gateway", "worker", "check"} <= _cli_commands()
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["tenantflow"] == "cli.main:main"


def test_the_exposed_port_is_the_gateway_port(dockerfile: list[Instruction]) -> None:
    final = _final(dockerfile)
    exposed = [i.args for i in final if i.keyword == "EXPOSE"]
    assert exposed == [_env(final)["TENANTFLOW_GATEWAY__PORT"]] == ["8000"]


def test_healthcheck_gets_health_in_exec_form(dockerfile: list[Instruction]) -> None:
    checks = [i.args for i in _final(dockerfile) if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    flags = dict(re.findall(r"--([a-z-]+)=(\S+)", options))
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "exec form: no shell, and the slim image has no curl"
    code = argv[2]
    compile(code, "HEALTHCHECK", "exec")  # the probe is valid Python
    assert "urllib.request.urlopen" in code and "/health'" in code
    assert "TENANTFLOW_GATEWAY__PORT" in code
    probe_timeout = re.search(r"timeout=(\d+(?:\.\d+)?)\)", code)
    assert probe_timeout, "the probe sets no timeout of its own"
    docker_timeout = float(flags["timeout"].rstrip("s"))
    assert float(probe_timeout.group(1)) < docker_timeout, "the probe must give up first"


def test_runtime_environment(dockerfile: list[Instruction]) -> None:
    env = _env(_final(dockerfile))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TENANTFLOW_PROFILE"] == "production"
    assert env["TENANTFLOW_LOG__FORMAT"] == "json"
    assert env["PATH"].startswith("/opt/tenantflow/bin:")


def test_runtime_environment_names_real_settings(dockerfile: list[Instruction]) -> None:
    """A misspelt TENANTFLOW_ variable would be ignored silently (configuration.md)."""
    for name in (n for n in _env(_final(dockerfile)) if n.startswith("TENANTFLOW_")):
        section, _, option = name.removeprefix("TENANTFLOW_").lower().partition("__")
        assert section in Settings.model_fields, name
        if option:
            model = Settings.model_fields[section].annotation
            assert isinstance(model, type) and issubclass(model, BaseModel), name
            assert option in model.model_fields, name


# ---------------------------------------------------------------------------------------------
# .dockerignore
# ---------------------------------------------------------------------------------------------


def test_dockerignore_sends_only_the_package_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    included = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    find = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in find}

    assert patterns[0] == "*", "start from an empty context and re-include what the build needs"
    assert {"pyproject.toml", *packages} <= included
    assert not included & {".env", ".venv", ".git", ".tenantflow", "tests", "deploy"}
    assert "**/.env" in patterns
