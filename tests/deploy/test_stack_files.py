"""The Compose stack and the Caddyfile, read as the deployment plan asks: secrets from the env
file only, one way in (Caddy on 80/443), an internal network, health checks, restarts, logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ROOT
from tests.support.server import BIN
from tests.support.services import services_required

DEPLOY = ROOT / "deploy"
SECRETS = {
    "CHITRAM_SECRET_KEY": "k" * 48,
    "POSTGRES_PASSWORD": "postgres-secret",
    "REDIS_PASSWORD": "redis-secret",
    "MINIO_ROOT_PASSWORD": "minio-root-secret",
    "CHITRAM_S3_SECRET_KEY": "app-s3-secret",
}
ONE_SHOTS = {"migrate", "minio-init"}


def filled_env(tmp_path: Path) -> Path:
    """The example with every secret filled in, as an operator leaves it."""
    text = (DEPLOY / ".env.production.example").read_text()
    for name, value in SECRETS.items():
        text, count = re.subn(rf"^{name}=$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"{name} is not an empty line in .env.production.example"
    path = tmp_path / ".env.production"
    path.write_text(text)
    return path


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "docker-compose"), *args]
    return subprocess.run(command, cwd=DEPLOY, capture_output=True, text=True, timeout=60)


@pytest.fixture
def stack(tmp_path: Path) -> dict[str, Any]:
    done = compose("--env-file", str(filled_env(tmp_path)), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_an_unfilled_env_file_is_refused_naming_each_secret() -> None:
    done = compose("--env-file", ".env.production.example", "config", "--quiet")
    assert done.returncode != 0
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "CHITRAM_S3_SECRET_KEY"):
        assert f"set {name} in .env.production" in done.stderr


def test_only_caddy_is_reachable_from_outside(stack: dict[str, Any]) -> None:
    services = stack["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"caddy"}
    assert sorted(port["target"] for port in services["caddy"]["ports"]) == [80, 443, 443]
    assert stack["networks"]["internal"]["internal"] is True
    for name in ("postgres", "redis", "minio", "minio-init", "migrate"):
        assert set(services[name]["networks"]) == {"internal"}, name


def test_secrets_reach_only_the_services_that_need_them(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name in ("app", "migrate", "backup", "caddy"):
        environment = services[name].get("environment", {})
        assert not any(key.startswith("MINIO_ROOT") for key in environment), name
        assert "env_file" not in services[name], name
    app = services["app"]["environment"]
    assert app["CHITRAM_S3_SECRET_KEY"] == SECRETS["CHITRAM_S3_SECRET_KEY"]
    assert SECRETS["POSTGRES_PASSWORD"] in app["CHITRAM_DATABASE_URL"]
    assert app["CHITRAM_ENV"] == "production"
    assert "env_file" not in services["minio-init"]
    assert services["minio-init"]["environment"]["MINIO_ROOT_PASSWORD"] == SECRETS["MINIO_ROOT_PASSWORD"]


def test_order_health_restarts_and_logs(stack: dict[str, Any]) -> None:
    services = stack["services"]
    depends = services["app"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy"
    assert services["caddy"]["depends_on"]["app"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "minio"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"]["max-size"], name
        expected = "no" if name in ONE_SHOTS else "unless-stopped"
        assert service.get("restart", "no") == expected, name
    assert services["migrate"]["command"] == ["chitram-admin", "migrate"]
    assert services["backup"]["command"][:3] == ["chitram-admin", "backup", "schedule"]


def test_every_image_can_be_replaced_from_the_environment(tmp_path: Path) -> None:
    overrides = {
        "CHITRAM_IMAGE": "mirror/chitram:1",
        "CADDY_IMAGE": "mirror/caddy:1",
        "POSTGRES_IMAGE": "mirror/postgres:1",
        "REDIS_IMAGE": "mirror/redis:1",
        "MINIO_IMAGE": "mirror/minio:1",
        "MINIO_CLIENT_IMAGE": "mirror/mc:1",
    }
    env = filled_env(tmp_path)
    env.write_text(env.read_text() + "".join(f"{key}={value}\n" for key, value in overrides.items()))
    done = compose("--env-file", str(env), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    images = {service["image"] for service in json.loads(done.stdout)["services"].values()}
    assert images == set(overrides.values())


def test_the_caddyfile_is_valid_for_caddy() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        if services_required():
            pytest.fail("caddy is required (CHITRAM_REQUIRE_SERVICES=1): install Debian's caddy")
        pytest.skip("caddy is not installed")
    done = subprocess.run(
        [caddy, "adapt", "--config", "Caddyfile", "--adapter", "caddyfile"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        env={"DOMAIN": "img.example.com", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    server = next(iter(json.loads(done.stdout)["apps"]["http"]["servers"].values()))
    handlers = [
        handler
        for route in server["routes"]
        for group in route["handle"]
        for sub in group.get("routes", [])
        for handler in sub["handle"]
    ]
    proxy = next(handler for handler in handlers if handler["handler"] == "reverse_proxy")
    # Every replica Docker's DNS lists on `edge` (deploy/chitram-deploy adds one there only once
    # it is healthy), and connection failures retried on another one.
    assert proxy["dynamic_upstreams"]["source"] == "a" and proxy["dynamic_upstreams"]["name"] == "app"
    assert proxy["load_balancing"]["try_duration"] > 0
    body = next(handler for handler in handlers if handler["handler"] == "request_body")
    assert body["max_size"] == 25 * 1024 * 1024 + 64 * 1024


def test_the_networks_have_fixed_subnets_that_do_not_overlap(stack: dict[str, Any]) -> None:
    import ipaddress

    edge = stack["networks"]["edge"]["ipam"]["config"][0]
    internal = stack["networks"]["internal"]["ipam"]["config"][0]
    assert not ipaddress.ip_network(edge["subnet"]).overlaps(ipaddress.ip_network(internal["subnet"]))
    caddy = stack["services"]["caddy"]["networks"]["edge"]["ipv4_address"]
    assert ipaddress.ip_address(caddy) not in ipaddress.ip_network(
        edge["ip_range"]
    )  # never handed to another container
    assert stack["services"]["app"]["environment"]["CHITRAM_TRUSTED_PROXIES"] == caddy


def test_the_local_stack_is_plain_http_on_loopback(tmp_path: Path) -> None:
    env = filled_env(tmp_path)
    env.write_text(env.read_text() + "PUBLIC_URL=http://localhost:8080\n")
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.local.yml"]
    done = compose("--env-file", str(env), *files, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    ports = services["caddy"]["ports"]
    assert [(port["host_ip"], port["published"], port["target"]) for port in ports] == [("127.0.0.1", "8080", 80)]
    assert services["caddy"]["environment"]["DOMAIN"] == "http://localhost"
    assert services["app"]["environment"]["CHITRAM_PUBLIC_URL"] == "http://localhost:8080"
