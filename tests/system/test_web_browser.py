"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright): sign in with a
token, see the jobs, open a run's output, click "Run now" and watch the new run appear without a reload,
pause and resume a job, and stop a running run.

Screenshots go to the test's directory; with TASKSERVER_SCREENSHOTS=DIR they are also copied there (that is
how docs/screenshots/ was made).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from daemonlab import Daemon, cli, wait_for, write_config
from weblab import token, web_home, web_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (scripts/test.sh installs it)")


def test_dashboard_in_chromium(tmp_path: Path) -> None:
    with web_home(tmp_path) as (base, server):
        _dashboard(tmp_path, write_config(base / "cfg.yaml", {
            "nightly-export": {"cron": "30 2 * * *", "command": ["/bin/echo", "exported 42 rows"]},
            "cleanup": {"every": "1h", "command": ["/bin/sh", "-c", "echo cleaning; exit 3"]},
            "reindex": {"command": ["/bin/sleep", "300"], "queue": "search"},
        }, server={"stop_timeout": "2s", **server}))


def _dashboard(tmp_path: Path, cfg: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    tok = token(cfg, "ops")
    daemon = Daemon(cfg)
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        first = cli(cfg, "jobs", "run", "nightly-export").stdout.strip()
        cli(cfg, "jobs", "run", "cleanup")
        with web_server(cfg) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(base + "/")
            expect(page).to_have_url(re.compile(r"/login$"))
            page.get_by_label("API token").fill(tok)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("tr[data-job='nightly-export']")).to_be_visible()
            expect(page.locator("tr[data-job='cleanup']")).to_contain_text("ERR", timeout=30_000)
            expect(page.locator("svg.timeline rect").first).to_be_visible()
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

            page.locator(f"table.runs a:text-is('{first}')").click()
            expect(page.locator("#output")).to_contain_text("exported 42 rows")
            page.screenshot(path=str(shots / "run.png"))
            page.go_back()

            before = page.locator("table.runs tbody tr").count()
            page.get_by_role("button", name="run nightly-export now").click()
            expect(page.locator("#msg")).to_contain_text("queued run")
            expect(page.locator("table.runs tbody tr")).to_have_count(before + 1, timeout=30_000)

            row = page.locator("tr[data-job='nightly-export']")
            page.get_by_role("button", name="pause nightly-export").click()
            expect(page.locator("#msg")).to_contain_text("nightly-export paused by ops")
            expect(row).to_contain_text("paused by ops")
            page.screenshot(path=str(shots / "paused.png"), full_page=True)
            page.get_by_role("button", name="resume nightly-export").click()
            expect(page.locator("#msg")).to_contain_text("nightly-export resumed")
            expect(row).not_to_contain_text("paused")
            expect(page.get_by_role("button", name="pause nightly-export")).to_be_visible()

            slow = cli(cfg, "jobs", "run", "reindex").stdout.strip()
            stop = page.get_by_role("button", name=f"cancel run {slow}")
            expect(stop).to_have_text("Stop", timeout=30_000)  # shown once the run is RUN
            stop.click()
            expect(page.locator("#msg")).to_contain_text(f"stopping run {slow}")
            stopped = page.locator("table.runs tbody tr").filter(has_text="cancelled by ops")
            expect(stopped).to_have_count(1, timeout=30_000)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            page.screenshot(path=str(shots / "phone.png"), full_page=True)
            browser.close()
        wait_for(lambda: len([r for r in cli(cfg, "jobs", "history", "nightly-export").stdout.splitlines()
                              if " OK" in r]) >= 2, "the clicked run to end OK")
    finally:
        daemon.stop()
    dest = os.environ.get("TASKSERVER_SCREENSHOTS")
    if dest:
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(dest) / png.name)
