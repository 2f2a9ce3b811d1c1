"""The deployment tests: a real Docker engine, a base image from debootstrap, the app image from
`just build` — nothing from a registry."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docker import DockerEngine, ensure_base_image, start_engine
from tests.support.server import BIN
from tests.support.services import ServiceUnavailable, services_required

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).parent / "standins"
STANDIN_IMAGES = {
    "CADDY_IMAGE": "caddy",
    "POSTGRES_IMAGE": "postgres",
    "REDIS_IMAGE": "redis",
    "GARAGE_IMAGE": "garage",
    # The MinIO-era stack (tests/deploy/minio_era/) of the migration test.
    "MINIO_IMAGE": "s3",
    "MINIO_CLIENT_IMAGE": "s3",
}


def need(what: str, exc: ServiceUnavailable) -> None:
    if services_required():
        pytest.fail(f"{what} is required (CHITRAM_REQUIRE_SERVICES=1) but unavailable: {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> DockerEngine:
    try:
        return start_engine(tmp_path_factory.mktemp("docker"))
    except ServiceUnavailable as exc:
        need("a Docker engine", exc)
        raise


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> str:
    try:
        return ensure_base_image(docker_engine)
    except ServiceUnavailable as exc:
        need("a base image", exc)
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


@pytest.fixture(scope="session")
def standin_images(
    docker_engine: DockerEngine, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The service images, built from Debian packages and PyPI wheels on the base image."""
    context = tmp_path_factory.mktemp("standins")
    shutil.copytree(STANDINS, context, dirs_exist_ok=True)
    _download_s3_wheels(context / "s3-wheelhouse")
    tags = {}
    for name in sorted(set(STANDIN_IMAGES.values())):
        tag = f"chitram-standin/{name}:test"
        docker_engine.run(
            "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}",
            "--file", str(context / f"{name}.Dockerfile"), "--tag", tag, str(context),
            timeout=1200,
        )  # fmt: skip
        tags[name] = tag
    return {variable: tags[name] for variable, name in STANDIN_IMAGES.items()}


def _download_s3_wheels(folder: Path) -> None:
    import moto

    done = subprocess.run(
        [
            str(BIN / "python"), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            f"moto[server]=={moto.__version__}", "boto3", "--dest", str(folder),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
            "--abi", "cp311", "--abi", "abi3", "--abi", "none",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
