"""`/garage server` and `/garage status` of the dxflrs/garage image, for the deployment tests.

`server`: moto's S3 server on port 3900 (Garage's S3 API) and the admin API stand-in
(garage_admin.py) on port 3903, with the admin token from GARAGE_ADMIN_TOKEN as Garage reads
it. A bucket the admin API creates is created in moto too. State is in memory.
`status`: exit 0 once the admin API answers, as `garage status` does once the node runs.
"""

import json
import os
import sys
import tomllib
import urllib.request
from pathlib import Path

import boto3

# Beside this file in the image (/opt/s3); in the repository it is tests.deploy.standins.garage_admin.
from garage_admin import GarageState, make_server  # type: ignore[import-not-found]
from moto.server import ThreadedMotoServer


def serve() -> None:
    token = os.environ.get("GARAGE_ADMIN_TOKEN") or sys.exit("garage stand-in: GARAGE_ADMIN_TOKEN is not set")
    if not os.environ.get("GARAGE_RPC_SECRET"):
        sys.exit("garage stand-in: GARAGE_RPC_SECRET is not set (Garage refuses to start without it)")
    check_config()
    ThreadedMotoServer(ip_address="0.0.0.0", port=3900).start()
    s3 = boto3.client(
        "s3", endpoint_url="http://127.0.0.1:3900", aws_access_key_id="admin", aws_secret_access_key="admin",
        region_name="us-east-1",
    )  # fmt: skip
    state = GarageState(on_create_bucket=lambda name: s3.create_bucket(Bucket=name))
    print("garage stand-in: S3 on :3900, admin API on :3903", flush=True)
    make_server(3903, token, state, host="0.0.0.0").serve_forever()


def check_config() -> None:
    """Refuse a config file that Garage would refuse, or that would not serve this stack."""
    config = tomllib.loads(Path("/etc/garage.toml").read_text())
    for field in ("metadata_dir", "data_dir", "replication_factor", "rpc_bind_addr"):
        if field not in config:
            sys.exit(f"garage stand-in: /etc/garage.toml lacks {field}")
    if config.get("s3_api", {}).get("api_bind_addr", "").rpartition(":")[2] != "3900":
        sys.exit("garage stand-in: [s3_api] api_bind_addr must listen on port 3900")
    if config.get("admin", {}).get("api_bind_addr", "").rpartition(":")[2] != "3903":
        sys.exit("garage stand-in: [admin] api_bind_addr must listen on port 3903")
    if not config["s3_api"].get("s3_region"):
        sys.exit("garage stand-in: [s3_api] s3_region is required")


def status() -> None:
    request = urllib.request.Request(
        "http://127.0.0.1:3903/v2/GetClusterStatus",
        headers={"Authorization": f"Bearer {os.environ['GARAGE_ADMIN_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=3) as response:
        print(json.dumps(json.load(response)))


match sys.argv[1:]:
    case ["server"]:
        serve()
    case ["status"]:
        status()
    case _:
        sys.exit(f"garage stand-in: unsupported command {sys.argv[1:]}")
