"""Screenshots of the pages for README.md: `just screenshots` (needs /usr/bin/chromium).

Starts a throwaway `chitram` on the embedded stack, fills it with generated landscapes, and saves
the upload page, a result, the gallery, an image page, "My images" and the account page in light
and dark, desktop and phone, to docs/screenshots/.
"""

from __future__ import annotations

import io
import random
import sys
import tempfile
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import Page, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.server import NO_UPLOAD_LIMITS, clean_env, start_server, stop

OUT = Path("docs/screenshots")
DEVICES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 360, "height": 740}}
EMAIL = "ada@example.org"
PASSWORD = "a long passphrase for screenshots"
TITLES = ["Harbour at dawn", "Ridge line", "Evening over the valley", "Lakeside", "First snow", "Dunes"]


def landscape(seed: int, size: tuple[int, int] = (1600, 1000)) -> bytes:
    """A sky gradient, a sun and three mountain ridges: pleasant, varied, and generated here."""
    rng = random.Random(seed)
    width, height = size
    top = (rng.randint(20, 90), rng.randint(40, 120), rng.randint(120, 220))
    bottom = (rng.randint(200, 255), rng.randint(120, 200), rng.randint(80, 160))
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    sun_x, sun_y, radius = rng.randint(200, width - 200), rng.randint(150, height // 2), rng.randint(50, 110)
    draw.ellipse([sun_x - radius, sun_y - radius, sun_x + radius, sun_y + radius], fill=(255, 236, 190))
    for layer in range(3):
        base = height * (0.55 + layer * 0.15)
        shade = tuple(max(0, c - 60 - layer * 45) for c in top)
        points: list[tuple[float, float]] = [(0, height)]
        for x in range(0, width + 100, 100):
            points.append((x, base - rng.randint(0, 180 - layer * 40)))
        points.append((width, height))
        draw.polygon(points, fill=shade)
    buffer = io.BytesIO()
    image.filter(ImageFilter.SMOOTH).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def seed(url: str) -> str:
    """Upload a gallery's worth; return the id of a titled public image for the image page."""
    featured = ""
    with httpx.Client(base_url=url, timeout=30) as client:
        for index in range(30):
            title = TITLES[index % len(TITLES)]
            response = client.post(
                "/api/v1/images",
                files={"file": (f"landscape-{index}.jpg", landscape(index), "image/jpeg")},
                data={"title": title, "visibility": "public"},
            )
            response.raise_for_status()
            featured = response.json()["id"]
    return featured


def seed_account(url: str) -> None:
    """An account with a few images of each visibility and an API token, made through the pages."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as client:
        form = client.get("/register").text
        csrf = form.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
        fields = {"email": EMAIL, "password": PASSWORD, "password_confirm": PASSWORD, "_csrf_token": csrf}
        client.post("/register", data=fields).raise_for_status()
        account = client.get("/account").text
        csrf = account.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
        created = client.post("/account/tokens", data={"name": "Laptop scripts", "_csrf_token": csrf})
        token = created.text.split('id="new-token-value" type="text" readonly value="', 1)[1].split('"', 1)[0]
        for index, visibility in enumerate(["public", "unlisted", "private", "public", "private", "unlisted"]):
            client.post(
                "/api/v1/images",
                files={"file": (f"mine-{index}.jpg", landscape(100 + index), "image/jpeg")},
                data={"title": TITLES[index], "visibility": visibility},
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status()
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).raise_for_status()


def log_in(page: Page, url: str) -> None:
    page.goto(url + "/login")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("form.stacked button[type=submit]")
    page.wait_for_url(url + "/me/images")


def shoot(page: Page, name: str, theme: str, device: str) -> None:
    path = OUT / f"{name}-{theme}-{device}.png"
    page.screenshot(path=str(path))
    print(f"saved {path}")


def take_all(url: str, featured: str, sample: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for theme in ("light", "dark"):
            for device, viewport in DEVICES.items():
                context = browser.new_context(
                    viewport=viewport,  # type: ignore[arg-type]
                    color_scheme=theme,
                    device_scale_factor=1,
                )
                page = context.new_page()
                page.goto(url + "/")
                shoot(page, "upload", theme, device)
                page.fill("#title", "Harbour at dawn")
                page.set_input_files("#file", str(sample))
                page.wait_for_selector(".upload-row.done .result")
                page.locator("#upload-section").scroll_into_view_if_needed()
                shoot(page, "result", theme, device)
                page.goto(url + "/gallery")
                page.wait_for_load_state("networkidle")
                shoot(page, "gallery", theme, device)
                page.goto(f"{url}/i/{featured}")
                page.wait_for_load_state("networkidle")
                shoot(page, "image", theme, device)
                log_in(page, url)
                page.wait_for_load_state("networkidle")
                shoot(page, "my-images", theme, device)
                page.goto(url + "/account")
                shoot(page, "account", theme, device)
                context.close()
        browser.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(clean_env(**NO_UPLOAD_LIMITS), cwd=Path(folder))
        try:
            featured = seed(server.url)
            seed_account(server.url)
            sample = Path(folder) / "harbour.jpg"
            sample.write_bytes(landscape(99))
            take_all(server.url, featured, sample)
        finally:
            stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
