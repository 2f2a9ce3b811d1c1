"""schemathesis, with every check, over the served OpenAPI document against a live `chitram` on
each stack, with an API token: any non-conformance or server error fails the test.

Bounded (tests/openapi/schemathesis.toml) to about half a minute per stack; `just fuzz-api`
runs the same with many more examples.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chitram.app import create_app
from chitram.settings import Settings
from tests.conftest import settings_env
from tests.support.server import BIN, NO_UPLOAD_LIMITS, RunningServer, start_server, stop

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
EXAMPLES = os.environ.get("CHITRAM_SCHEMATHESIS_EXAMPLES", "")

pytestmark = pytest.mark.timeout(240)


def make_token(settings: Settings) -> str:
    """An account and a token, made through the services against the server's own database."""

    async def make() -> str:
        app = create_app(settings)
        async with app.lifespan(), app.state.database.sessions() as db:
            accounts = app.state.account_service_factory(db)
            user = await accounts.register("schemathesis@example.com", "correct horse battery staple")
            return str((await accounts.create_token(user.id, "schemathesis")).secret)

    return asyncio.run(make())


@pytest.fixture
def live(settings: Settings, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server({**settings_env(settings), **NO_UPLOAD_LIMITS}, cwd=tmp_path)
    yield server
    stop(server)


def test_schemathesis_finds_no_non_conformance(settings: Settings, live: RunningServer, tmp_path: Path) -> None:
    token = make_token(settings)
    command = [
        str(BIN / "st"), "--config-file", str(HERE / "schemathesis.toml"), "--no-color",
        "run", f"{live.url}/schema/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {token}",
        "--seed", "20261204",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    if EXAMPLES:
        command += ["--max-examples", EXAMPLES]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.openapi.hooks", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600 if EXAMPLES else 220)
    summary = done.stdout[-6000:]
    assert done.returncode == 0, f"schemathesis found problems:\n{summary}\n{done.stderr[-2000:]}"
    assert "Tested: 14" in done.stdout, summary  # every operation was exercised
