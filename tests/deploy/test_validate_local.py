"""`just validate-local`: build the image, start the local stack (docker-compose.local.yml, plain
HTTP on loopback), upload → fetch → delete through Caddy, then stop it and drop its volumes."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.conftest import ROOT
from tests.support.docker import DockerEngine
from tests.support.server import BIN, free_port


@pytest.mark.timeout(1200)
def test_validate_local_passes_and_leaves_nothing_running(
    docker_engine: DockerEngine, base_image: str, standin_images: dict[str, str]
) -> None:
    # The stand-in service images, named as an air-gapped machine would name its own.
    env = {**os.environ, **standin_images, "CHITRAM_BASE_IMAGE": base_image, "LOCAL_PORT": str(free_port())}
    done = subprocess.run(
        [str(BIN / "just"), "validate-local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"http://localhost:{env['LOCAL_PORT']} is ready; image " in done.stdout
    assert "uploaded, fetched and deleted" in done.stdout
    left = docker_engine.run("ps", "--all", "--quiet", "--filter", "label=com.docker.compose.project=chitram-validate")
    assert left.strip() == ""
    volumes = docker_engine.run(
        "volume", "ls", "--quiet", "--filter", "label=com.docker.compose.project=chitram-validate"
    )
    assert volumes.strip() == ""
