"""The configuration reference in docs/configuration.md is generated from the settings model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field, SecretStr

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
