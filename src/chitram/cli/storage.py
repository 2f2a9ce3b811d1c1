"""`chitram-admin storage init`: the Compose stack's Garage, ready for the app.

Run once per start and per deploy by the one-shot `storage-init` service, with Garage's admin
token, which the app never gets. Every step looks first and changes only what is missing, so
running it again is harmless:

1. the node gets a role in the cluster layout (a single node: one zone, replication 1);
2. the bucket exists under its name, with no anonymous website access;
3. the app's key exists, with the access key and secret from .env.production, and may not
   create buckets;
4. that key may read and write that bucket, and no other bucket (and is never its owner).

It speaks Garage's admin API v2 (docs/decisions/0006-object-storage.md) over httpx; each failure
ends the command with a message that says what to change, so the app does not start.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import click
import httpx

from chitram.cli.common import CommandError

# Garage's own formats (garage_model::key_table::Key::import): "GK" + 12 bytes hex, 32 bytes hex.
ACCESS_KEY_PATTERN = re.compile(r"GK[0-9a-f]{24}")
SECRET_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
KEY_NAME = "chitram-app"
REQUEST_SECONDS = 10.0
LAYOUT_SETTLE_SECONDS = 15.0


class GarageBusy(CommandError):
    """Garage answered 5xx: worth asking again shortly."""


@dataclass(frozen=True)
class StoragePlan:
    """What the object store should look like when init is done."""

    bucket: str
    access_key: str
    secret_key: str
    zone: str
    capacity_bytes: int


class GarageAdmin:
    """The few admin API v2 calls init needs; errors become CommandError naming the call."""

    def __init__(self, url: str, token: str) -> None:
        self._url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self._url, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_SECONDS
        )

    def close(self) -> None:
        self._client.close()

    def call(self, name: str, *, params: dict[str, str] | None = None, body: object = None) -> Any:
        """Call endpoint ``name``; None when Garage answers 404 (no such bucket or key)."""
        method = "GET" if name.startswith(("Get", "List")) else "POST"
        try:
            response = self._client.request(method, f"/v2/{name}", params=params, json=body)
        except httpx.HTTPError as exc:
            raise CommandError(f"Garage's admin API at {self._url} is unreachable ({exc})") from None
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise CommandError(
                f"Garage refused the admin token ({response.status_code} on {name}): GARAGE_ADMIN_TOKEN in "
                ".env.production must be the token the garage service was started with"
            )
        if response.status_code >= 500:
            raise GarageBusy(f"Garage failed {name} ({response.status_code}): {_message(response)}")
        if response.status_code >= 400:
            raise CommandError(f"Garage refused {name} ({response.status_code}): {_message(response)}")
        return response.json() if response.content else None

    def wait_until_up(self, seconds: float) -> dict[str, Any]:
        """The cluster status, asked again each second for up to ``seconds`` while Garage starts."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                status: dict[str, Any] = self.call("GetClusterStatus")
                return status
            except CommandError as exc:
                if "unreachable" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(1)


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return response.text[:300]


def check_plan(plan: StoragePlan) -> None:
    """Refuse keys Garage would refuse, before anything changes, saying how to make good ones."""
    if not ACCESS_KEY_PATTERN.fullmatch(plan.access_key):
        raise CommandError(
            "CHITRAM_S3_ACCESS_KEY must be GK followed by 24 lowercase hex digits (Garage's key format): "
            "make one with `echo GK$(openssl rand -hex 12)`"
        )
    if not SECRET_KEY_PATTERN.fullmatch(plan.secret_key):
        raise CommandError(
            "CHITRAM_S3_SECRET_KEY must be 64 lowercase hex digits (Garage's key format): "
            "make one with `openssl rand -hex 32`"
        )


def init_storage(admin: GarageAdmin, plan: StoragePlan, *, wait_seconds: float) -> list[str]:
    """Bring Garage to ``plan``; returns what was changed (empty when everything was in place)."""
    check_plan(plan)
    changes: list[str] = []
    status = admin.wait_until_up(wait_seconds)
    _ensure_layout(admin, plan, status, changes)
    bucket_id = _ensure_bucket(admin, plan, changes)
    _ensure_key(admin, plan, changes)
    _ensure_permissions(admin, plan, bucket_id, changes)
    return changes


def _ensure_layout(admin: GarageAdmin, plan: StoragePlan, status: dict[str, Any], changes: list[str]) -> None:
    layout = admin.call("GetClusterLayout")
    if layout["roles"]:
        return  # an operator's layout (or ours from an earlier run) is left as it is
    nodes = [node for node in status["nodes"] if node.get("isUp")]
    if len(nodes) != 1:
        raise CommandError(
            f"expected one running Garage node with no layout yet, found {len(nodes)}: this stack runs a single "
            "node; set the layout of a cluster yourself (`garage layout assign`)"
        )
    node_id = nodes[0]["id"]
    if not any(change.get("id") == node_id for change in layout["stagedRoleChanges"]):
        role = {"id": node_id, "zone": plan.zone, "capacity": plan.capacity_bytes, "tags": []}
        admin.call("UpdateClusterLayout", body={"roles": [role]})
    admin.call("ApplyClusterLayout", body={"version": layout["version"] + 1})
    changes.append(f"node {node_id[:16]} given a role in zone {plan.zone} (layout version {layout['version'] + 1})")


