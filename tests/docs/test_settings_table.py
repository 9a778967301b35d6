"""docs/settings.md is the tables generated from the service's and training's settings, so they cannot drift."""

from types import ModuleType

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.settings import Settings
from tests.docs.scripts import DOCS, load_script
from training.settings import TrainingSettings


def generator() -> ModuleType:
    return load_script(DOCS / "settings_table.py")


def test_the_settings_page_is_the_generated_one() -> None:
    page = (DOCS / "settings.md").read_text()
    assert page == generator().render_page(), (
        "docs/settings.md differs from the settings; regenerate it: .venv/bin/python docs/settings_table.py"
    )


@pytest.mark.parametrize("settings", [Settings, TrainingSettings])
def test_every_setting_but_the_internal_ones_has_a_row(settings: type[BaseSettings]) -> None:
    table = generator().render_table(settings)
    for name, field in settings.model_fields.items():
        extra = field.json_schema_extra
        internal = isinstance(extra, dict) and extra.get("internal") is True
        assert (f"| `SAE_{name.upper()}` |" in table) is not internal, name


def test_a_row_names_the_variable_default_kind_and_meaning_and_leaves_internal_fields_out() -> None:
    class Example(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="EX_")

        port: int = Field(8000, ge=0, le=65535, description="TCP port | or none")
        keys: list[str] = Field([], description="the <keys>")
        supervisor_pid: int | None = Field(None, description="set for workers", json_schema_extra={"internal": True})

    assert generator().render_table(Example).splitlines() == [
        "| variable | default | type | meaning |",
        "|---|---|---|---|",
        "| `EX_PORT` | `8000` | whole number, at least 0, at most 65535 | TCP port \\| or none |",
        "| `EX_KEYS` | empty | comma-separated list | the &lt;keys> |",
    ]
