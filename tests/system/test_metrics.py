"""GET /metrics: who may read it, what it counts (by route template), and counting across
granian's worker processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from chitram.app import create_app
from chitram.errors import exception_handlers
from chitram.metrics import forget_dead_workers
from chitram.settings import MetricsSettings, Settings
from chitram.system.metrics import metrics_handlers
from tests.conftest import settings_env
from tests.images.test_api import Client, png_bytes, upload
from tests.support.faults import FaultProxy
from tests.support.server import BIN, RunningServer, clean_env, start_server, stop

TOKEN = "metrics-token-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def with_token(settings: Settings, token: str = TOKEN) -> Settings:
    return dataclasses.replace(settings, metrics=MetricsSettings(metrics_token=token))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(with_token(settings)), base_url="http://testserver.local") as test_client:
        yield test_client


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


# -- who may read it -----------------------------------------------------------------------


async def test_metrics_do_not_exist_without_a_token(embedded_settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(embedded_settings)) as client:
        response = await client.get("/metrics", headers=BEARER)
    assert response.status_code == 404
    assert "chitram_http_requests_total" not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-of-enough-length"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "prefix", "other-scheme", "empty"],
)
async def test_metrics_refuse_anyone_without_the_token(embedded_settings: Settings, headers: dict[str, str]) -> None:
    async with AsyncTestClient(app=create_app(with_token(embedded_settings))) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "CHITRAM_METRICS_TOKEN" in response.json()["detail"]
    assert "chitram_http_requests_total" not in response.text


def test_a_short_token_is_refused_when_settings_load() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        MetricsSettings(metrics_token="short-token")
    with pytest.raises(ValidationError, match="surrounding spaces"):
        MetricsSettings(metrics_token=f" {TOKEN}")
    assert MetricsSettings(metrics_token="x" * 16).metrics_token == "x" * 16


def test_chitram_refuses_to_start_with_a_short_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "chitram"), "--port", "1"],
        env=clean_env(CHITRAM_DATA_DIR=str(tmp_path), CHITRAM_METRICS_TOKEN="tooshort"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CHITRAM_METRICS_TOKEN must be at least 16 characters" in result.stderr


# -- what it counts ------------------------------------------------------------------------


async def test_requests_are_counted_by_route_template_never_by_path(client: Client) -> None:
    before = await scrape(client)
    ids = []
    for shade in range(3):
        created = await upload(client, png_bytes(color=(shade, 40, 40)))
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    for image_id in ids:
        assert (await client.get(f"/api/v1/images/{image_id}")).status_code == 200
    assert (await client.get("/api/v1/images/doesnotexist")).status_code == 404
    assert (await client.get("/no/such/page/at/all")).status_code == 404
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/api/v1/images/{image_id}"  # Litestar's template: parameter names without their types
    assert delta("chitram_http_requests_total", method="GET", route=route, status="200") == 3, sorted(
        str(labels) for name, labels in after if name == "chitram_http_requests_total"
    )
    assert delta("chitram_http_requests_total", method="GET", route=route, status="404") == 1
    assert delta("chitram_http_requests_total", method="POST", route="/api/v1/images", status="201") == 3
    assert delta("chitram_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("chitram_http_request_duration_seconds_count", method="GET", route=route) == 4
    # No series names an image or a raw path: the label set stays bounded.
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(image_id in str(label) for image_id in ids for label in routes)
    assert "/no/such/page/at/all" not in routes

    assert delta("chitram_image_processing_seconds_count", format="png") == 3
    # Three first reads (misses) and no second reads yet.
    assert delta("chitram_image_cache_total", result="miss") >= 3
    for image_id in ids:
        assert (await client.get(f"/api/v1/images/{image_id}")).status_code == 200
    again = await scrape(client)
    assert (
        value(again, "chitram_image_cache_total", result="hit")
        - value(after, "chitram_image_cache_total", result="hit")
        == 3
    )

    assert delta("chitram_dependency_seconds_count", dependency="storage", operation="put") >= 3
    assert delta("chitram_dependency_seconds_count", dependency="database", operation="insert") >= 3
    assert delta("chitram_dependency_seconds_count", dependency="database", operation="select") >= 4
    assert delta("chitram_dependency_seconds_count", dependency="cache", operation="get") >= 4


async def test_storage_reads_are_timed_and_a_missing_object_is_no_error(client: Client) -> None:
    created = (await upload(client, png_bytes(color=(9, 9, 9)))).json()
    before = await scrape(client)
    assert (await client.get(f"/i/{created['id']}.png")).status_code == 200
    after = await scrape(client)
    read = {"dependency": "storage", "operation": "read"}
    assert (
        value(after, "chitram_dependency_seconds_count", **read)
        - value(before, "chitram_dependency_seconds_count", **read)
        == 1
    )
    assert value(after, "chitram_dependency_errors_total", **read) == value(
        before, "chitram_dependency_errors_total", **read
    )


async def test_storage_failures_are_counted(proxied_settings: Settings, s3_proxy: FaultProxy) -> None:
    async with AsyncTestClient(app=create_app(with_token(proxied_settings))) as client:
        assert (await client.get("/health/ready")).status_code == 200
        before = await scrape(client)
        s3_proxy.refuse()
        try:
            assert (await client.get("/health/ready")).status_code == 503
            refused = await upload(client, png_bytes(color=(1, 2, 3)))
            assert refused.status_code == 503
        finally:
            s3_proxy.heal()
        after = await scrape(client)

    def errors(**labels: str) -> float:
        name = "chitram_dependency_errors_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert errors(dependency="storage", operation="ping") == 1
    assert errors(dependency="storage", operation="put") >= 1


async def test_database_failures_are_counted(embedded_settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(with_token(embedded_settings))) as client:
        before = await scrape(client)
        database = embedded_settings.data_dir / "chitram.db"
        database.unlink()
        database.mkdir()  # SQLite cannot open it any more
        await client.app.state.database.engine.dispose()
        assert (await client.get("/api/v1/images/abcdefghijkl")).status_code == 503
        after = await scrape(client)
    name = "chitram_dependency_errors_total"
    labels = {"dependency": "database", "operation": "connect"}
    assert value(after, name, **labels) - value(before, name, **labels) >= 1


@pytest.fixture
def refreshed_gauge() -> Iterator[Gauge]:
    gauge = Gauge("chitram_test_refreshed", "Set by a refresher in a test.", multiprocess_mode="mostrecent")
    yield gauge
    from prometheus_client import REGISTRY

    REGISTRY.unregister(gauge)


async def test_gauges_are_refreshed_before_each_scrape_and_a_failing_refresher_is_survived(
    refreshed_gauge: Gauge,
) -> None:
    calls: list[str] = []

    async def count_images() -> None:
        calls.append("images")
        refreshed_gauge.set(len(calls))

    async def broken() -> None:
        raise RuntimeError("the database is away")

    app = Litestar(
        route_handlers=metrics_handlers(token=TOKEN, refresh_gauges=[broken, count_images]),
        exception_handlers=exception_handlers,
    )
    async with AsyncTestClient(app=app) as client:
        first = await scrape(client)
        second = await scrape(client)
    assert value(first, "chitram_test_refreshed") == 1
    assert value(second, "chitram_test_refreshed") == 2


def test_dead_workers_live_gauges_are_forgotten(tmp_path: Path) -> None:
    dead = tmp_path / "gauge_livesum_999999999.db"
    alive = tmp_path / f"gauge_livesum_{os.getpid()}.db"
    counter = tmp_path / "counter_999999999.db"
    for path in (dead, alive, counter):
        path.write_bytes(b"")
    forget_dead_workers(tmp_path)
    assert not dead.exists()
    assert alive.exists()
    assert counter.exists()  # what a dead worker counted did happen


# -- across worker processes ---------------------------------------------------------------


@pytest.fixture
def two_workers(production_settings: Settings, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = settings_env(production_settings) | {"CHITRAM_METRICS_TOKEN": TOKEN, "TMPDIR": str(temp)}
    server = start_server(env, tmp_path, workers=2)
    try:
        yield server, temp
    finally:
        stop(server)


def test_counts_add_up_across_two_workers(two_workers: tuple[RunningServer, Path]) -> None:
    server, temp = two_workers
    route = {"method": "GET", "route": "/health/live", "status": "200"}
    before = parse(httpx.get(server.url + "/metrics", headers=BEARER, timeout=10).text)
    requests = 60
    for _ in range(requests):
        # A new connection each time, so granian's workers share them.
        assert httpx.get(server.url + "/health/live", timeout=10).status_code == 200
    assert httpx.get(server.url + "/health/ready", timeout=10).status_code == 200  # database, storage, cache
    after = parse(httpx.get(server.url + "/metrics", headers=BEARER, timeout=10).text)
    assert (
        value(after, "chitram_http_requests_total", **route) - value(before, "chitram_http_requests_total", **route)
        == requests
    )

    # Both workers counted some of them, each in its own file (so the sum above is across both).
    (metrics_dir,) = temp.glob("chitram-metrics-*")
    writers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(writers) == 2, writers
    for dependency, operation in (("database", "select"), ("storage", "ping")):
        assert value(after, "chitram_dependency_seconds_count", dependency=dependency, operation=operation) > 0

    stop(server)
    assert not metrics_dir.exists(), "the metrics directory outlived the server"
