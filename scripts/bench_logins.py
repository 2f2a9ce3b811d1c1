"""Benchmark: an honest login while 40 failing sources keep guessing (docs/decisions/0008-login-brakes.md).

Runs the embedded app in this process (real argon2, real CSRF) and prints the honest login's
median time alone (the yardstick) and under attack, and their ratio; the goal is at most 2x.

    uv run python scripts/bench_logins.py [--attackers 40] [--rounds 7] [--one-lane]

--one-lane treats every source as clean (one first-come queue, as before the slow lane), for comparison.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from chitram.accounts.services import AccountLimits, AccountService
from chitram.app import create_app
from chitram.settings import LimitSettings, ServerSettings, Settings

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


async def client(app: object, ip: str) -> tuple[httpx.AsyncClient, str]:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))  # type: ignore[arg-type]
    http = httpx.AsyncClient(transport=transport, base_url="http://bench.local", timeout=120)
    page = await http.get("/login", headers={"accept": "text/html"})
    found = _CSRF.search(page.text)
    assert found, page.text
    return http, found.group(1)


async def log_in(http: httpx.AsyncClient, token: str, password: str) -> int:
    form = {"email": "owner@example.com", "password": password, "next": "/", "_csrf_token": token}
    return (await http.post("/login", data=form, headers={"accept": "text/html"})).status_code


async def timed_login(http: httpx.AsyncClient, token: str) -> float:
    started = time.perf_counter()
    status = await log_in(http, token, PASSWORD)
    assert status == 303, status
    return time.perf_counter() - started


async def main(attackers: int, rounds: int, one_lane: bool) -> None:
    with tempfile.TemporaryDirectory() as data:
        limits = LimitSettings(
            login_failures_per_account=10**6, login_failures_per_ip=10**6, login_failures_per_account_and_ip=10**6
        )
        settings = Settings(server=ServerSettings(data_dir=Path(data)), limits=limits)
        app = create_app(settings)
        if one_lane:

            async def never_failing(self: AccountService, client_ip: str) -> bool:
                return False

            AccountService._is_failing = never_failing  # type: ignore[method-assign]
        async with app.lifespan():
            async with app.state.database.sessions() as db:
                await app.state.account_service_factory(db).register("owner@example.com", PASSWORD)
            # The owner logs in from a clean address in a new browser each time (no trusted
            # device): the hard case. A trusted device jumps the queue too.
            owners = [await client(app, f"198.51.100.{n}") for n in range(1, rounds + 1)]
            alone = [await timed_login(http, token) for http, token in owners[:rounds]]

            guessers = [await client(app, f"203.0.113.{n}") for n in range(1, attackers + 1)]
            per_ip = AccountLimits.from_settings(limits).per_ip
            for n in range(1, attackers + 1):  # an attack under way: each source has failed before
                await app.state.limiter.count(per_ip, f"203.0.113.{n}")
            stop = anyio.Event()
            guesses = 0

            async def guess(http: httpx.AsyncClient, token: str) -> None:
                nonlocal guesses
                while not stop.is_set():
                    await log_in(http, token, "wrong password")
                    guesses += 1

            owners = [await client(app, f"198.51.101.{n}") for n in range(1, rounds + 1)]
            async with anyio.create_task_group() as group:
                for http, token in guessers:
                    group.start_soon(guess, http, token)
                await anyio.sleep(1)  # let the guesses fill the queue before measuring
                attacked = [await timed_login(http, token) for http, token in owners]
                stop.set()
    base, under = statistics.median(alone), statistics.median(attacked)
    alone_ms, attacked_ms = [round(t * 1000) for t in alone], [round(t * 1000) for t in attacked]
    print(f"honest login alone:               median {base * 1000:7.1f} ms  {alone_ms}")
    print(f"with {attackers} failing sources guessing: median {under * 1000:7.1f} ms  {attacked_ms}")
    print(f"ratio: {under / base:.2f}x (goal: at most 2x); {guesses} wrong guesses checked meanwhile")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--one-lane", action="store_true", help="no slow lane (the behaviour before), to compare")
    args = parser.parse_args()
    anyio.run(main, args.attackers, args.rounds, args.one_lane)
