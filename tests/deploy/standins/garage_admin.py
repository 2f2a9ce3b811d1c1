"""A stand-in for the part of Garage's admin API v2 that `chitram-admin storage init` calls.

Requests are checked as Garage's published OpenAPI document (doc/api/garage-admin-v2.json,
Garage v2) describes them: the bearer token, the method, required fields and their types, the
key formats ImportKey accepts, the layout version ApplyClusterLayout must name. Anything else
is answered 400 with a message, so a request Garage would refuse fails here too. What it
cannot prove: that Garage enforces the permissions it records (moto, behind it, does not).

Used in-process by tests/cli/test_storage.py and, with moto, by the garage stand-in image.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KEY_ID = re.compile(r"GK[0-9a-f]{24}")
SECRET = re.compile(r"[0-9a-f]{64}")
PERMS = {"read", "write", "owner"}


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _require(body: Any, field: str, kind: type) -> Any:
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Refused(400, "InvalidRequest", f"missing or mistyped field {field!r}")
    return value


def _perms(body: Any) -> dict[str, bool]:
    perms: dict[str, bool] = _require(body, "permissions", dict)
    if not set(perms) <= PERMS or not all(isinstance(value, bool) for value in perms.values()):
        raise Refused(400, "InvalidRequest", f"permissions must be booleans among {sorted(PERMS)}")
    return perms


class GarageState:
    """One node's layout, buckets and keys, kept in memory."""

    def __init__(self, on_create_bucket: Callable[[str], None] | None = None) -> None:
        self.node_id = secrets.token_hex(32)
        self.layout_version = 0
        self.roles: list[dict[str, Any]] = []
        self.staged: list[dict[str, Any]] = []
        self.buckets: dict[str, dict[str, Any]] = {}  # id → {alias, website}
        self.keys: dict[str, dict[str, Any]] = {}  # access key id → {secret, name, createBucket}
        self.grants: dict[tuple[str, str], dict[str, bool]] = {}  # (bucket id, key id) → permissions
        self.calls: list[str] = []
        # Faults for tests: endpoint name → how many more calls answer 503, as a settling cluster may.
        self.unavailable: dict[str, int] = {}
        self.lock = threading.Lock()
        self._on_create_bucket = on_create_bucket

    def handle(self, method: str, name: str, query: dict[str, str], body: Any) -> Any:
        self.calls.append(name)
        if self.unavailable.get(name):
            self.unavailable[name] -= 1
            raise Refused(503, "InternalError", "Could not reach quorum of 1 (sent 1, got 0 OK)")
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise Refused(400, "InvalidRequest", f"stand-in: endpoint {name} is not implemented")
        expected = "GET" if name.startswith(("Get", "List")) else "POST"
        if method != expected:
            raise Refused(400, "InvalidRequest", f"{name} is called with {expected}, not {method}")
        return handler(query, body)

    # --- cluster -----------------------------------------------------------------------------

    def _GetClusterStatus(self, query: dict[str, str], body: Any) -> Any:
        return {
            "layoutVersion": self.layout_version,
            "nodes": [{"id": self.node_id, "isUp": True, "draining": False, "hostname": "garage"}],
        }

    def _layout(self) -> dict[str, Any]:
        return {
            "version": self.layout_version,
            "roles": self.roles,
            "parameters": {"zoneRedundancy": "maximum"},
            "partitionSize": 0,
            "stagedRoleChanges": self.staged,
        }

    def _GetClusterLayout(self, query: dict[str, str], body: Any) -> Any:
        return self._layout()

    def _UpdateClusterLayout(self, query: dict[str, str], body: Any) -> Any:
        for change in _require(body, "roles", list):
            node = _require(change, "id", str)
            if node != self.node_id:
                raise Refused(400, "InvalidRequest", f"unknown node {node}")
            _require(change, "zone", str)
            _require(change, "tags", list)
            capacity = change.get("capacity")
            if capacity is not None and (not isinstance(capacity, int) or capacity < 0):
                raise Refused(400, "InvalidRequest", "capacity must be a non-negative integer of bytes")
            self.staged = [staged for staged in self.staged if staged["id"] != node] + [change]
        return self._layout()

    def _ApplyClusterLayout(self, query: dict[str, str], body: Any) -> Any:
        version = _require(body, "version", int)
        if version != self.layout_version + 1:
            raise Refused(400, "InvalidRequest", f"layout version must be {self.layout_version + 1}, not {version}")
        if not self.staged:
            raise Refused(400, "InvalidRequest", "no staged layout changes to apply")
        self.roles = [{**change, "storedPartitions": 256} for change in self.staged]
        self.staged = []
        self.layout_version = version
        return {"message": ["layout applied"], "layout": self._layout()}

    # --- buckets -----------------------------------------------------------------------------

    def _bucket_info(self, bucket_id: str) -> dict[str, Any]:
        bucket = self.buckets[bucket_id]
        keys = [
            {"accessKeyId": key, "name": self.keys[key]["name"], "permissions": perms, "bucketLocalAliases": []}
            for (granted, key), perms in self.grants.items()
            if granted == bucket_id and any(perms.values())
        ]
        return {
            "id": bucket_id, "created": bucket["created"], "globalAliases": [bucket["alias"]],
            "websiteAccess": bucket["website"], "keys": keys, "objects": 0, "bytes": 0,
            "unfinishedUploads": 0, "unfinishedMultipartUploads": 0, "unfinishedMultipartUploadParts": 0,
            "unfinishedMultipartUploadBytes": 0, "quotas": {"maxSize": None, "maxObjects": None},
        }  # fmt: skip

    def _find_bucket(self, alias: str) -> str | None:
        return next((bucket_id for bucket_id, bucket in self.buckets.items() if bucket["alias"] == alias), None)

    def _GetBucketInfo(self, query: dict[str, str], body: Any) -> Any:
        bucket_id = query.get("id") or self._find_bucket(query.get("globalAlias", ""))
        if bucket_id not in self.buckets:
            raise Refused(404, "NoSuchBucket", "Bucket not found")
        return self._bucket_info(bucket_id)

    def _CreateBucket(self, query: dict[str, str], body: Any) -> Any:
        if not self.roles:
            # Garage cannot store anything, bucket metadata included, before a layout is applied.
            raise Refused(503, "InternalError", "no cluster layout: assign a role to a node first")
        alias = _require(body, "globalAlias", str)
        if self._find_bucket(alias) is not None:
            raise Refused(409, "BucketAlreadyExists", f"bucket {alias} already exists")
        bucket_id = secrets.token_hex(32)
        self.buckets[bucket_id] = {"alias": alias, "website": False, "created": datetime.now(UTC).isoformat()}
        if self._on_create_bucket is not None:
            self._on_create_bucket(alias)
        return self._bucket_info(bucket_id)

    def _UpdateBucket(self, query: dict[str, str], body: Any) -> Any:
        bucket_id = query.get("id", "")
        if bucket_id not in self.buckets:
            raise Refused(404, "NoSuchBucket", "Bucket not found")
        if "websiteAccess" in body and body["websiteAccess"] is not None:
            self.buckets[bucket_id]["website"] = _require(body["websiteAccess"], "enabled", bool)
        return self._bucket_info(bucket_id)

    # --- keys --------------------------------------------------------------------------------

    def _key_info(self, key_id: str, *, secret: bool) -> dict[str, Any]:
        key = self.keys[key_id]
        buckets = [
            {"id": bucket, "globalAliases": [self.buckets[bucket]["alias"]], "localAliases": [], "permissions": perms}
            for (bucket, granted), perms in self.grants.items()
            if granted == key_id and any(perms.values())
        ]
        return {
            "accessKeyId": key_id, "name": key["name"], "expired": False,
            "permissions": {"createBucket": key["createBucket"]}, "buckets": buckets,
            "secretAccessKey": key["secret"] if secret else None,
        }  # fmt: skip

    def _GetKeyInfo(self, query: dict[str, str], body: Any) -> Any:
        key_id = query.get("id", "")
        if key_id not in self.keys:
            raise Refused(404, "NoSuchAccessKey", f"Access key not found: {key_id}")
        return self._key_info(key_id, secret=query.get("showSecretKey") == "true")

    def _ImportKey(self, query: dict[str, str], body: Any) -> Any:
        key_id = _require(body, "accessKeyId", str)
        secret = _require(body, "secretAccessKey", str)
        if not KEY_ID.fullmatch(key_id):
            raise Refused(400, "InvalidRequest", "The specified key ID is not a valid Garage key ID")
        if not SECRET.fullmatch(secret):
            raise Refused(400, "InvalidRequest", "The specified secret key is not a valid Garage secret key")
        if key_id in self.keys:
            raise Refused(409, "KeyAlreadyExists", f"Key {key_id} already exists in data store.")
        self.keys[key_id] = {"secret": secret, "name": body.get("name") or "", "createBucket": False}
        return self._key_info(key_id, secret=False)

    def _UpdateKey(self, query: dict[str, str], body: Any) -> Any:
        key_id = query.get("id", "")
        if key_id not in self.keys:
            raise Refused(404, "NoSuchAccessKey", f"Access key not found: {key_id}")
        for field, value in (("allow", True), ("deny", False)):
            if body.get(field, {}) and body[field].get("createBucket"):
                self.keys[key_id]["createBucket"] = value
        return self._key_info(key_id, secret=False)

    def _change_grant(self, body: Any, value: bool) -> Any:
        bucket_id = _require(body, "bucketId", str)
        key_id = _require(body, "accessKeyId", str)
        perms = _perms(body)
        if bucket_id not in self.buckets:
            raise Refused(404, "NoSuchBucket", "Bucket not found")
        if key_id not in self.keys:
            raise Refused(404, "NoSuchAccessKey", f"Access key not found: {key_id}")
        current = self.grants.setdefault((bucket_id, key_id), {"read": False, "write": False, "owner": False})
        for name, asked in perms.items():
            if asked:
                current[name] = value
        return self._bucket_info(bucket_id)

    def _AllowBucketKey(self, query: dict[str, str], body: Any) -> Any:
        return self._change_grant(body, True)

    def _DenyBucketKey(self, query: dict[str, str], body: Any) -> Any:
        return self._change_grant(body, False)


def make_server(port: int, token: str, state: GarageState, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server answering the admin API for ``state``; the caller runs serve_forever()."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, document: Any) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            if url.path == "/health":
                self._answer(200 if state.roles else 503, {})
                return
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._answer(403, {"code": "AccessDenied", "message": "Forbidden: invalid admin token"})
                return
            if not url.path.startswith("/v2/"):
                self._answer(404, {"code": "NoSuchKey", "message": f"unknown path {url.path}"})
                return
            query = {name: values[0] for name, values in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length)) if length else None
                if method == "POST" and body is None:
                    raise Refused(400, "InvalidRequest", "a JSON body is required")
                with state.lock:
                    result = state.handle(method, url.path.removeprefix("/v2/"), query, body)
            except Refused as refused:
                self._answer(refused.status, {"code": refused.code, "message": refused.message})
                return
            except ValueError as exc:
                self._answer(400, {"code": "InvalidRequest", "message": f"invalid JSON: {exc}"})
                return
            self._answer(200, result)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            print(f"admin api: {format % args}", flush=True)

    return ThreadingHTTPServer((host, port), Handler)
