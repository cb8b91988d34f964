"""The configuration reference in docs/configuration.md is generated from the settings model."""

from __future__ import annotations

import subprocess
import sys
from enum import Enum
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr

from common.config_reference import (
    COMMAND,
    DOCUMENT,
    ReferenceError,
    describe_settings,
    main,
    render_table,
    update_document,
)
from common.settings import DEV_ENCRYPTION_KEY


def test_the_reference_matches_the_settings_model() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert update_document(text) == text, (
        f"docs/configuration.md and common/settings.py drifted apart: run `{COMMAND}`"
    )


def test_every_setting_has_a_real_description() -> None:
    groups = describe_settings()
    assert len(groups) >= 17  # general + every section, network included
    short = [
        doc.variable
        for docs in groups.values()
        for doc in docs
        if len(doc.description) < 20 or not doc.description.rstrip(")").endswith(".")
    ]
    assert short == []


def test_variable_names_use_the_prefix_and_the_delimiter() -> None:
    groups = describe_settings()
    assert [d.variable for d in groups["general"]] == ["TENANTFLOW_PROFILE"]
    network = {d.variable: d for d in groups["network"]}
    allowed = network["TENANTFLOW_NETWORK__ALLOWED_NETWORKS"]
    assert allowed.type == "JSON list of CIDR networks, \u2264 1000 items"
    assert allowed.default == '`["0.0.0.0/0", "::/0"]`'
    assert "169.254.0.0/16" in network["TENANTFLOW_NETWORK__DENIED_NETWORKS"].default


def test_secret_defaults_are_not_printed() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert DEV_ENCRYPTION_KEY not in text
    keys = {d.variable: d for d in describe_settings()["crypto"]}["TENANTFLOW_CRYPTO__KEYS"]
    assert keys.type == "JSON map of key id → secret"


class _Inner(BaseModel):
    mode: Literal["a", "b"] = Field(default="a", description="Pick one.")
    token: SecretStr | None = Field(default=None, description="A secret.")
    delays: list[float] = Field(
        default_factory=lambda: [1.0, 2.5], min_length=1, max_length=3, description="Delays."
    )
    ratio: float = Field(default=0.5, gt=0, le=1, description="A share | with a pipe.")
    count: int = Field(default=3, ge=1, description="At least one.")


class _Model(BaseModel):
    level: int = Field(default=1, ge=0, le=9, description="Top level.")
    inner: _Inner = Field(default_factory=_Inner)


def test_types_ranges_and_defaults_are_rendered() -> None:
    groups = describe_settings(_Model)
    assert [d.variable for d in groups["general"]] == ["TENANTFLOW_LEVEL"]
    assert groups["general"][0].type == "int, 0\u20139"
    inner = {d.variable.rsplit("__", 1)[1]: d for d in groups["inner"]}
    assert inner["MODE"].type == "`a` \\| `b`"
    assert inner["MODE"].default == "`a`"
    assert inner["TOKEN"].type == "str, secret, optional"
    assert inner["TOKEN"].default == "unset"
    assert inner["DELAYS"].type == "JSON list of floats, 1\u20133 items"
    assert inner["DELAYS"].default == "`[1, 2.5]`"
    assert inner["RATIO"].type == "float, 0 < x \u2264 1"
    assert inner["COUNT"].type == "int, \u2265 1"
    table = render_table(groups["inner"])
    assert "A share \\| with a pipe." in table
    assert "`a` \\| `b`" in table  # escaped once, not twice
    assert table.startswith("| variable | type | default | meaning |\n|---|---|---|---|\n")


def test_a_section_without_a_block_is_named() -> None:
    text = "<!-- generated: settings.general -->\n<!-- end generated: settings.general -->\n"
    with pytest.raises(ReferenceError, match="no block for inner"):
        update_document(text, _Model)


def test_a_block_of_an_unknown_section_is_refused() -> None:
    text = (
        "<!-- generated: settings.general -->\n<!-- end generated: settings.general -->\n"
        "<!-- generated: settings.inner -->\n<!-- end generated: settings.inner -->\n"
        "<!-- generated: settings.gone -->\n<!-- end generated: settings.gone -->\n"
    )
    with pytest.raises(ReferenceError, match="unknown sections gone"):
        update_document(text, _Model)


