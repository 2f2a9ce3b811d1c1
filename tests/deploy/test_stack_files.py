"""The Compose stack and the Caddyfile, read as the deployment plan asks: secrets from the env
file only, one way in (Caddy on 80/443), an internal network, health checks, restarts, logs,
images pinned to releases that can still be pulled, and the optional monitoring profile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints; only safe_load is used

from tests.deploy.conftest import ROOT
from tests.support.server import BIN
from tests.support.services import services_required

DEPLOY = ROOT / "deploy"
SECRETS = {
    "CHITRAM_SECRET_KEY": "k" * 48,
    "POSTGRES_PASSWORD": "postgres-secret",
    "REDIS_PASSWORD": "redis-secret",
    "GARAGE_RPC_SECRET": "ab" * 32,
    "GARAGE_ADMIN_TOKEN": "garage-admin-token",
    # Garage's key formats: GK + 12 bytes hex, and 32 bytes hex.
    "CHITRAM_S3_ACCESS_KEY": "GK" + "0a" * 12,
    "CHITRAM_S3_SECRET_KEY": "5e" * 32,
    # Long enough for any check the app makes on it (it is a bearer token).
    "CHITRAM_METRICS_TOKEN": "6d" * 32,
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}
ONE_SHOTS = {"migrate", "storage-init"}
# Repositories that are gone or frozen without security fixes: MinIO's were deleted from Docker
# Hub on 2026-09-12, Bitnami's free images stopped in 2025.
WITHDRAWN = (re.compile(r"(docker\.io/|quay\.io/)?minio/"), re.compile(r"(docker\.io/)?bitnami/"))
# A release: at least major.minor (postgres:16.15, caddy:2.11.4, dxflrs/garage:v2.4.1), so
# `latest`, a bare major (`caddy:2`) or no tag at all is refused.
RELEASE_TAG = re.compile(r"v?\d+\.\d+(\.\d+)*(-[a-z0-9.]+)?")
# The names the app exports (src/chitram/system/metrics.py): the dashboard must use each one.
METRICS = (
    "chitram_http_requests_total", "chitram_http_request_duration_seconds", "chitram_uploads_total",
    "chitram_image_processing_seconds", "chitram_dependency_seconds", "chitram_dependency_errors_total",
    "chitram_image_cache_total", "chitram_images", "chitram_stored_bytes",
    "chitram_backup_last_success_timestamp_seconds", "chitram_backup_last_ok", "chitram_backup_last_size_bytes",
)  # fmt: skip


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


@pytest.fixture
def monitored(tmp_path: Path) -> dict[str, Any]:
    """The stack with the monitoring profile on."""
    done = compose("--env-file", str(filled_env(tmp_path)), "--profile", "monitoring", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_an_unfilled_env_file_is_refused_naming_each_secret() -> None:
    done = compose("--env-file", ".env.production.example", "config", "--quiet")
    assert done.returncode != 0
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "CHITRAM_S3_SECRET_KEY", "GARAGE_ADMIN_TOKEN"):
        assert f"set {name} in .env.production" in done.stderr


def test_only_caddy_is_reachable_from_outside(stack: dict[str, Any]) -> None:
    services = stack["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"caddy"}
    assert sorted(port["target"] for port in services["caddy"]["ports"]) == [80, 443, 443]
    assert stack["networks"]["internal"]["internal"] is True
    for name in ("postgres", "redis", "garage", "storage-init", "migrate"):
        assert set(services[name]["networks"]) == {"internal"}, name


def test_secrets_reach_only_the_services_that_need_them(stack: dict[str, Any]) -> None:
    services = stack["services"]
    garage_secrets = {SECRETS["GARAGE_ADMIN_TOKEN"], SECRETS["GARAGE_RPC_SECRET"]}
    for name in ("app", "migrate", "backup", "caddy"):
        environment = services[name].get("environment", {})
        assert not garage_secrets & set(environment.values()), name
        assert "env_file" not in services[name], name
    app = services["app"]["environment"]
    assert app["CHITRAM_S3_ACCESS_KEY"] == SECRETS["CHITRAM_S3_ACCESS_KEY"]
    assert app["CHITRAM_S3_SECRET_KEY"] == SECRETS["CHITRAM_S3_SECRET_KEY"]
    assert app["CHITRAM_METRICS_TOKEN"] == SECRETS["CHITRAM_METRICS_TOKEN"]
    assert SECRETS["POSTGRES_PASSWORD"] in app["CHITRAM_DATABASE_URL"]
    assert app["CHITRAM_ENV"] == "production"
    # The init step gets the admin token and the app's key, and nothing of the database's.
    init = services["storage-init"]["environment"]
    assert init["GARAGE_ADMIN_TOKEN"] == SECRETS["GARAGE_ADMIN_TOKEN"]
    assert init["CHITRAM_S3_SECRET_KEY"] == SECRETS["CHITRAM_S3_SECRET_KEY"]
    assert not any(SECRETS["POSTGRES_PASSWORD"] in value for value in init.values())
    assert services["storage-init"]["command"] == ["chitram-admin", "storage", "init"]
    garage = services["garage"]["environment"]
    assert set(garage) == {"GARAGE_RPC_SECRET", "GARAGE_ADMIN_TOKEN"}
    for name in ("storage-init", "garage"):
        assert "env_file" not in services[name], name


def test_order_health_restarts_and_logs(stack: dict[str, Any]) -> None:
    services = stack["services"]
    depends = services["app"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["storage-init"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy"
    assert services["storage-init"]["depends_on"]["garage"]["condition"] == "service_healthy"
    assert services["caddy"]["depends_on"]["app"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "garage"):
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
        "GARAGE_IMAGE": "mirror/garage:1",
        "PROMETHEUS_IMAGE": "mirror/prometheus:1",
        "GRAFANA_IMAGE": "mirror/grafana:1",
    }
    env = filled_env(tmp_path)
    env.write_text(env.read_text() + "".join(f"{key}={value}\n" for key, value in overrides.items()))
    done = compose("--env-file", str(env), "--profile", "monitoring", "config", "--format", "json")
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
    # A request id made here for every request, replacing any a client sent.
    assert proxy["headers"]["request"]["set"]["X-Request-Id"] == ["{http.request.uuid}"]
    # /metrics is not served from outside, and that route comes before the proxy's.
    routes = [sub for route in server["routes"] for group in route["handle"] for sub in group.get("routes", [])]
    hidden = next(
        index for index, sub in enumerate(routes) if {"path": ["/metrics", "/metrics/*"]} in sub.get("match", [])
    )
    assert routes[hidden]["handle"] == [{"handler": "static_response", "status_code": 404}]
    assert hidden < next(index for index, sub in enumerate(routes) if proxy in sub["handle"])


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


def floating_or_withdrawn(image: str) -> str | None:
    """Why ``image`` may not be a default (None when it is a pinned release of a live repository)."""
    if any(pattern.match(image) for pattern in WITHDRAWN):
        return "its repository was withdrawn"
    _, _, tag = image.rpartition(":") if ":" in image.rpartition("/")[2] else (image, "", "")
    if not tag:
        return "it has no tag (Docker pulls :latest)"
    if not RELEASE_TAG.fullmatch(tag.split("@")[0]):
        return f"its tag {tag!r} is not a release (major.minor at least)"
    return None


def test_the_image_check_refuses_what_it_should() -> None:
    refused = ["redis", "redis:latest", "caddy:2", "minio/minio:RELEASE.2025-09-07T16-13-09Z",
               "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z", "bitnami/postgresql:16.4.0"]  # fmt: skip
    assert all(floating_or_withdrawn(image) for image in refused)
    assert floating_or_withdrawn("dxflrs/garage:v2.4.1") is None
    assert floating_or_withdrawn("localhost:5000/caddy:2.11.4") is None


def test_every_default_image_is_a_pinned_release_that_can_be_pulled(monitored: dict[str, Any]) -> None:
    images = {name: service["image"] for name, service in monitored["services"].items()}
    # The app's image is built by `just build` and named by each deploy (CHITRAM_IMAGE), never pulled.
    pulled = {name: image for name, image in images.items() if not image.startswith("chitram:")}
    assert set(pulled) == {"caddy", "postgres", "redis", "garage", "prometheus", "grafana"}
    problems = {name: why for name, image in pulled.items() if (why := floating_or_withdrawn(image))}
    assert problems == {}


def test_just_images_lists_every_image_to_pull() -> None:
    done = subprocess.run([str(BIN / "just"), "images"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split()
    assert len(listed) == 6 and "dxflrs/garage:v2.4.1" in listed
    assert not any(image.startswith("chitram:") for image in listed)


def test_the_app_and_garage_agree_on_the_region(stack: dict[str, Any]) -> None:
    garage = tomllib.loads((DEPLOY / "garage.toml").read_text())
    assert garage["replication_factor"] == 1
    app = stack["services"]["app"]["environment"]
    assert app["CHITRAM_S3_REGION"] == garage["s3_api"]["s3_region"]
    assert app["CHITRAM_S3_ENDPOINT"] == "garage:" + garage["s3_api"]["api_bind_addr"].rpartition(":")[2]
    mounts = {volume["target"]: volume for volume in stack["services"]["garage"]["volumes"]}
    assert mounts["/etc/garage.toml"]["read_only"] is True
    assert garage["metadata_dir"] in mounts and garage["data_dir"] in mounts  # both on volumes


def test_monitoring_is_off_by_default_and_private_when_on(stack: dict[str, Any], monitored: dict[str, Any]) -> None:
    assert not {"prometheus", "grafana"} & set(stack["services"])
    services = monitored["services"]
    assert set(services["prometheus"]["networks"]) == {"internal"}
    assert [(port["host_ip"], port["target"]) for port in services["grafana"]["ports"]] == [("127.0.0.1", 3000)]
    for name in ("prometheus", "grafana"):
        assert services[name]["mem_limit"], name  # bounded on a 2 GB droplet
    assert any("retention.size" in flag for flag in services["prometheus"]["command"])
    assert monitored["configs"]["metrics_token"]["content"] == SECRETS["CHITRAM_METRICS_TOKEN"]


def test_prometheus_scrapes_every_replica_with_the_token(monitored: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "chitram")
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"] == [{"names": ["app"], "type": "A", "port": 8000, "refresh_interval": "30s"}]
    token_file = job["authorization"]["credentials_file"]
    mounted = {config["target"]: config["source"] for config in monitored["services"]["prometheus"]["configs"]}
    assert mounted[token_file] == "metrics_token"


def test_the_dashboard_shows_every_metric_from_the_provisioned_source() -> None:
    dashboard = json.loads((DEPLOY / "monitoring" / "chitram-dashboard.json").read_text())
    source = yaml.safe_load((DEPLOY / "monitoring" / "grafana-datasource.yml").read_text())["datasources"][0]
    expressions = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    assert [name for name in METRICS if name not in expressions] == []
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {source["uid"]}
