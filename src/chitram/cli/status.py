"""`chitram-admin status`: is everything all right, and if not, what needs attention."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from chitram.cli.common import load_settings
from chitram.settings import Settings
from chitram.system.status import StatusReport, gather_status, to_json, to_text


@click.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--notify",
    is_flag=True,
    help="Send the problems to CHITRAM_ALERT_WEBHOOK_URL when something needs attention (for cron or a timer).",
)
def status_command(as_json: bool, notify: bool) -> None:
    """Health of every component, the newest backup, disk, storage and uploads of the last 24 h.

    Exit 0 when all is well; 1 when something needs attention (a dependency down, no verified
    backup within CHITRAM_ALERT_BACKUP_MAX_AGE_HOURS, the disk fuller than CHITRAM_ALERT_DISK_MAX_PERCENT),
    with the reasons listed first.
    """
    settings = load_settings()
    report = asyncio.run(collect(settings))
    if as_json:
        click.echo(json.dumps(to_json(report), indent=2))
    else:
        from chitram.images.sharing import human_size

        click.echo(to_text(report, human_size))
    if notify and not report.ok:
        _notify(settings, report)
    sys.exit(0 if report.ok else 1)


async def collect(settings: Settings) -> StatusReport:
    """Check the services named by the settings directly (no running app needed)."""
    from chitram.cli.admin import _direct_readiness  # the health command's checks, reused
    from chitram.db import Database

    readiness = await _direct_readiness(settings)
    if readiness.components["database"].status != "ok":
        return await gather_status(settings, readiness=readiness, database=None)
    database = Database.from_settings(settings)
    try:
        return await gather_status(settings, readiness=readiness, database=database)
    finally:
        await database.dispose()


def _notify(settings: Settings, report: StatusReport) -> None:
    from chitram.system.alerts import alert_body, send_alert

    url = settings.alerts.alert_webhook_url
    if not url:
        click.echo("warning: --notify, but CHITRAM_ALERT_WEBHOOK_URL is not set; nobody was told", err=True)
        return
    body = alert_body(
        event="status",
        ok=False,
        summary="; ".join(report.problems),
        details={"problems": report.problems, "status": to_json(report)},
    )
    failure = send_alert(url, body, timeout=settings.alerts.alert_webhook_timeout_seconds)
    if failure:
        click.echo(f"warning: {failure}", err=True)
