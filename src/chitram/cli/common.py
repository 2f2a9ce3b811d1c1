"""What every `chitram-admin` command group shares: settings and how refusals are shown."""

from __future__ import annotations

from typing import IO, Any

import click
from pydantic import ValidationError

from chitram.settings import Settings


class CommandError(click.ClickException):
    """A refusal the operator can act on: printed as `error: <what to do>` on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def load_settings() -> Settings:
    """Settings from the environment, or a one-line refusal instead of a traceback."""
    try:
        return Settings.from_env()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from None
