"""The `mc` subcommands the Compose stack runs, against the moto stand-in.

`ready local`, `alias set`, `mb --ignore-existing`, `anonymous set none`, `admin policy create`,
`admin user add` and `admin policy attach`. moto cannot give a user a chosen access key, so the
user and policy commands check their arguments and are recorded, not enforced.
"""

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import boto3

ALIASES = Path("/tmp/mc-aliases.json")


def client(alias: str) -> Any:
    url, key, secret = json.loads(ALIASES.read_text())[alias]
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1"
    )


def main(args: list[str]) -> None:
    match args:
        case ["ready", "local"]:
            urllib.request.urlopen("http://127.0.0.1:9000/moto-api/", timeout=2)
        case ["alias", "set", alias, url, key, secret]:
            aliases = json.loads(ALIASES.read_text()) if ALIASES.exists() else {}
            aliases[alias] = [url, key, secret]
            ALIASES.write_text(json.dumps(aliases))
        case ["mb", "--ignore-existing", target]:
            alias, bucket = target.split("/", 1)
            s3 = client(alias)
            if bucket not in {found["Name"] for found in s3.list_buckets().get("Buckets", [])}:
                s3.create_bucket(Bucket=bucket)
            print(f"Bucket created successfully `{target}`.")
        case ["anonymous", "set", "none", target]:
            alias, bucket = target.split("/", 1)
            client(alias).delete_bucket_policy(Bucket=bucket)
        case ["admin", "policy", "create", _alias, _name, policy_file]:
            json.loads(Path(policy_file).read_text())  # a malformed policy fails as with MinIO
        case ["admin", "user", "add", _alias, key, secret]:
            if not (3 <= len(key) <= 20 and len(secret) >= 8):
                sys.exit("mc: access key must be 3-20 characters and secret key at least 8")
        case ["admin", "policy", "attach", _alias, _name, "--user", _user]:
            pass
        case _:
            sys.exit(f"mc stand-in: unsupported command {args}")


main(sys.argv[1:])
