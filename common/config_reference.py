"""The configuration reference, generated from ``common.settings.Settings``.

Every setting's variable name, type, default and description come from the model; they are
written into ``docs/configuration.md`` between one pair of markers per section::

    <!-- generated: settings.catalog -->
    | variable | type | default | meaning |
    ...
    <!-- end generated: settings.catalog -->

The prose around the markers is written by hand and kept as it is. ``python -m
common.config_reference`` rewrites the tables; ``--check`` only says whether they are current
(tests/common/test_config_reference.py runs it).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
import types
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, IPvAnyNetwork, SecretStr
from pydantic.fields import FieldInfo

from common.settings import Settings

ENV_PREFIX = "TENANTFLOW_"
DELIMITER = "__"
GENERAL = "general"
DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
COMMAND = "python -m common.config_reference"
_BLOCK = re.compile(
    r"(?P<open><!-- generated: settings\.(?P<group>[a-z_]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- end generated: settings\.(?P=group) -->)",
    re.DOTALL,
)


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the reference shows it."""

    group: str
    variable: str
    type: str
    default: str
    description: str


class ReferenceError(Exception):
    """The document's markers do not match the model's sections."""


def describe_settings(model: type[BaseModel] = Settings) -> dict[str, list[SettingDoc]]:
    """Every setting of ``model`` by section (top-level fields under ``general``), in order."""
    groups: dict[str, list[SettingDoc]] = {}
    for name, field in model.model_fields.items():
        section = _section(field)
        if section is None:
            groups.setdefault(GENERAL, []).append(
                _describe(GENERAL, f"{ENV_PREFIX}{name.upper()}", field)
            )
            continue
        prefix = f"{ENV_PREFIX}{name.upper()}{DELIMITER}"
        groups[name] = [
            _describe(name, f"{prefix}{inner.upper()}", inner_field)
            for inner, inner_field in section.model_fields.items()
        ]
    return groups


def _section(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _describe(group: str, variable: str, field: FieldInfo) -> SettingDoc:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    type_text = str(extra.get("doc_type") or _type_text(field))
    default = extra.get("doc_default")
    return SettingDoc(
        group=group,
        variable=variable,
        type=type_text,
        default=str(default) if default is not None else _default_text(field),
        description=" ".join((field.description or "").split()),
    )


# --- types ---------------------------------------------------------------------------------------


def _type_text(field: FieldInfo) -> str:
    annotation, optional = _strip_none(field.annotation)
    text = _name_of(annotation)
    limits = _limits(field.metadata, is_list=get_origin(annotation) is list)
    if limits:
        text += f", {limits}"
    if _is_secret(annotation):
        text += ", secret"
    if optional:
        text += ", optional"
    return text


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            # Every optional setting has one other type; a wider union is shown as it is.
            return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _name_of(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{v}`" for v in get_args(annotation))
    if origin is list:
        (inner,) = get_args(annotation)
        return f"JSON list of {_plural(inner)}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"JSON map of {_name_of(key)} → {_name_of(value)}"
    if annotation is IPvAnyNetwork:
        return "CIDR network"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if annotation is SecretStr:
        return "str"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _plural(inner: Any) -> str:
    if inner is IPvAnyNetwork:
        return "CIDR networks"
    if get_origin(inner) is list:
        (element,) = get_args(inner)
        return f"JSON lists of {_plural(element)}"
    name = _name_of(inner)
    return {"str": "str", "float": "floats", "int": "ints"}.get(name, name)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return get_origin(annotation) is dict and get_args(annotation)[1] is SecretStr


def _limits(metadata: list[Any], *, is_list: bool) -> str:
    low: tuple[str, Any] | None = None
    high: tuple[str, Any] | None = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = ("ge", item.ge)
        elif isinstance(item, annotated_types.Gt):
            low = ("gt", item.gt)
        elif isinstance(item, annotated_types.Le):
            high = ("le", item.le)
        elif isinstance(item, annotated_types.Lt):
            high = ("lt", item.lt)
        elif isinstance(item, annotated_types.MinLen) and is_list:
            low = ("ge", item.min_length)
        elif isinstance(item, annotated_types.MaxLen) and is_list:
            high = ("le", item.max_length)
    if low is None and high is None:
        return ""
    unit = " items" if is_list else ""
    if low is not None and high is not None:
        if low[0] == "ge" and high[0] == "le":
            return f"{_number(low[1])}\u2013{_number(high[1])}{unit}"
        left = "≤" if low[0] == "ge" else "<"
        right = "≤" if high[0] == "le" else "<"
        return f"{_number(low[1])} {left} x {right} {_number(high[1])}"
    if low is not None:
        return f"{'≥' if low[0] == 'ge' else '>'} {_number(low[1])}{unit}"
    assert high is not None
    return f"{'≤' if high[0] == 'le' else '<'} {_number(high[1])}{unit}"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- defaults ------------------------------------------------------------------------------------


def _default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    return f"`{_plain(value)}`"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | dict):
        return json.dumps(_jsonable(value))
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network | Path | SecretStr):
        return _plain(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- the document --------------------------------------------------------------------------------


def render_table(rows: list[SettingDoc]) -> str:
    """One section's Markdown table."""
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for row in rows:
        cells = (f"`{row.variable}`", row.type, row.default, row.description)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    # A pipe ends a cell unless escaped; those already escaped (Literal types) stay as they are.
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def update_document(text: str, model: type[BaseModel] = Settings) -> str:
    """``text`` with every section's table regenerated; ``ReferenceError`` when a section has
    no block or a block names no section."""
    groups = describe_settings(model)
    found = [m["group"] for m in _BLOCK.finditer(text)]
    missing = [g for g in groups if g not in found]
    unknown = [g for g in found if g not in groups]
    repeated = sorted({g for g in found if found.count(g) > 1})
    if missing or unknown or repeated:
        raise ReferenceError(
            "docs/configuration.md's generated blocks do not match the settings model: "
            + "; ".join(
                part
                for part in (
                    f"no block for {', '.join(missing)} (add '<!-- generated: settings.NAME -->' "
                    "and '<!-- end generated: settings.NAME -->' where its table goes)"
                    if missing
                    else "",
                    f"blocks for unknown sections {', '.join(unknown)}" if unknown else "",
                    f"repeated blocks {', '.join(repeated)}" if repeated else "",
                )
                if part
            )
        )
    return _BLOCK.sub(
        lambda m: m["open"] + render_table(groups[m["group"]]) + m["close"],
        text,
    )


def main(argv: list[str] | None = None) -> int:
    """Rewrite the reference (or, with ``--check``, exit 1 when it is stale)."""
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write the settings tables of docs/configuration.md."
    )
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    parser.add_argument("--path", type=Path, default=DOCUMENT, help="the configuration page")
    args = parser.parse_args(argv)
    current = args.path.read_text(encoding="utf-8")
    try:
        wanted = update_document(current)
    except ReferenceError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if current == wanted:
        return 0
    if args.check:
        sys.stderr.write(f"{args.path} is out of date with common/settings.py: run {COMMAND}\n")
        return 1
    args.path.write_text(wanted, encoding="utf-8")
    sys.stderr.write(f"wrote {args.path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
