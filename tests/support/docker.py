"""A real Docker engine for the deployment tests, and the images they need, made without a registry.

No container registry is reachable here, so the base image is made with ``debootstrap`` (Debian
bookworm with its Python 3.11) and ``docker import``. It is cached: the root filesystem under
``CHITRAM_DEPLOY_CACHE`` (default /var/cache/chitram-deploy) and the image in the engine, so
only the first run on a machine pays for it (about a minute).

The engine is the one at /var/run/docker.sock when it answers; otherwise ``dockerd`` (Debian's
``docker.io``) is started for the session. Without an engine, or without root to start one, the
deployment tests skip, or fail under ``CHITRAM_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import ServiceUnavailable

BASE_IMAGE = "chitram-test/debian-python:bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("CHITRAM_DEPLOY_CACHE", "/var/cache/chitram-deploy"))
ENGINE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class DockerEngine:
    """The `docker` client pointed at a running engine."""

    client: str

    def run(self, *args: str, timeout: float = 600, check: bool = True, input: str | None = None) -> str:
        done = subprocess.run(
            [self.client, *args], capture_output=True, text=True, timeout=timeout, check=False, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def has_image(self, name: str) -> bool:
        return subprocess.run([self.client, "image", "inspect", name], capture_output=True, check=False).returncode == 0


def start_engine(log_dir: Path) -> DockerEngine:
    """The engine that answers, or one started now; ServiceUnavailable when neither can be had."""
    client = shutil.which("docker")
    if client is None:
        raise ServiceUnavailable("Docker", "no docker client (install Debian's docker.io)")
    engine = DockerEngine(client)
    if _answers(client):
        return engine
    daemon = shutil.which("dockerd")
    if daemon is None:
        raise ServiceUnavailable("Docker", "no engine answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise ServiceUnavailable("Docker", "no engine answers and dockerd cannot be started here (needs root)")
    log = (log_dir / "dockerd.log").open("ab")
    # Left running for later sessions' tests and for the developer; it holds no test state.
    subprocess.Popen([daemon], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + ENGINE_WAIT_SECONDS
    while time.monotonic() < deadline:
        if _answers(client):
            return engine
        time.sleep(1)
    raise ServiceUnavailable("Docker", f"dockerd did not answer within {ENGINE_WAIT_SECONDS:g} s (see {log.name})")


def _answers(client: str) -> bool:
    return subprocess.run([client, "info"], capture_output=True, check=False, timeout=30).returncode == 0


def ensure_base_image(engine: DockerEngine) -> str:
    """Debian bookworm + python3 as an image, from debootstrap (cached)."""
    if engine.has_image(BASE_IMAGE):
        return BASE_IMAGE
    rootfs = CACHE / "bookworm-python"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            raise ServiceUnavailable("debootstrap", "not installed (Debian's debootstrap package)")
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=1200,
        )
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([engine.client, "import", "-", BASE_IMAGE], stdin=tar.stdout, check=True, capture_output=True)
    assert tar.wait() == 0
    return BASE_IMAGE
