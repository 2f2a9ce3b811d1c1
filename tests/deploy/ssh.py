"""An SSH target on this machine for `just deploy`: openssh-server on a loopback port, a key made
for the test, and the engine's `docker compose` plugin — what a droplet offers, minus the distance.

The "remote" Docker engine is this machine's, so shipping an image loads it into the engine that
already has it; everything else (SSH, files, the release script) goes the way it would."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import BIN, free_port
from tests.support.services import ServiceUnavailable

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshTarget:
    host: str  # user@127.0.0.1
    port: int
    key: Path
    known_hosts: Path
    stack_dir: Path  # the stack's folder "on the host" (DEPLOY_DIR)

    @property
    def ssh_args(self) -> str:
        return (
            f"-p {self.port} -i {self.key} -o UserKnownHostsFile={self.known_hosts} "
            "-o StrictHostKeyChecking=accept-new -o BatchMode=yes"
        )

    def environment(self) -> dict[str, str]:
        """For `just deploy HOST …` run here: where the host's stack lives and how to reach it."""
        return {**os.environ, "DEPLOY_DIR": str(self.stack_dir), "DEPLOY_SSH_ARGS": self.ssh_args}


def start_sshd(folder: Path) -> tuple[SshTarget, subprocess.Popen[bytes]]:
    if not SSHD.exists():
        raise ServiceUnavailable("sshd", "not installed (Debian's openssh-server)")
    folder.mkdir(parents=True, exist_ok=True)
    key, host_key = folder / "id_ed25519", folder / "host_ed25519"
    for path in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    shutil.copy(key.with_suffix(".pub"), folder / "authorized_keys")
    # The Compose plugin as the host would have it: docker finds it under $DOCKER_CONFIG/cli-plugins.
    plugins = folder / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(BIN / "docker-compose")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"SetEnv DOCKER_CONFIG={folder / 'docker-config'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = (folder / "sshd.log").open("ab")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    target = SshTarget(
        host=f"{getpass.getuser()}@127.0.0.1",
        port=port,
        key=key,
        known_hosts=folder / "known_hosts",
        stack_dir=folder / "host" / "chitram",
    )
    _wait_for_login(target, process)
    return target, process


def _wait_for_login(target: SshTarget, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        done = subprocess.run(
            ["ssh", *target.ssh_args.split(), target.host, "docker compose version"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise ServiceUnavailable("sshd", f"no login on 127.0.0.1:{target.port}: {done.stderr.strip()}")
        time.sleep(0.5)
