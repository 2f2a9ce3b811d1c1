"""Every setting an operator can set is described where operators look: .env.example and
docs/configuration.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import pytest
from pydantic_settings import BaseSettings

from chitram.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]


def variables() -> list[str]:
    names = []
    for section in dataclasses.fields(Settings):
        kind = cast("type[BaseSettings]", section.default_factory)  # each section's class
        names += [ENV_PREFIX + name.upper() for name in kind.model_fields]
    return names


@pytest.mark.parametrize("document", [".env.example", "docs/configuration.md"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in variables() if name not in text]
    assert not missing, f"{document} does not describe {', '.join(missing)}"
    assert "CHITRAM_ALERT_WEBHOOK_URL" in variables()  # the sections really were walked
