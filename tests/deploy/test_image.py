"""The app image, built by `just build` with no network, runs as a non-root user, reports its
health through `chitram-admin health`, and serves uploads."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.images.test_api import png_bytes
from tests.support.docker import DockerEngine
from tests.support.server import free_port

# Debian's own python3 in the base; on python:3.11-slim the image is smaller.
MAX_IMAGE_BYTES = 600 * 1000**2


@pytest.fixture
def container(docker_engine: DockerEngine, app_image: str) -> Iterator[tuple[str, str]]:
    name = f"chitram-image-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    docker_engine.run(
        "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000",
        app_image,
    )  # fmt: skip
    yield name, f"http://127.0.0.1:{port}"
    docker_engine.run("rm", "--force", name, check=False)


def health_status(engine: DockerEngine, name: str) -> str:
    return engine.run("inspect", "--format", "{{.State.Health.Status}}", name).strip()


def wait_until_healthy(engine: DockerEngine, name: str, seconds: float = 90) -> float:
    started = time.monotonic()
    while (status := health_status(engine, name)) != "healthy":
        assert status in ("starting", "healthy"), engine.run("logs", name, check=False)
        assert time.monotonic() - started < seconds, f"not healthy after {seconds:g} s: {status}"
        time.sleep(1)
    return time.monotonic() - started


def test_the_image_is_small_runs_as_a_user_and_declares_its_health_check(
    docker_engine: DockerEngine, app_image: str
) -> None:
    details = json.loads(docker_engine.run("image", "inspect", app_image))[0]
    config = details["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "chitram-admin", "health"]
    assert config["Cmd"] == ["chitram"]
    assert details["Size"] < MAX_IMAGE_BYTES, details["Size"]
    print(f"\nimage {app_image}: {details['Size'] / 1000**2:.0f} MB")
    assert docker_engine.run("run", "--rm", app_image, "id", "-u").strip() == "10001"


def test_the_container_turns_healthy_and_serves_an_upload(
    docker_engine: DockerEngine, container: tuple[str, str]
) -> None:
    name, url = container
    print(f"\nhealthy after {wait_until_healthy(docker_engine, name):.1f} s")
    data = png_bytes((80, 60))
    with httpx.Client(base_url=url, timeout=30) as client:
        created = client.post(
            "/api/v1/images", files={"file": ("a.png", data, "image/png")}, data={"visibility": "public"}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        fetched = client.get(httpx.URL(body["url"]).path)
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == body["sha256"]
        gone = client.delete(f"/api/v1/images/{body['id']}", headers={"X-Delete-Token": body["delete_token"]})
        assert gone.status_code == 204
    direct = docker_engine.run("exec", name, "chitram-admin", "health", "--direct")
    assert direct.strip() == "ready"
