"""Moving a MinIO-era droplet to Garage, as docs/deployment/README.md tells an operator to: back
up on the old stack, bring the new one up on the same volumes (its database, its backups), and
restore that backup, which puts every object into Garage.

The old stack is tests/deploy/minio_era/ (the Compose file as released with MinIO), run with the
moto-based `minio` and `mc` stand-ins; the new one is deploy/ with the Garage stand-in. Neither
needs Caddy here: requests go to a replica from inside its container."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT
from tests.deploy.test_stack_files import filled_env
from tests.images.test_api import png_bytes
from tests.support.server import BIN

pytestmark = pytest.mark.timeout(900)

OLD_STACK = ROOT / "tests" / "deploy" / "minio_era"
NEW_STACK = ROOT / "deploy"
# What the MinIO-era .env.production held besides what both stacks share.
MINIO_ERA = {"MINIO_ROOT_USER": "chitram-root", "MINIO_ROOT_PASSWORD": "minio-root-secret",
             "CHITRAM_S3_ACCESS_KEY": "chitramapp", "CHITRAM_S3_SECRET_KEY": "app-s3-secret"}  # fmt: skip

# Run inside a replica: upload, or fetch and hash, through the app itself on port 8000.
UPLOAD = """
import sys, httpx
files = {"file": ("a.png", sys.stdin.buffer.read(), "image/png")}
created = httpx.post("http://127.0.0.1:8000/api/v1/images", files=files, data={"visibility": "public"}, timeout=30)
assert created.status_code == 201, created.text
print(created.json()["id"], created.json()["sha256"])
"""
FETCH = """
import hashlib, sys, httpx
image = httpx.get(f"http://127.0.0.1:8000/api/v1/images/{sys.argv[1]}", timeout=30).json()
data = httpx.get("http://127.0.0.1:8000" + httpx.URL(image["url"]).path, timeout=30)
print(data.status_code, hashlib.sha256(data.content).hexdigest())
"""


@dataclass
class Project:
    name: str
    env_file: Path

    def compose(self, folder: Path, *args: str, stdin: bytes | None = None, timeout: float = 600) -> str:
        command = [str(BIN / "docker-compose"), "--project-directory", str(folder), "--env-file", str(self.env_file),
                   "--project-name", self.name, *args]  # fmt: skip
        done = subprocess.run(command, cwd=folder, capture_output=True, input=stdin, timeout=timeout, check=False)
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"docker compose {' '.join(args)} ({folder.name}):\n{out}\n{err}"
        return out


@pytest.fixture
def project(app_image: str, standin_images: dict[str, str], tmp_path: Path) -> Iterator[Project]:
    env = filled_env(tmp_path)
    text = env.read_text()
    images = {"CHITRAM_IMAGE": app_image, **standin_images}
    # One replica is enough to serve the images, and half the load on a small CI machine.
    text = re.sub(r"^APP_REPLICAS=.*$", "APP_REPLICAS=1", text, flags=re.MULTILINE)
    env.write_text(text + "".join(f"{name}={image}\n" for name, image in images.items()))
    running = Project(f"chitram-move-{uuid.uuid4().hex[:6]}", env)
    try:
        yield running
    finally:
        for folder, env_file in ((NEW_STACK, env), (OLD_STACK, _old_env(env))):
            subprocess.run(
                [str(BIN / "docker-compose"), "--project-directory", str(folder), "--env-file", str(env_file),
                 "--project-name", running.name, "down", "--volumes", "--timeout", "5"],
                cwd=folder, capture_output=True, timeout=300, check=False,
            )  # fmt: skip


def _old_env(env: Path) -> Path:
    """The same settings as the MinIO-era stack had them (its own key formats and root user)."""
    old = env.with_name(".env.minio-era")
    text = env.read_text()
    for name, value in MINIO_ERA.items():
        text = re.sub(rf"^{name}=.*$", "", text, flags=re.MULTILINE) + f"{name}={value}\n"
    old.write_text(text)
    return old


def test_a_minio_era_backup_restored_into_the_garage_stack_serves_every_image(project: Project) -> None:
    old = Project(project.name, _old_env(project.env_file))
    old.compose(OLD_STACK, "up", "--detach", "--wait", "app", timeout=900)
    uploaded = []
    for size in ((64, 48), (80, 60)):
        image_id, sha256 = old.compose(OLD_STACK, "exec", "-T", "app", "python", "-c", UPLOAD,
                                       stdin=png_bytes(size)).split()  # fmt: skip
        uploaded.append((image_id, sha256))
    created = old.compose(OLD_STACK, "run", "--rm", "--no-deps", "-T", "backup", "chitram-admin", "backup", "create")
    backup_id = re.search(r"backup (\d{8}-\d{6}):", created)
    assert backup_id, created
    old.compose(OLD_STACK, "down", "--timeout", "10")  # the volumes stay: database, backups, MinIO's data

    # Today's stack on the same volumes: Garage comes up empty, storage-init makes its bucket and key.
    project.compose(NEW_STACK, "up", "--detach", "--wait", "app", timeout=900)
    project.compose(NEW_STACK, "stop", "app")
    restored = project.compose(NEW_STACK, "run", "--rm", "--no-deps", "-T", "backup",
                               "chitram-admin", "backup", "restore", backup_id[1], "--yes")  # fmt: skip
    assert f"restored backup {backup_id[1]}" in restored, restored
    project.compose(NEW_STACK, "up", "--detach", "--wait", "app", timeout=300)

    for image_id, sha256 in uploaded:
        status, served = project.compose(NEW_STACK, "exec", "-T", "app", "python", "-c", FETCH, image_id).split()
        assert (status, served) == ("200", sha256)
    # The bytes came from Garage: the app has no other store now.
    assert "CHITRAM_S3_ENDPOINT=garage:3900" in project.compose(NEW_STACK, "exec", "-T", "app", "env")
