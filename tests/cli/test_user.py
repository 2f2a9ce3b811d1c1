"""`chitram-admin user …` on both stacks: what the commands change is checked through the app itself."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from click.testing import CliRunner, Result
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chitram.cli import admin
from chitram.settings import Settings
from tests.conftest import settings_env
from tests.images.test_api import png_bytes
from tests.support.server import BIN, clean_env
from tests.support.services import PostgresService

Client = AsyncTestClient[Litestar]
HTML = {"accept": "text/html"}
PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple battery horse"
T = TypeVar("T")


def user(settings: Settings, *args: str, stdin: str | None = None) -> Result:
    """`chitram-admin user …` in this process; CliRunner's stdin is never a terminal."""
    env = settings_env(settings)
    return CliRunner().invoke(admin.cli, ["user", *args], input=stdin, env=env, catch_exceptions=False)


async def off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a helper below from an async test: commands run their own event loop (asyncio.run)."""
    return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))


def create(settings: Settings, email: str, *extra: str, password: str = PASSWORD) -> Result:
    result = user(settings, "create", "--email", email, "--password-stdin", *extra, stdin=password + "\n")
    assert result.exit_code == 0, result.output
    return result


def listed(settings: Settings) -> dict[str, dict[str, Any]]:
    result = user(settings, "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["email"]: row for row in json.loads(result.stdout)}


@pytest.fixture
def at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if a person sat at the terminal (CliRunner feeds prompts from its input)."""
    monkeypatch.setattr(admin, "_stdin_is_a_terminal", lambda: True)


async def log_in(client: Client, email: str, password: str) -> int:
    page = await client.get("/login", headers=HTML)
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    data = {"email": email, "password": password, "_csrf_token": found.group(1)}
    response = await client.post("/login", data=data, headers=HTML, follow_redirects=False)
    return response.status_code


async def logged_in(client: Client) -> bool:
    response = await client.get("/account", headers=HTML, follow_redirects=False)
    assert response.status_code in (200, 303), response.text
    return response.status_code == 200


async def api_token(settings: Settings, email: str) -> str:
    async with admin.open_services(settings) as (accounts, _images):
        found = await accounts.find_user(email)
        return (await accounts.create_token(found.id, "tests")).secret


