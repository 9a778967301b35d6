"""docs/settings.md, generated from the service's `Settings` and training's `TrainingSettings`: one row a setting,
so the page cannot drift.

    .venv/bin/python docs/settings_table.py           # rewrite docs/settings.md
    .venv/bin/python docs/settings_table.py --check   # exit 1 if docs/settings.md differs

Fields whose `json_schema_extra` holds `{"internal": True}` (set by `sae-serve` for its own workers) are left out.
"""

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from service.core.settings import Settings
from training.settings import TrainingSettings

PAGE = Path(__file__).resolve().parent / "settings.md"
INTRO = """\
# Settings

[README](../README.md) · [HTTP API](api.md) · [protocols](protocols.md) · [deployment](deployment.md) ·
[operations](operations.md)

`sae-serve` and `sae-train` read their settings from environment variables (and from a `.env` file in the
folder they start in), each named `SAE_` and the setting's name; the service refuses to start when one does not
parse, saying which. Lists are comma-separated: `SAE_API_KEYS=key-one,key-two`.

<!-- Generated from service/core/settings.py and training/settings.py by `.venv/bin/python docs/settings_table.py`;
edit the descriptions there. A test fails when this page and the settings differ. -->

## sae-serve

"""
TRAINING = """
## sae-train

Its command-line flags (`.venv/bin/sae-train --help`) take their defaults from these.

"""


def is_internal(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("internal") is True


def shown_default(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, list | tuple):
        return f"`{','.join(map(str, default))}`" if default else "empty"
    if default is None or default == "":
        return "empty"
    return f"`{default}`"


def bounds(field: FieldInfo) -> str:
    """The field's numeric constraints in words, e.g. `at least 0, at most 65535`."""
    words = []
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            words.append(f"at least {constraint.ge}")
        elif isinstance(constraint, annotated_types.Gt):
            words.append(f"above {constraint.gt}")
        elif isinstance(constraint, annotated_types.Le):
            words.append(f"at most {constraint.le}")
        elif isinstance(constraint, annotated_types.Lt):
            words.append(f"below {constraint.lt}")
    return ", ".join(words)


def kind_of(field: FieldInfo) -> str:
    """What the variable holds, in a reader's words."""
    annotation: Any = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    if typing.get_origin(annotation) in (list, tuple):
        return "comma-separated list"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    names: dict[Any, str] = {bool: "`true` or `false`", int: "whole number", float: "number", str: "text", Path: "path"}
    kind = names.get(annotation) or str(getattr(annotation, "__name__", annotation))
    limits = bounds(field)
    return f"{kind}, {limits}" if limits else kind


def cell(text: str) -> str:
    """One line of a table cell: a `|` would end the cell, a `<` would open an HTML tag."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def render_table(settings: type[BaseSettings] = Settings) -> str:
    """The markdown table of every setting that is not internal, in the order the class declares them."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    lines = ["| variable | default | type | meaning |", "|---|---|---|---|"]
    for name, field in settings.model_fields.items():
        if is_internal(field):
            continue
        variable = f"`{prefix}{name.upper()}`"
        lines.append(
            f"| {variable} | {cell(shown_default(field))} | {cell(kind_of(field))} | {cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def render_page() -> str:
    return INTRO + render_table(Settings) + TRAINING + render_table(TrainingSettings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs, writing nothing")
    args = parser.parse_args()
    page = render_page()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != page:
            sys.exit(f"{PAGE} differs from the settings; run .venv/bin/python docs/settings_table.py")
        return
    PAGE.write_text(page)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
