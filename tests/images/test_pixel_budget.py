"""Decoding memory is bounded: jobs reserve their decoded pixels from a shared budget."""

from __future__ import annotations

import anyio

from chitram.images.processing import ImageLimits, ImageProcessor, PixelBudget


async def test_big_jobs_wait_while_small_ones_fit() -> None:
    budget = PixelBudget(100)
    events: list[str] = []
    release_big = anyio.Event()
    big_started = anyio.Event()

    async def big(name: str) -> None:
        async with budget.reserve(80):
            events.append(f"{name} in")
            big_started.set()
            await release_big.wait()
            events.append(f"{name} out")

    async def small() -> None:
        async with budget.reserve(15):
            events.append("small in")

    async with anyio.create_task_group() as group:
        group.start_soon(big, "first")
        await big_started.wait()
        group.start_soon(big, "second")
        await anyio.sleep(0.05)
        group.start_soon(small)
        await anyio.sleep(0.05)
        assert events == ["first in", "small in"]  # the second big one waits, the small one fits
        assert budget.in_use == 80
        release_big.set()
    assert events == ["first in", "small in", "first out", "second in", "second out"]
    assert budget.in_use == 0


async def test_a_job_larger_than_the_budget_runs_alone_instead_of_forever_waiting() -> None:
    budget = PixelBudget(10)
    async with budget.reserve(1_000):
        assert budget.in_use == 10
    assert budget.in_use == 0


async def test_cancelled_waiters_do_not_leak_budget() -> None:
    budget = PixelBudget(10)
    async with budget.reserve(10):
        with anyio.move_on_after(0.05):
            async with budget.reserve(5):
                raise AssertionError("must not get in while the budget is full")
    assert budget.in_use == 0


def test_processor_budget_is_one_largest_animation() -> None:
    processor = ImageProcessor(limits=ImageLimits(max_total_pixels=250_000_000), concurrency=2)
    assert processor.budget.total == 250_000_000
