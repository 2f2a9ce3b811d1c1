"""The deployment tests: a real Docker engine, a base image from debootstrap, the app image from
`just build` — nothing from a registry."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker import DockerEngine, ensure_base_image, start_engine
from tests.support.server import BIN
from tests.support.services import ServiceUnavailable, services_required

ROOT = Path(__file__).resolve().parents[2]


def _need(what: str, exc: ServiceUnavailable) -> None:
    if services_required():
        pytest.fail(f"{what} is required (CHITRAM_REQUIRE_SERVICES=1) but unavailable: {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> DockerEngine:
    try:
        return start_engine(tmp_path_factory.mktemp("docker"))
    except ServiceUnavailable as exc:
        _need("a Docker engine", exc)
        raise


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> str:
    try:
        return ensure_base_image(docker_engine)
    except ServiceUnavailable as exc:
        _need("a base image", exc)
        raise


@pytest.fixture(scope="session")
def app_image(docker_engine: DockerEngine, base_image: str) -> Iterator[str]:
    """`just build` on the debootstrap base: wheel, wheelhouse, and an image built with no network."""
    tag = f"chitram-test/app:{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [str(BIN / "just"), "build", tag, base_image], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, f"just build failed:\n{done.stdout}\n{done.stderr}"
    yield tag
    docker_engine.run("image", "rm", "--force", tag, check=False)
