"""Static checks of the GitHub workflows (.github/workflows/ci.yml and release.yml).

GitHub runs them, not this machine: the files are parsed, and what they run is checked against
the repository (the Makefile's targets, `.ci/run`, the Dockerfile's user) and against the tools
installed here (the `tenantflow` commands and options, schemathesis' and pip-audit's options, the
executables under `.venv/bin`). Every `run:` script must parse as bash, and the release's version
check is run for real.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from cli.main import app

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
RELEASE = WORKFLOWS / "release.yml"
MAKEFILE = REPO_ROOT / "Makefile"
CI_RUN = REPO_ROOT / ".ci" / "run"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"
BIN = Path(sys.executable).parent

# owner/repo@v4 (a major version tag) or a full commit sha; never a branch.
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
EXPRESSION = re.compile(r"\$\{\{[^}]*\}\}")


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name} is not a mapping"
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in document:
        document["on"] = document.pop(True)
    return document


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return _load(CI)


@pytest.fixture(scope="module")
def release() -> dict[str, Any]:
    return _load(RELEASE)


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    steps = workflow["jobs"][job]["steps"]
    assert isinstance(steps, list) and steps, f"job {job} has no steps"
    return steps


def _scripts(workflow: dict[str, Any], job: str | None = None) -> list[str]:
    jobs = [job] if job else list(workflow["jobs"])
    return [str(s["run"]) for j in jobs for s in _steps(workflow, j) if "run" in s]


def _uses(workflow: dict[str, Any], job: str, action: str) -> list[dict[str, Any]]:
    return [s for s in _steps(workflow, job) if str(s.get("uses", "")).startswith(action + "@")]


def _command_lines(script: str, program: str) -> list[list[str]]:
    """Every command line of ``script`` (continuations joined) that runs ``program``."""
    # A command substitution $(...) is read as the command inside it.
    joined = re.sub(r"\$\(|\)(?=\s|$)", " ", script.replace("\\\n", " "))
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if re.search(rf"(^|[\s/(]){re.escape(program)}(\s|$)", line):
            found.append(shlex.split(EXPRESSION.sub("X", line), comments=True))
    return found


def _makefile_targets() -> set[str]:
    text = MAKEFILE.read_text(encoding="utf-8")
    variables = dict(re.findall(r"^([A-Z_]+) [:?]?= *(.*)$", text, flags=re.MULTILINE))

    def expand(value: str) -> str:
        while match := re.search(r"\$\(([A-Z_]+)\)", value):
            value = value.replace(match.group(0), variables[match.group(1)])
        return value

    targets: set[str] = set()
    for head in re.findall(r"^([^\s#=:][^=:]*):(?!=)", text, flags=re.MULTILINE):
        targets.update(expand(name) for name in head.split())
    return targets


# ---------------------------------------------------------------------------------------------
# both workflows
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CI, RELEASE], ids=["ci", "release"])
def test_workflow_parses_with_triggers_and_jobs(path: Path) -> None:
    workflow = _load(path)
    assert workflow["name"] and workflow["on"] and workflow["jobs"]
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        assert 0 < job["timeout-minutes"] <= 120, f"{name}: a hung job must not run for 6 h"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{name}: {step}"


@pytest.mark.parametrize("path", [CI, RELEASE], ids=["ci", "release"])
def test_actions_are_pinned_to_a_release(path: Path) -> None:
    workflow = _load(path)
    for job in workflow["jobs"]:
        for step in _steps(workflow, job):
            if "uses" in step:
                assert PINNED_ACTION.match(step["uses"]), f"{job}: {step['uses']} is not pinned"


@pytest.mark.parametrize("path", [CI, RELEASE], ids=["ci", "release"])
def test_the_token_is_read_only_unless_a_job_says_otherwise(path: Path) -> None:
    workflow = _load(path)
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        extra = {k: v for k, v in job.get("permissions", {}).items() if v != "read"}
        assert extra in ({}, {"packages": "write"}), f"{name}: {extra}"
        if extra:
            assert path == RELEASE, "only the release pushes packages"


@pytest.mark.parametrize("path", [CI, RELEASE], ids=["ci", "release"])
def test_run_scripts_parse_as_bash(path: Path) -> None:
    for script in _scripts(_load(path)):
        result = subprocess.run(
            ["bash", "-n"],
            input=EXPRESSION.sub("X", script),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{result.stderr}\n{script}"


@pytest.mark.parametrize("path", [CI, RELEASE], ids=["ci", "release"])
def test_the_image_is_built_from_the_deploy_dockerfile(path: Path) -> None:
    workflow = _load(path)
    builds = [
        step["with"]
        for job in workflow["jobs"]
        for step in _uses(workflow, job, "docker/build-push-action")
    ]
    assert builds
    for build in builds:
        assert build["context"] == "." and build["file"] == "deploy/Dockerfile"
        assert (REPO_ROOT / build["file"]).resolve() == DOCKERFILE


@pytest.mark.parametrize("path", [CI, RELEASE], ids=["ci", "release"])
def test_the_smoke_test_expects_the_dockerfile_user(path: Path) -> None:
    uid = re.search(r"^USER (\d+):\d+$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert uid
    smoke = [s for s in _scripts(_load(path)) if "--entrypoint id" in s]
    assert smoke and all(f"= {uid.group(1)}" in s for s in smoke)
    assert all("refusing to start in the production profile" in s for s in smoke)


# ---------------------------------------------------------------------------------------------
# ci.yml
# ---------------------------------------------------------------------------------------------


def test_ci_runs_on_pushes_to_main_and_on_pull_requests(ci: dict[str, Any]) -> None:
    assert ci["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in ci["on"]
    assert set(ci["jobs"]) == {"test", "image", "api-fuzz", "audit"}


def test_ci_test_job_is_dot_ci_run_as_root_on_debian(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["test"]
    image = job["container"]["image"]
    assert re.fullmatch(r"python:3\.(\d+)-bookworm", image), image
    minor = int(image.split(".")[1].split("-")[0])
    requires = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["requires-python"]
    assert minor >= int(requires.removeprefix(">=3.")), "the container's Python is too old"
    # No --user: steps run as root, so `make test` installs the Debian packages itself.
    assert "--user" not in job["container"].get("options", "")
    assert [s["run"].strip() for s in _steps(ci, "test") if "run" in s] == [".ci/run"]
    assert os.access(CI_RUN, os.X_OK)
    commands = [
        line.strip()
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert commands[-1] == "make test"


def test_make_test_installs_the_debian_packages_the_tests_drive() -> None:
    text = MAKEFILE.read_text(encoding="utf-8")
    packages = re.search(r"^SYSTEM_PACKAGES := (.*)$", text, re.MULTILINE)
    assert packages and set(packages.group(1).split()) >= {"prometheus", "chromium"}
    assert re.search(r"^test: .*\bsystem-packages\b", text, re.MULTILINE)
    assert "apt-get install" in text


def test_make_targets_the_workflows_call_exist(ci: dict[str, Any]) -> None:
    called = {
        target
        for script in _scripts(ci)
        for argv in _command_lines(script, "make")
        for target in argv[argv.index("make") + 1 :]
    }
    assert called == {".venv/.installed"}
    assert called <= _makefile_targets()
    assert "test" in _makefile_targets()


def test_venv_executables_the_workflows_run_are_installed(ci: dict[str, Any]) -> None:
    used = {name for s in _scripts(ci) for name in re.findall(r"\.venv/bin/([\w-]+)", s)}
    assert used == {"tenantflow", "schemathesis", "pip-audit", "python"}
    used.remove("python")
    assert (BIN / "python").exists()
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    declared = {
        re.split(r"[\[<>=~ ]", requirement)[0].lower()
        for group in pyproject["optional-dependencies"].values()
        for requirement in group
    }
    for name in used:
        assert name in pyproject["scripts"] or name in declared, f"{name} is not a dependency"
        assert (BIN / name).exists(), f"{BIN / name} is not installed"


def _click_command(*path: str) -> Any:
    """The click command of ``tenantflow <path>`` (typer's groups have ``commands``)."""
    command: Any = typer.main.get_command(app)
    for name in path:
        assert hasattr(command, "commands"), f"{path}: not a group"
        command = command.commands[name]
    return command


def test_tenantflow_commands_and_options_exist(ci: dict[str, Any]) -> None:
    program = ".venv/bin/tenantflow"
    lines = [argv for s in _scripts(ci, "api-fuzz") for argv in _command_lines(s, program)]
    names = set()
    for argv in lines:
        name, *rest = argv[argv.index(program) + 1 :]
        command = _click_command(name)
        options = {opt for param in command.params for opt in param.opts}
        used = {arg for arg in rest if arg.startswith("--")}
        assert used <= options, f"tenantflow {name}: {used - options}"
        names.add(name)
    assert names == {"dev", "token"}


def _help(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _options(argv: list[str]) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for n, arg in enumerate(argv):
        if arg.startswith("--"):
            value = argv[n + 1] if n + 1 < len(argv) and not argv[n + 1].startswith("-") else None
            options[arg] = value
    return options


def test_schemathesis_run_uses_options_and_checks_it_has(ci: dict[str, Any]) -> None:
    runs = [
        argv
        for s in _scripts(ci, "api-fuzz")
        for argv in _command_lines(s, ".venv/bin/schemathesis")
    ]
    assert len(runs) == 1
    argv = runs[0]
    assert argv[1] == "run" and argv[2] == "http://127.0.0.1:8000/openapi.json"
    assert 'openapi_url="/openapi.json"' in (REPO_ROOT / "gateway" / "app.py").read_text("utf-8")
    options = _options(argv)
    assert options["--header"] == "Authorization: Bearer $TOKEN"
    text = _help(str(BIN / "schemathesis"), "run", "--help")
    for option in options:
        assert option in text, f"schemathesis run has no {option}"
    for check in (options["--checks"] or "").split(","):
        assert check in text, f"no schemathesis check {check}"
    for phase in (options["--phases"] or "").split(","):
        assert phase in text, f"no schemathesis phase {phase}"


def test_api_fuzz_follows_the_user_guide_before_fuzzing(ci: dict[str, Any]) -> None:
    names = [s.get("name", "") for s in _steps(ci, "api-fuzz")]
    guide = names.index("Follow docs/user-guide.md")
    assert guide < names.index("schemathesis run")
    run = _steps(ci, "api-fuzz")[guide]["run"]
    module, path = shlex.split(run)[2:4]
    assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert (REPO_ROOT / path).is_file()


def test_api_fuzz_starts_the_stack_and_waits_until_ready(ci: dict[str, Any]) -> None:
    scripts = "\n".join(_scripts(ci, "api-fuzz"))
    assert ".venv/bin/tenantflow dev" in scripts
    assert "http://127.0.0.1:8000/health/ready" in scripts
    assert "kill -TERM" in scripts, "the stack is stopped"
    stop = [s for s in _steps(ci, "api-fuzz") if "kill -TERM" in s.get("run", "")]
    assert stop[0]["if"] == "always()"


@pytest.mark.parametrize("job", ["audit", "image"])
def test_pip_audit_uses_options_it_has(ci: dict[str, Any], job: str) -> None:
    runs = [argv for s in _scripts(ci, job) for argv in _command_lines(s, "pip-audit")]
    runs += [argv for s in _scripts(ci, job) for argv in _command_lines(s, "pip-audit==2.10.1")]
    assert runs, f"job {job} runs no pip-audit"
    text = _help(str(BIN / "pip-audit"), "--help")
    for argv in runs:
        for option in _options(argv):
            assert option in text, f"pip-audit has no {option}"


# ---------------------------------------------------------------------------------------------
# release.yml
# ---------------------------------------------------------------------------------------------


def test_release_runs_on_version_tags_only(release: dict[str, Any]) -> None:
    assert release["on"] == {"push": {"tags": ["v*.*.*"]}}


def test_release_pushes_to_ghcr_with_the_tag(release: dict[str, Any]) -> None:
    assert list(release["jobs"]) == ["image"]
    steps = _steps(release, "image")
    meta = _uses(release, "image", "docker/metadata-action")[0]
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}"
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    login = _uses(release, "image", "docker/login-action")[0]
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    builds = _uses(release, "image", "docker/build-push-action")
    pushed = [b for b in builds if b["with"].get("push") is True]
    assert len(pushed) == 1
    assert pushed[0]["with"]["tags"] == "${{ steps.meta.outputs.tags }}"
    # Smoke test first, then log in and push.
    order = [steps.index(s) for s in (builds[0], login, pushed[0])]
    smoke = next(n for n, s in enumerate(steps) if "--entrypoint id" in s.get("run", ""))
    assert order[0] < smoke < order[1] < order[2]


@pytest.mark.parametrize(("offset", "code"), [("", 0), (".1", 1)])
def test_release_refuses_a_tag_that_is_not_the_package_version(
    release: dict[str, Any], offset: str, code: int
) -> None:
    script = next(s for s in _scripts(release) if "GITHUB_REF_NAME" in s)
    version = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    env = {
        **os.environ,
        "GITHUB_REF_NAME": f"v{version}{offset}",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == code, result.stdout + result.stderr
