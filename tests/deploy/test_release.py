"""`just deploy` to an SSH target on this machine (openssh-server), the way it reaches a droplet:
the image shipped with `docker save | ssh docker load`, the stack's files copied, and
deploy/chitram-deploy run on the host — backup, migration, replicas replaced one at a time,
health gate, automatic rollback. The stack is the production Compose file and Caddyfile with
the stand-in service images named in the host's .env.production, as an air-gapped host would."""

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
from alembic.script import ScriptDirectory

from chitram.db import MIGRATIONS_DIR
from tests.deploy.conftest import ROOT, need
from tests.deploy.load import load_on, site, wait_for_the_site
from tests.deploy.ssh import SshTarget, start_sshd
from tests.deploy.test_stack_files import filled_env
from tests.images.test_api import png_bytes
from tests.support.docker import DockerEngine
from tests.support.server import BIN, free_port
from tests.support.services import ServiceUnavailable

VERSIONS = "/opt/chitram/lib/python3.11/site-packages/chitram/migrations/versions"
NEWER_REVISION = "f00dfeed0001"
NEWER_MIGRATION = '''"""a table a newer release adds (deployment test)"""

import sqlalchemy as sa
from alembic import op

revision = "f00dfeed0001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("newer_release_notes", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("newer_release_notes")
'''

# The first test also builds the stand-in images and brings the stack up: minutes on a new machine.
pytestmark = pytest.mark.timeout(900)

REGISTRY = Path("/usr/bin/docker-registry")  # Debian's docker-registry (the CNCF distribution)

BROKEN_RELEASES = {
    # The app module fails on import: `chitram` exits at start, as with a bad import. Its
    # migration step and chitram-admin still work, so the deploy gets as far as the replicas.
    "crashes at start": (
        "USER root\n"
        'RUN sh -c "echo \'raise RuntimeError(\\"deliberately broken release\\")\' '
        '>> $(echo /opt/chitram/lib/python3*/site-packages/chitram/app.py)"\n'
        "USER 10001:10001\n"
    ),
    # Starts and answers, but speaks TLS to Garage, which has none: every image fetch and its
    # readiness fail. A request that reached it would fail; none may.
    "answers but cannot reach its storage": "ENV CHITRAM_S3_SECURE=true\n",
}


