"""``.env.example`` and ``docs/configuration.md`` document every setting, and the example parses."""

from __future__ import annotations

from pathlib import Path

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