async def me_status(client: Client, token: str) -> int:
    return (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code


def test_create_prompted_or_piped_and_list(settings: Settings, at_a_terminal: None) -> None:
    prompted = user(settings, "create", "--email", "Boss@x.org", "--admin", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert re.fullmatch(r"created user \d+ Boss@x\.org \(admin\)\n", prompted.stdout)
    assert PASSWORD not in prompted.output  # hidden input
    piped = create(settings, "member@x.org")
    assert "(admin)" not in piped.stdout

    rows = listed(settings)
    assert rows.keys() == {"Boss@x.org", "member@x.org"}
    assert rows["Boss@x.org"]["admin"] is True and rows["member@x.org"]["admin"] is False
    member = rows["member@x.org"]
    assert (member["disabled"], member["images"], member["used_bytes"], member["last_login_at"]) == (False, 0, 0, None)
    table = user(settings, "list").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "EMAIL", "ADMIN", "DISABLED"]
    assert "Boss@x.org" in table[1] and "never" in table[1]


def test_create_refusals(settings: Settings, at_a_terminal: None) -> None:
    create(settings, "A@x.org")
    duplicate = user(settings, "create", "--email", "a@X.org", "--password-stdin", stdin=PASSWORD + "\n")
    assert duplicate.exit_code == 1
    assert duplicate.stderr.startswith("error: ") and "exists already" in duplicate.stderr
    short = user(settings, "create", "--email", "b@x.org", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1
    assert "error: the password must be at least 8 characters long" in short.stderr
    # At the prompt a short password is asked for again instead of ending the command.
    retried = user(settings, "create", "--email", "c@x.org", stdin=f"short\n{PASSWORD}\n{PASSWORD}\n")
    assert retried.exit_code == 0, retried.output
    assert "at least 8 characters" in retried.stderr
    assert set(listed(settings)) == {"A@x.org", "c@x.org"}


def test_without_a_terminal_the_password_must_come_on_stdin(settings: Settings) -> None:
    result = user(settings, "create", "--email", "b@x.org", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 2
    assert "--password-stdin" in result.stderr
    assert listed(settings) == {}


async def test_disable_ends_sessions_and_tokens_and_enable_restores_the_account(
    settings: Settings, client: Client
) -> None:
    await off_loop(create, settings, "pat@x.org")
    assert await log_in(client, "pat@x.org", PASSWORD) == 303
    assert await logged_in(client)
    token = await api_token(settings, "pat@x.org")
    assert await me_status(client, token) == 200

    disabled = await off_loop(user, settings, "disable", "PAT@x.org")
    assert disabled.exit_code == 0, disabled.output
    assert disabled.stdout.startswith("disabled user ")
    assert not await logged_in(client)
    assert await me_status(client, token) == 401
    assert (await off_loop(listed, settings))["pat@x.org"]["disabled"] is True

    enabled = await off_loop(user, settings, "enable", "pat@x.org")
    assert enabled.exit_code == 0, enabled.output
    assert await me_status(client, token) == 200
    assert not await logged_in(client)  # the ended session stays ended
    assert await log_in(client, "pat@x.org", PASSWORD) == 303


async def test_set_password_replaces_it_and_ends_sessions(settings: Settings, client: Client) -> None:
    await off_loop(create, settings, "kim@x.org")
    assert await log_in(client, "kim@x.org", PASSWORD) == 303
    result = await off_loop(user, settings, "set-password", "kim@x.org", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert not await logged_in(client)
    assert await log_in(client, "kim@x.org", PASSWORD) == 401
    assert await log_in(client, "kim@x.org", NEW_PASSWORD) == 303
    missing = await off_loop(user, settings, "set-password", "nobody@x.org", "--password-stdin", stdin=NEW_PASSWORD)
    assert missing.exit_code == 1 and "error: no account has the email address" in missing.stderr


@pytest.mark.parametrize("images", ["--delete-images", "--keep-images"])
async def test_delete_deletes_or_keeps_images(settings: Settings, client: Client, images: str) -> None:
    await off_loop(create, settings, "lee@x.org")
    token = await api_token(settings, "lee@x.org")
    uploaded = {}
    for visibility in ("public", "private"):
        response = await client.post(
            "/api/v1/images",
            files={"file": ("red.png", png_bytes(), "image/png")},
            data={"visibility": visibility},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text
        uploaded[visibility] = response.json()["id"]

    result = await off_loop(user, settings, "delete", "lee@x.org", images, "--yes")
    assert result.exit_code == 0, result.output
    # Only a server's in-process cache (no Redis) is out of the command's reach.
    assert ("note: a running `chitram`" in result.stderr) == (not settings.cache.redis_url)
    if images == "--delete-images":
        assert result.stdout.rstrip().endswith("2 image(s) deleted")
        assert (await client.get(f"/api/v1/images/{uploaded['public']}")).status_code == 404
    else:
        assert result.stdout.rstrip().endswith("1 image(s) deleted, 1 kept online without an owner")
        assert (await client.get(f"/api/v1/images/{uploaded['public']}")).status_code == 200
    assert (await client.get(f"/api/v1/images/{uploaded['private']}")).status_code == 404
    assert await me_status(client, token) == 401
    assert await off_loop(listed, settings) == {}


def test_delete_asks_what_happens_to_images_and_for_confirmation(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(settings, "sam@x.org")
    for flags in ([], ["--delete-images", "--keep-images"]):
        unclear = user(settings, "delete", "sam@x.org", "--yes", *flags)
        assert unclear.exit_code == 2 and "exactly one of --delete-images and --keep-images" in unclear.stderr
    unattended = user(settings, "delete", "sam@x.org", "--keep-images", stdin="y\n")
    assert unattended.exit_code == 2 and "add --yes" in unattended.stderr

    monkeypatch.setattr(admin, "_stdin_is_a_terminal", lambda: True)
    declined = user(settings, "delete", "sam@x.org", "--keep-images", stdin="n\n")
    assert declined.exit_code == 1 and "nothing was deleted" in declined.stderr
    assert "Delete user" in declined.stderr and "sam@x.org" in declined.stderr
    assert "sam@x.org" in listed(settings)
    confirmed = user(settings, "delete", "sam@x.org", "--delete-images", stdin="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert listed(settings) == {}


def console_script(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed `chitram-admin`, its stdin a pipe (not a terminal) carrying the password."""
    return subprocess.run(
        [str(BIN / "chitram-admin"), *args],
        input=PASSWORD + "\n",
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_console_script_takes_the_password_from_stdin(settings: Settings, tmp_path: Path) -> None:
    created = console_script(
        "user", "create", "--email", "ops@x.org", "--password-stdin", env=settings_env(settings), cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    assert PASSWORD not in " ".join(created.args) + created.stdout + created.stderr

    async def stored_password_matches() -> bool:
        async with admin.open_services(settings) as (accounts, _images):
            found = await accounts.find_user("ops@x.org")
            return await accounts.passwords.verify(found.password_hash, PASSWORD)

    assert asyncio.run(stored_password_matches())  # the line ending was not taken as part of it


def test_the_console_script_refuses_to_prompt_without_a_terminal(tmp_path: Path) -> None:
    # The refusal comes before settings or the database: no stack needed, and no hang on a prompt.
    refused = console_script("user", "create", "--email", "ops@x.org", env=clean_env(), cwd=tmp_path)
    assert refused.returncode == 2
    assert "--password-stdin" in refused.stderr


def test_an_unmigrated_database_points_to_db_upgrade(tmp_path: Path) -> None:
    no_file = CliRunner().invoke(admin.cli, ["user", "list"], env=clean_env(CHITRAM_DATA_DIR=str(tmp_path / "none")))
    assert no_file.exit_code == 1 and "chitram-admin db upgrade" in no_file.stderr
    assert not (tmp_path / "none").exists()  # nothing created at a mistyped path
    (tmp_path / "chitram.db").touch()
    empty = CliRunner().invoke(admin.cli, ["user", "list"], env=clean_env(CHITRAM_DATA_DIR=str(tmp_path)))
    assert empty.exit_code == 1
    assert "not migrated" in empty.stderr and "chitram-admin db upgrade" in empty.stderr


def test_an_unmigrated_postgres_database_points_to_db_upgrade(tmp_path: Path, postgres: PostgresService) -> None:
    name = f"chitram_empty_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    try:
        env = clean_env(CHITRAM_DATA_DIR=str(tmp_path), CHITRAM_DATABASE_URL=postgres.asyncpg_url(name))
        result = CliRunner().invoke(admin.cli, ["user", "list"], env=env)
    finally:
        postgres.drop_database(name)
    assert result.exit_code == 1
    assert "not migrated" in result.stderr and "chitram-admin db upgrade" in result.stderr


def test_every_user_command_explains_itself() -> None:
    group = admin.user_group
    assert set(group.commands) == {"create", "list", "disable", "enable", "delete", "set-password"}
    for name in group.commands:
        result = CliRunner().invoke(admin.cli, ["user", name, "--help"])
        assert result.exit_code == 0, result.output
        help_text = result.stdout.split("Options:")[0].split("\n", 1)[1]
        assert len(help_text.strip()) > 30, name
