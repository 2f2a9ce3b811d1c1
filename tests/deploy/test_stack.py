"""The production Compose stack on a real Docker engine: deploy/docker-compose.yml and
deploy/Caddyfile as they are, with only the image names swapped for stand-ins built here
(Debian's PostgreSQL, Redis and Caddy; moto and a stand-in of Garage's admin API behind a
`/garage` command), since no registry is reachable."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import ROOT
from tests.deploy.load import SITE, load_on, site, wait_for_the_site
from tests.deploy.test_stack_files import SECRETS, filled_env
from tests.images.test_api import png_bytes
from tests.support.server import BIN

DEPLOY = ROOT / "deploy"


@dataclass
class Stack:
    project: str
    env_file: Path

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        command = [str(BIN / "docker-compose"), "--env-file", str(self.env_file), "--project-name", self.project, *args]
        done = subprocess.run(command, cwd=DEPLOY, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def stack(app_image: str, standin_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for this module's tests (bringing it up takes about a minute)."""
    env = filled_env(tmp_path_factory.mktemp("stack"))
    text = re.sub(r"^DOMAIN=.*$", "DOMAIN=localhost", env.read_text(), flags=re.MULTILINE)
    images = {"CHITRAM_IMAGE": app_image, **standin_images}
    env.write_text(text + "".join(f"{name}={image}\n" for name, image in images.items()))
    running = Stack(project=f"chitram-e2e-{uuid.uuid4().hex[:6]}", env_file=env)
    try:
        running.compose("up", "--detach", "--wait", timeout=900)
        wait_for_the_site()
        yield running
    finally:
        running.compose("down", "--volumes", "--timeout", "5", check=False)


def test_upload_fetch_and_delete_through_caddy_with_its_headers(stack: Stack) -> None:
    redirect = httpx.get("http://localhost/gallery", follow_redirects=False, timeout=10)
    assert redirect.status_code == 308 and redirect.headers["location"] == f"{SITE}/gallery"
    with site() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["strict-transport-security"].startswith("max-age=")
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert page.headers["x-frame-options"] == "DENY"
        assert "server" not in page.headers

        data = png_bytes((120, 90))
        created = client.post(
            "/api/v1/images", files={"file": ("a.png", data, "image/png")}, data={"visibility": "public"}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["url"].startswith(f"{SITE}/i/")  # CHITRAM_PUBLIC_URL, not the container's address
        fetched = client.get(httpx.URL(body["url"]).path, headers={"accept-encoding": "gzip, zstd"})
        assert fetched.status_code == 200
        assert "content-encoding" not in fetched.headers  # images are not compressed again
        assert hashlib.sha256(fetched.content).hexdigest() == body["sha256"]
        gallery = client.get("/gallery", headers={"accept-encoding": "gzip"})
        assert gallery.headers.get("content-encoding") == "gzip"  # text is
        deleted = client.delete(f"/api/v1/images/{body['id']}", headers={"X-Delete-Token": body["delete_token"]})
        assert deleted.status_code == 204
        assert client.get(httpx.URL(body["url"]).path).status_code == 404

    log = stack.compose("logs", "--no-color", "caddy")
    assert body["delete_token"] not in log and "X-Delete-Token" not in log
    assert '"uri":"/api/v1/images"' in log.replace(" ", "")


def test_metrics_are_not_served_from_outside(stack: Stack) -> None:
    with site() as client:
        # Caddy's own bodiless 404, not the app's problem+json one: the request never reached a replica.
        for path in ("/metrics", "/metrics/x"):
            hidden = client.get(path, headers={"Authorization": f"Bearer {SECRETS['CHITRAM_METRICS_TOKEN']}"})
            assert (hidden.status_code, hidden.content) == (404, b""), path
        assert client.get("/no-such-page").content != b""  # the app's 404 has a body


def test_storage_init_made_the_bucket_and_the_key_and_runs_again_harmlessly(stack: Stack) -> None:
    again = stack.compose("run", "--rm", "-T", "storage-init")
    assert "(nothing to change)" in again
    assert SECRETS["GARAGE_ADMIN_TOKEN"] not in stack.compose("exec", "-T", "app", "env")


def test_a_body_above_the_upload_limit_is_refused_by_caddy(stack: Stack) -> None:
    with site() as client:
        too_big = b"\0" * (25 * 1024 * 1024 + 128 * 1024)
        response = client.post("/api/v1/images", files={"file": ("big.png", too_big, "image/png")})
        assert response.status_code == 413


def test_the_migration_step_ran_and_the_app_sees_its_services(stack: Stack) -> None:
    revision = stack.compose("exec", "-T", "postgres", "psql", "-U", "chitram", "-d", "chitram", "-tAc",
                             "SELECT version_num FROM alembic_version")  # fmt: skip
    assert re.search(r"^[0-9a-f]{12}$", revision.strip(), flags=re.MULTILINE), revision
    ready = stack.compose("exec", "-T", "app", "chitram-admin", "health", "--direct")
    assert "ready" in ready


def test_killing_a_replica_under_load_fails_no_request(stack: Stack) -> None:
    with site() as client:
        created = client.post(
            "/api/v1/images", files={"file": ("b.png", png_bytes((90, 70)), "image/png")}, data={"visibility": "public"}
        )
        assert created.status_code == 201, created.text
        path = httpx.URL(created.json()["url"]).path
    replicas = stack.compose("ps", "--quiet", "app").split()
    assert len(replicas) == 2
    with load_on(path) as load:
        time.sleep(2)
        subprocess.run(["docker", "kill", replicas[0]], check=True, capture_output=True)
        time.sleep(5)
    load.assert_no_failure(at_least=100)
    # Docker brings the killed replica back (restart: unless-stopped).
    stack.compose("up", "--detach", "--wait", "app", timeout=300)
