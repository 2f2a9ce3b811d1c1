"""The deployment files pass the linters operators and CI run on them (installed from PyPI)."""

from __future__ import annotations

import subprocess

from tests.deploy.conftest import ROOT
from tests.support.server import BIN


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_shell_scripts_pass_shellcheck() -> None:
    scripts = [".ci/run", "deploy/minio-init.sh", "tests/deploy/standins/postgres-entrypoint.sh"]
    done = subprocess.run([str(BIN / "shellcheck"), *scripts], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