@dataclass
class Host:
    target: SshTarget
    project: str
    engine: DockerEngine

    def just(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "just"), *args]
        env = {**self.target.environment(), **(extra_env or {})}
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)

    def deploy(self, image: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.just("deploy", self.target.host, "--image", image, extra_env=extra_env)

    def compose(self, *args: str, timeout: float = 600) -> str:
        folder = self.target.stack_dir
        command = [
            str(BIN / "docker-compose"), "--project-directory", str(folder), "--env-file",
            str(folder / ".env.production"), "--file", str(folder / "docker-compose.yml"), *args,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def releases(self) -> list[str]:
        return (self.target.stack_dir / "releases").read_text().split()

    def app_images(self) -> list[str]:
        containers = self.compose("ps", "--all", "--quiet", "app").split()
        return sorted(self.engine.run("inspect", "--format", "{{.Config.Image}}", c).strip() for c in containers)

    def sql(self, query: str) -> str:
        return self.compose("exec", "-T", "postgres", "psql", "-U", "chitram", "-d", "chitram", "-tAc", query).strip()

    def new_release(self, base: str, dockerfile_lines: str = "", context: Path | None = None) -> str:
        """An image made from `base` that differs from it (a label), plus whatever lines are given
        (COPY reads from `context`)."""
        tag = f"chitram-test/app:release-{uuid.uuid4().hex[:8]}"
        dockerfile = f"FROM {base}\nLABEL chitram.test.release={tag}\n{dockerfile_lines}"
        if context is None:
            self.engine.run("build", "--quiet", "--tag", tag, "-", input=dockerfile, timeout=300)
        else:
            (context / "Dockerfile").write_text(dockerfile)
            self.engine.run("build", "--quiet", "--tag", tag, str(context), timeout=300)
        return tag


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def ssh_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTarget]:
    try:
        target, sshd = start_sshd(tmp_path_factory.mktemp("ssh"))
    except ServiceUnavailable as exc:
        need("an SSH target", exc)
        raise
    yield target
    sshd.terminate()
    sshd.wait(timeout=10)


@pytest.fixture(scope="module")
def host(
    ssh_target: SshTarget, app_image: str, standin_images: dict[str, str], docker_engine: DockerEngine
) -> Iterator[Host]:
    """The first deploy onto an empty host: the stack comes up with `app_image`."""
    folder = ssh_target.stack_dir
    folder.mkdir(parents=True)
    env = filled_env(folder)  # the operator's .env.production, secrets filled in
    project = f"chitram-deploy-{uuid.uuid4().hex[:6]}"
    text = re.sub(r"^DOMAIN=.*$", "DOMAIN=localhost", env.read_text(), flags=re.MULTILINE)
    images = "".join(f"{name}={image}\n" for name, image in standin_images.items())
    env.write_text(f"{text}{images}COMPOSE_PROJECT_NAME={project}\n")
    running = Host(ssh_target, project, docker_engine)
    # A copy of app_image: the host removes the images of releases it no longer keeps, and the
    # other deployment tests still need app_image.
    release = running.new_release(app_image)
    try:
        first = running.deploy(release)
        assert first.returncode == 0, output(first)
        assert f"live: {release}" in first.stdout
        wait_for_the_site()
        yield running
    finally:
        subprocess.run(
            [str(BIN / "docker-compose"), "--project-name", project, "down", "--volumes", "--timeout", "5"],
            capture_output=True,
            check=False,
        )


def start(host: Host) -> subprocess.CompletedProcess[str]:
    command = ["scripts/deploy.sh", "start", host.target.host]
    return subprocess.run(command, cwd=ROOT, env=host.target.environment(), capture_output=True, text=True, timeout=600)


def upload(count: int) -> dict[str, str]:
    """`count` public images through Caddy: their paths and SHA-256."""
    uploaded = {}
    with site() as client:
        for index in range(count):
            response = client.post(
                "/api/v1/images",
                files={"file": (f"{index}.png", png_bytes((40 + index, 30)), "image/png")},
                data={"visibility": "public"},
            )
            assert response.status_code == 201, response.text
            uploaded[httpx.URL(response.json()["url"]).path] = response.json()["sha256"]
    return uploaded


def assert_served(images: dict[str, str]) -> None:
    with site() as client:
        for path, sha256 in images.items():
            response = client.get(path)
            assert response.status_code == 200, f"{path}: {response.status_code}"
            assert hashlib.sha256(response.content).hexdigest() == sha256, path


def live_release() -> str:
    with site() as client:
        return str(client.get("/health/live").json()["release"])


def test_a_new_release_goes_live_under_load_with_no_failed_request(host: Host, app_image: str) -> None:
    images = upload(2)
    release = host.new_release(app_image)
    path = next(iter(images))
    with load_on(path) as load:
        done = host.deploy(release)
    assert done.returncode == 0, output(done)
    load.assert_no_failure(at_least=200)

    log = done.stdout
    assert log.index("backing up before the switch") < log.index("migrating") < log.index("replacing")
    assert host.app_images() == [release, release]
    assert host.releases()[-1] == release
    assert live_release() == release
    # Commands typed by hand on the host (`docker compose --env-file .env.production …`) use it too.
    assert f"\nCHITRAM_IMAGE={release}\n" in (host.target.stack_dir / ".env.production").read_text()
    assert_served(images)
    backups = host.just("backups", host.target.host)
    assert backups.returncode == 0, output(backups)
    assert "verified" in backups.stdout


@pytest.mark.parametrize("breakage", list(BROKEN_RELEASES))
def test_a_broken_release_is_rolled_back_by_itself_and_nothing_is_lost(
    host: Host, app_image: str, breakage: str
) -> None:
    images = upload(3)
    serving = host.releases()[-1]
    rows = host.sql("SELECT count(*) FROM images"), host.sql("SELECT count(*) FROM users")
    broken = host.new_release(app_image, BROKEN_RELEASES[breakage])
    with load_on(next(iter(images))) as load:
        done = host.deploy(broken)
    assert done.returncode == 1, output(done)
    assert f"ROLLING BACK: {broken} did not become healthy" in done.stdout, output(done)
    if breakage == "crashes at start":
        assert "deliberately broken release" in done.stdout  # the failing replica's log is shown
    assert f"rolled back: {serving} serves again" in done.stdout, output(done)
    load.assert_no_failure(at_least=100)

    assert host.app_images() == [serving, serving]
    assert host.releases()[-1] == serving and broken not in host.releases()
    assert live_release() == serving
    assert (host.sql("SELECT count(*) FROM images"), host.sql("SELECT count(*) FROM users")) == rows
    assert_served(images)


def test_rollback_puts_the_previous_release_back_on_the_newer_schema(
    host: Host, app_image: str, tmp_path: Path
) -> None:
    """The new release adds a table (an expand-only migration); after the rollback the older
    release runs on that schema, and the stack still starts: its migration step leaves a
    revision it does not know alone."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    (tmp_path / "migration.py").write_text(NEWER_MIGRATION.format(head=head))
    copy = f"COPY migration.py {VERSIONS}/2026-12-01_newer_{NEWER_REVISION}.py\n"
    newer = host.new_release(app_image, copy, tmp_path)
    previous = host.releases()[-1]
    try:
        _roll_forward_and_back(host, newer, previous)
    finally:
        # The other tests' releases know `head`, not the newer revision (a backup taken now
        # could only be restored by the newer release): undo the newer migration by hand.
        host.sql(f"DROP TABLE IF EXISTS newer_release_notes; UPDATE alembic_version SET version_num = '{head}'")


def _roll_forward_and_back(host: Host, newer: str, previous: str) -> None:
    deployed = host.deploy(newer)
    assert deployed.returncode == 0, output(deployed)
    assert host.sql("SELECT version_num FROM alembic_version") == NEWER_REVISION

    done = host.just("rollback", host.target.host)
    assert done.returncode == 0, output(done)
    assert f"live: {previous}" in done.stdout
    assert host.app_images() == [previous, previous]
    assert host.releases()[-1] == previous and newer not in host.releases()
    assert live_release() == previous
    assert host.sql("SELECT version_num FROM alembic_version") == NEWER_REVISION  # never downgraded

    started = start(host)  # `docker compose up` of the whole stack, the migration step included
    assert started.returncode == 0, output(started)
    logs = host.compose("logs", "--no-color", "migrate")
    assert f"the database is at revision {NEWER_REVISION}, which this release" in logs
    upload(1)


def test_a_backup_brings_every_image_back_after_the_volumes_are_lost(host: Host) -> None:
    upload(3)
    everything = host.sql("SELECT id || ' ' || blob_sha256 FROM images ORDER BY id")
    made = host.just("backup", host.target.host)
    assert made.returncode == 0, output(made)
    backup_id = re.search(r"backup (\d{8}-\d{6}):", made.stdout)
    assert backup_id, output(made)

    # The machine's data is gone: database, objects and Redis (the backups volume survives).
    host.compose("down", "--timeout", "5")
    for volume in ("postgres_data", "garage_meta", "garage_data", "redis_data"):
        host.engine.run("volume", "rm", f"{host.project}_{volume}")
    started = start(host)
    assert started.returncode == 0, output(started)
    assert host.sql("SELECT count(*) FROM images") == "0"

    restored = host.just("restore", host.target.host, backup_id.group(1))
    assert restored.returncode == 0, output(restored)
    assert host.sql("SELECT id || ' ' || blob_sha256 FROM images ORDER BY id") == everything
    wait_for_the_site()
    with site() as client:
        listed = client.get("/api/v1/images", params={"limit": 100}).json()
    paths = {httpx.URL(item["url"]).path: item["sha256"] for item in listed["items"]}
    assert len(paths) == len(everything.splitlines())
    assert_served(paths)


def test_only_the_last_releases_are_kept_and_older_images_are_removed(host: Host, app_image: str) -> None:
    keep = {"DEPLOY_KEEP_RELEASES": "2"}
    older = host.releases()
    first, second = host.new_release(app_image), host.new_release(app_image)
    for release in (first, second):
        done = host.deploy(release, extra_env=keep)
        assert done.returncode == 0, output(done)
    assert host.releases() == [first, second]
    for image in older:
        assert not host.engine.has_image(image), f"{image} is no longer a kept release but is still on the host"
    assert host.engine.has_image(first) and host.engine.has_image(second)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A registry on loopback (Docker pulls from 127.0.0.0/8 over plain HTTP without setup)."""
    if not REGISTRY.exists():
        need("a container registry", ServiceUnavailable("docker-registry", "not installed (Debian's docker-registry)"))
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\nhttp:\n  addr: {address}\n"
    )
    log = (tmp_path / "registry.log").open("ab")
    process = subprocess.Popen([str(REGISTRY), "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "registry.log").read_text()
        time.sleep(0.2)
    yield address
    process.terminate()
    process.wait(timeout=10)


def test_a_release_can_travel_through_a_registry_instead(host: Host, app_image: str, registry: str) -> None:
    release = host.new_release(app_image)
    done = host.deploy(release, extra_env={"DEPLOY_REGISTRY": f"{registry}/chitram"})
    assert done.returncode == 0, output(done)
    assert f"pushing {registry}/chitram:" in done.stdout and "docker save" not in done.stdout
    tag = release.rsplit(":", 1)[1]
    assert tag in httpx.get(f"http://{registry}/v2/chitram/tags/list", timeout=10).json()["tags"]
    assert host.app_images() == [release, release]
    assert live_release() == release