def test_check_fails_on_a_stale_page_and_the_generator_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "configuration.md"
    current = DOCUMENT.read_text(encoding="utf-8")
    stale = current.replace("| `TENANTFLOW_PROFILE` |", "| `TENANTFLOW_PROFILE_OLD` |")
    assert stale != current
    page.write_text("# Hand-written title\n\n" + stale, encoding="utf-8")

    assert main(["--check", "--path", str(page)]) == 1
    assert COMMAND in capsys.readouterr().err

    assert main(["--path", str(page)]) == 0
    fixed = page.read_text(encoding="utf-8")
    assert fixed == "# Hand-written title\n\n" + current  # the prose is kept
    assert main(["--check", "--path", str(page)]) == 0


class _Color(Enum):
    RED = "red"
    BLUE = "blue"


class _Odd(BaseModel):
    color: _Color = Field(default=_Color.RED, description="An enum.")
    weights: dict[str, int] = Field(
        default_factory=lambda: {"a": 1}, description="A map of plain values."
    )
    either: int | str | None = Field(default=None, description="A wider union.")
    grid: list[list[int]] = Field(default_factory=lambda: [[1, 2]], description="Nested lists.")
    below: float = Field(default=0.25, lt=1, description="Strictly below one.")
    window: float = Field(default=2.0, gt=1, lt=5, description="Open on both sides.")
    whole: float = Field(default=3.0, le=10.0, description="At most ten.")
    colors: list[_Color] = Field(default_factory=lambda: [_Color.BLUE], description="Enums.")
    paths: dict[str, Path] = Field(
        default_factory=lambda: {"logs": Path("/var/log")}, description="Paths by name."
    )
    sizes: dict[str, float] = Field(default_factory=lambda: {"s": 1.0}, description="Floats.")
    mixed: int | str = Field(default=1, description="Either, never unset.")
    network: IPvAnyNetwork = Field(default=IPv4Network("10.0.0.0/8"), description="One network.")


class _OddModel(BaseModel):
    odd: _Odd = Field(default_factory=_Odd)


def test_enums_maps_unions_and_nested_lists_are_rendered() -> None:
    odd = {d.variable.rsplit("__", 1)[1]: d for d in describe_settings(_OddModel)["odd"]}
    assert odd["COLOR"].type == "`red` \\| `blue`"
    assert odd["COLOR"].default == "`red`"
    assert odd["WEIGHTS"].type == "JSON map of str → int"
    assert odd["WEIGHTS"].default == '`{"a": 1}`'
    # A union of more than one type besides None is shown as it is, and optional.
    assert odd["EITHER"].type.endswith(", optional")
    assert "int" in odd["EITHER"].type and "str" in odd["EITHER"].type
    assert odd["GRID"].type == "JSON list of JSON lists of ints"  # not "JSON list of intss"
    assert odd["BELOW"].type == "float, < 1"
    assert odd["WINDOW"].type == "float, 1 < x < 5"
    assert odd["WHOLE"].type == "float, \u2264 10"
    assert odd["COLORS"].default == '`["blue"]`'
    assert odd["PATHS"].type == "JSON map of str → path"
    assert odd["PATHS"].default == '`{"logs": "/var/log"}`'
    assert odd["SIZES"].default == '`{"s": 1}`'
    assert odd["MIXED"].type == "int | str"  # as it is, and not optional
    assert odd["NETWORK"].type == "CIDR network"
    assert odd["NETWORK"].default == "`10.0.0.0/8`"


def test_a_mismatched_page_exits_2_naming_the_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "configuration.md"
    text = DOCUMENT.read_text(encoding="utf-8")
    repeated = text + (
        "\n<!-- generated: settings.catalog -->\n<!-- end generated: settings.catalog -->\n"
    )
    page.write_text(repeated, encoding="utf-8")
    assert main(["--path", str(page)]) == 2
    assert "repeated blocks catalog" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == repeated  # not rewritten


def test_the_module_runs_as_the_documented_command(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "common.config_reference", "--check"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    stale = tmp_path / "configuration.md"
    stale.write_text(
        DOCUMENT.read_text(encoding="utf-8").replace("| `TENANTFLOW_PROFILE` |", "| `X` |"),
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "common.config_reference", "--check", "--path", str(stale)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (f"{stale} is out of date with common/settings.py: run {COMMAND}\n")
