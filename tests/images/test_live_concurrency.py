"""Concurrency through a real `chitram` server (granian), where requests truly interleave."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chitram.settings import Settings
from tests.conftest import settings_env
from tests.images.test_api import png_bytes
from tests.support.server import RunningServer, start_server, stop


@pytest.fixture
def live(settings: Settings, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_server(settings_env(settings), cwd=tmp_path, workers=2 if settings.cache.redis_url else 1)
    yield server
    stop(server)


async def post_image(http: httpx.AsyncClient, data: bytes) -> dict[str, str]:
    response = await http.post("/api/v1/images", files={"file": ("same.png", data, "image/png")})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_concurrent_deletes_of_one_image_count_once(live: RunningServer) -> None:
    data = png_bytes((33, 33), color=(9, 9, 9))
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        twin = await post_image(http, data)
        doomed = await post_image(http, data)
        headers = {"X-Delete-Token": doomed["delete_token"]}
        responses = await asyncio.gather(
            *(http.delete(f"/api/v1/images/{doomed['id']}", headers=headers) for _ in range(12))
        )
        assert sorted(r.status_code for r in responses) == [204] + [404] * 11
        survivor = await http.get(twin["url"])
        assert survivor.status_code == 200
        assert hashlib.sha256(survivor.content).hexdigest() == twin["sha256"]
        # the twin's reference is still counted: deleting it removes the bytes, not before
        await http.delete(f"/api/v1/images/{twin['id']}", headers={"X-Delete-Token": twin["delete_token"]})
        assert (await http.get(twin["url"])).status_code == 404


async def test_uploads_racing_deletes_of_the_same_content_lose_no_bytes(live: RunningServer) -> None:
    data = png_bytes((48, 48), color=(4, 5, 6))
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        alive = [await post_image(http, data) for _ in range(3)]
        for _round in range(4):
            deletes = [
                http.delete(f"/api/v1/images/{image['id']}", headers={"X-Delete-Token": image["delete_token"]})
                for image in alive
            ]
            uploads = [post_image(http, data) for _ in range(3)]
            # Both kinds in flight together: gather them as one batch, then split the results.
            deleted, uploaded = await asyncio.gather(asyncio.gather(*deletes), asyncio.gather(*uploads))
            assert all(r.status_code == 204 for r in deleted)
            alive = list(uploaded)
            for image in alive:
                for url in (image["url"], image["thumbnail_url"], image["preview_url"]):
                    assert (await http.get(url)).status_code == 200, f"lost bytes behind {url}"


async def test_edits_racing_a_delete_get_200_or_404_never_500(live: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        images = [await post_image(http, png_bytes((20, 20), color=(i, 0, 0))) for i in range(15)]
        requests = []
        for image in images:
            headers = {"X-Delete-Token": image["delete_token"]}
            path = f"/api/v1/images/{image['id']}"
            requests += [http.patch(path, json={"title": f"t{n}"}, headers=headers) for n in range(3)]
            requests.append(http.delete(path, headers=headers))
        responses = await asyncio.gather(*requests)
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 204, 404}, [r.text for r in responses if r.status_code >= 500][:3]
        assert statuses.count(204) == len(images)
        for image in images:
            assert (await http.get(f"/api/v1/images/{image['id']}")).status_code == 404