def _ensure_bucket(admin: GarageAdmin, plan: StoragePlan, changes: list[str]) -> str:
    # Right after a first layout is applied, Garage may still be settling its tables and answer
    # 5xx for a few seconds: look again (an attempt may have succeeded) and retry, for a while.
    deadline = time.monotonic() + LAYOUT_SETTLE_SECONDS
    while (bucket := admin.call("GetBucketInfo", params={"globalAlias": plan.bucket})) is None:
        try:
            bucket = admin.call("CreateBucket", body={"globalAlias": plan.bucket})
        except GarageBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)
            continue
        changes.append(f"bucket {plan.bucket} created")
        break
    bucket_id: str = bucket["id"]
    if bucket.get("websiteAccess"):
        # Website access would serve the bucket's objects to anyone: images go through the app only.
        admin.call("UpdateBucket", params={"id": bucket_id}, body={"websiteAccess": {"enabled": False}})
        changes.append(f"website access to bucket {plan.bucket} turned off")
    return bucket_id


def _ensure_key(admin: GarageAdmin, plan: StoragePlan, changes: list[str]) -> None:
    key = admin.call("GetKeyInfo", params={"id": plan.access_key, "showSecretKey": "true"})
    if key is None:
        body = {"accessKeyId": plan.access_key, "secretAccessKey": plan.secret_key, "name": KEY_NAME}
        key = admin.call("ImportKey", body=body)
        changes.append(f"key {plan.access_key} imported")
    elif key.get("secretAccessKey") != plan.secret_key:
        raise CommandError(
            f"Garage already has key {plan.access_key} with another secret: put its secret back in "
            "CHITRAM_S3_SECRET_KEY, or choose a new CHITRAM_S3_ACCESS_KEY (Garage never reuses a key id)"
        )
    if key.get("permissions", {}).get("createBucket"):
        admin.call("UpdateKey", params={"id": plan.access_key}, body={"deny": {"createBucket": True}})
        changes.append(f"key {plan.access_key} may no longer create buckets")


def _ensure_permissions(admin: GarageAdmin, plan: StoragePlan, bucket_id: str, changes: list[str]) -> None:
    key = admin.call("GetKeyInfo", params={"id": plan.access_key})
    wanted = {"read": True, "write": True, "owner": False}
    for granted in key.get("buckets", []):
        permissions = granted.get("permissions", {})
        if granted["id"] != bucket_id:
            others = {name: True for name, allowed in permissions.items() if allowed}
            if others:
                perm = {"bucketId": granted["id"], "accessKeyId": plan.access_key, "permissions": others}
                admin.call("DenyBucketKey", body=perm)
                changes.append(f"key {plan.access_key} lost its access to bucket {granted['id'][:16]}")
        elif permissions.get("owner"):
            perm = {"bucketId": bucket_id, "accessKeyId": plan.access_key, "permissions": {"owner": True}}
            admin.call("DenyBucketKey", body=perm)
            changes.append(f"key {plan.access_key} is no longer an owner of bucket {plan.bucket}")
    current = next((granted for granted in key.get("buckets", []) if granted["id"] == bucket_id), None)
    have = current.get("permissions", {}) if current else {}
    if not (have.get("read") and have.get("write")):
        perm = {"bucketId": bucket_id, "accessKeyId": plan.access_key, "permissions": wanted}
        admin.call("AllowBucketKey", body=perm)
        changes.append(f"key {plan.access_key} may read and write bucket {plan.bucket}")


@click.group(name="storage")
def storage_group() -> None:
    """The Compose stack's object store (Garage)."""


@storage_group.command(name="init")
@click.option("--admin-url", envvar="GARAGE_ADMIN_URL", default="http://garage:3903", show_default=True,
              help="Garage's admin API (GARAGE_ADMIN_URL).")  # fmt: skip
@click.option("--admin-token", envvar="GARAGE_ADMIN_TOKEN", required=True, show_envvar=True,
              help="Garage's admin token; only this step gets it, never the app.")  # fmt: skip
@click.option("--bucket", envvar="CHITRAM_S3_BUCKET", default="chitram", show_default=True, show_envvar=True)
@click.option("--access-key", envvar="CHITRAM_S3_ACCESS_KEY", required=True, show_envvar=True,
              help="The app's key id: GK + 24 hex digits.")  # fmt: skip
@click.option("--secret-key", envvar="CHITRAM_S3_SECRET_KEY", required=True, show_envvar=True,
              help="The app's secret: 64 hex digits.")  # fmt: skip
@click.option("--zone", envvar="GARAGE_ZONE", default="dc1", show_default=True,
              help="Zone of this node in a new layout.")  # fmt: skip
@click.option("--capacity-gb", envvar="GARAGE_CAPACITY_GB", type=click.IntRange(min=1), default=100,
              show_default=True, help="This node's capacity in a new layout (a weight).")  # fmt: skip
@click.option("--wait", "wait_seconds", type=float, default=60.0, show_default=True,
              help="How long to wait for Garage to answer.")  # fmt: skip
def storage_init(
    admin_url: str,
    admin_token: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    zone: str,
    capacity_gb: int,
    wait_seconds: float,
) -> None:
    """Create (when missing) the layout, the private bucket and the app's key, allowed only that bucket."""
    plan = StoragePlan(bucket, access_key, secret_key, zone, capacity_gb * 1_000_000_000)
    admin = GarageAdmin(admin_url, admin_token)
    try:
        changes = init_storage(admin, plan, wait_seconds=wait_seconds)
    finally:
        admin.close()
    for change in changes:
        click.echo(change)
    click.echo(
        f"bucket {bucket} is private; key {access_key} may read and write its objects and nothing else"
        + ("" if changes else " (nothing to change)")
    )
