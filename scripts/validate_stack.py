"""Check a running Chitram end to end through its front door: upload → fetch → delete.

    uv run chitram-admin health --url http://localhost:8080 --wait 120   # ready first
    uv run python -m scripts.validate_stack http://localhost:8080

`just validate-local` runs both against the local Compose stack (through Caddy). Exits 1 with
the step that failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys

import httpx
from PIL import Image


class ValidationError(Exception):
    """A step of the check failed."""


def sample_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload_fetch_delete(client: httpx.Client) -> str:
    data = sample_png()
    created = client.post(
        "/api/v1/images", files={"file": ("validate.png", data, "image/png")}, data={"visibility": "unlisted"}
    )
    if created.status_code != 201:
        raise ValidationError(f"upload: {created.status_code} {created.text[:300]}")
    image = created.json()
    path = httpx.URL(image["url"]).path
    fetched = client.get(path)
    if fetched.status_code != 200 or hashlib.sha256(fetched.content).hexdigest() != image["sha256"]:
        raise ValidationError(f"fetch {path}: {fetched.status_code}, not the bytes uploaded")
    deleted = client.delete(f"/api/v1/images/{image['id']}", headers={"X-Delete-Token": image["delete_token"]})
    if deleted.status_code != 204:
        raise ValidationError(f"delete: {deleted.status_code} {deleted.text[:300]}")
    gone = client.get(path).status_code
    if gone != 404:
        raise ValidationError(f"{path} still answers {gone} after the delete")
    return str(image["id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the site's address, e.g. http://localhost:8080")
    args = parser.parse_args(argv)
    with httpx.Client(base_url=args.url, timeout=30) as client:
        try:
            image_id = upload_fetch_delete(client)
        except ValidationError as exc:
            print(f"validate: FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"validate: {args.url} is ready; image {image_id} was uploaded, fetched and deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
