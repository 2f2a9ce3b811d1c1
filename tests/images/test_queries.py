"""The gallery page is a keyset walk down an index, so its cost does not grow with the table."""

from __future__ import annotations

from litestar import Litestar
from sqlalchemy import select, text

from chitram.images.models import Image, Visibility
from tests.images.test_services import own_sessions


def page_query(after_id: int) -> str:
    statement = (
        select(Image.id)
        .where(Image.visibility == Visibility.PUBLIC.value, Image.id < after_id)
        .order_by(Image.id.desc())
        .limit(25)
    )
    return str(statement.compile(compile_kwargs={"literal_binds": True}))


async def test_public_page_walks_the_index_without_sorting(app: Litestar, stack: str) -> None:
    async with own_sessions(app) as session:
        if stack == "embedded":
            plan = " ".join(str(row) for row in (await session.execute(text("EXPLAIN QUERY PLAN " + page_query(1000)))))
            assert "ix_images_visibility_id" in plan
            assert "TEMP B-TREE" not in plan  # no sort step
        else:
            # An empty table would be read sequentially; forbid that to see the plan at scale.
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            rows = (await session.execute(text("EXPLAIN " + page_query(1000)))).scalars().all()
            plan = "\n".join(rows)
            assert "ix_images_visibility_id" in plan, plan
            assert "Sort" not in plan, plan
