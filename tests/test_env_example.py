"""``.env.example`` and ``docs/configuration.md`` document every setting, and the example parses."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


ALL_NAMES = _env_names(Settings, "TENANTFLOW_")


def test_every_setting_is_in_env_example() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = [name for name in ALL_NAMES if f"{name}=" not in text]
    assert missing == []


def test_every_setting_is_in_the_configuration_reference() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in ALL_NAMES if f"`{name}`" not in text]
    assert missing == []


def test_env_example_loads_as_settings() -> None:
    settings = Settings(_env_file=ROOT / ".env.example")
    assert settings.gateway.port == 8000
    assert settings.temporal.task_queue == "tenantflow"


# The command line's own variables: read from the environment only, not settings.
CLI_VARIABLES = {"TENANTFLOW_API_URL", "TENANTFLOW_TOKEN", "TENANTFLOW_HOME"}


def test_env_example_names_only_settings() -> None:
    text = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#? ?(TENANTFLOW_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    unknown = sorted(named - set(ALL_NAMES) - CLI_VARIABLES)
    assert unknown == []


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TENANTFLOW_"):
            monkeypatch.delenv(name)
    example = Settings(_env_file=ROOT / ".env.example")
    assert example.model_dump(mode="json") == Settings(_env_file=None).model_dump(mode="json")
