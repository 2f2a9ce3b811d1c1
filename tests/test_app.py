"""The app's lifespan: what it opens at start it closes at shutdown, on both stacks."""

from __future__ import annotations

import logging

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient


async def test_shutdown_closes_every_connection_without_errors(app: Litestar, caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncTestClient(app) as client:
        assert (await client.get("/api/v1/images")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []
    database = app.state.database
    assert database.engine.pool.checkedout() == 0
