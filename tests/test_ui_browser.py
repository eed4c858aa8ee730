"""``batchframe ui`` in a real browser: Debian's Chromium driven by Playwright, against the real CLI server.

These tests never skip: CI installs chromium (``.ci/run``). Screenshots of every page are written to
``tests/artifacts/ui/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "ui"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
URL = re.compile(r"http://127\.0\.0\.1:\d+/\?token=[\w-]+")

JOB = """
import asyncio, datetime, enum
from pathlib import Path
from batchframe import BatchframeParam, Service, Source


class Mode(enum.Enum):
    FAST = "fast"
    CAREFUL = "careful"


class Numbers(Source[int]):
    def __init__(
        self,
        count: BatchframeParam[int],
        label: BatchframeParam[str] = "numbers",
        since: BatchframeParam[datetime.date] = datetime.date(2026, 1, 1),
        extra: BatchframeParam[list[int]] = [],
    ) -> None:
        self.count = count
        self.extra = list(extra)

    def __len__(self):
        return self.count + len(self.extra)

    def __iter__(self):
        yield from range(self.count)
        yield from self.extra


class Work(Service[int]):
    def __init__(
        self,
        mode: BatchframeParam[Mode] = Mode.FAST,
        delay: BatchframeParam[float] = 0.0,
        fail_every: BatchframeParam[int | None] = None,
        healed: BatchframeParam[Path] = Path("healed"),
        loud: BatchframeParam[bool] = False,
    ) -> None:
        self.delay = delay
        self.fail_every = fail_every
        self.healed = healed

    async def process(self, item):
        await asyncio.sleep(self.delay)
        if self.fail_every and item % self.fail_every == 0 and not self.healed.exists():
            raise ValueError(f"item {item} is not welcome")
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "The UI tests need Debian's Chromium: apt-get install -y chromium"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[*args, "--disable-sync"])
        yield chromium
        chromium.close()


class UI:
    """A ``batchframe ui`` server started from the real CLI, and the URL it printed."""

    def __init__(self, project: Path, out: Path) -> None:
        self.project, self.out = project, out
        command = [sys.executable, "-m", "batchframe", "ui", str(project), "-d", str(out), "--no-browser"]
        self.process = subprocess.Popen(
            [*command, "--port", "0"],  # the server binds a free port and prints it: no race with other tests
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.url = self._printed_url()

    def _printed_url(self) -> str:
        assert self.process.stdout is not None
        seen = []
        for line in self.process.stdout:
            seen.append(line)
            found = URL.search(line)
            if found:
                return found.group(0)
        raise AssertionError(f"batchframe ui printed no URL: {''.join(seen)}")

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def ui(make_project: Callable[..., Path], tmp_path: Path) -> Iterator[UI]:
    server = UI(make_project({"job.py": JOB}), tmp_path / "out")
    yield server
    server.close()


def _page(browser: Any, ui: UI, viewport: dict[str, int] = DESKTOP) -> Any:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(ui.url)
    return page


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _wait_text(page: Any, selector: str, pattern: str) -> str:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_contain_text(re.compile(pattern), timeout=30_000)
    return str(page.locator(selector).inner_text())


def _count(page: Any) -> int:
    text = page.locator("#run-count").inner_text()
    return int(text.split("/")[0].strip().replace(",", ""))


@pytest.mark.timeout(120)
def test_a_generated_form_starts_a_run_that_completes(browser: Any, ui: UI) -> None:
    page = _page(browser, ui)
    assert page.url.endswith("/start")
    assert page.context.cookies()[0]["httpOnly"]
    _shot(page, "start-desktop")
    # Each control: the parameter's name first, then its type; the required one marked.
    assert re.match(r"count\s+int\s+required", page.locator("label[for$=count]").inner_text(), re.IGNORECASE)
    assert page.locator("[name=label]").input_value() == "numbers"
    assert page.locator("[name=since]").get_attribute("type") == "date"
    assert page.locator("[name=since]").input_value() == "2026-01-01"
    assert page.locator("select[name=mode] option").all_inner_texts()[-2:] == ["FAST", "CAREFUL"]
    assert page.locator("[name=loud]").get_attribute("type") == "checkbox"
    assert page.locator("[name=fail_every__unset]").count() == 1
    assert page.locator("details.runtime [name=concurrency]").count() == 1

    page.locator("[name=count]").fill("25")
    page.locator("[name=extra]").fill("100\n101")
    page.locator("select[name=mode]").select_option("CAREFUL")
    page.locator("[name=loud]").check()
    page.get_by_role("button", name="Start run").click()

    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    _wait_text(page, "#run-state", r"finished: completed")
    assert page.locator("#run-count").inner_text().replace(" ", "") == "27/27"
    _shot(page, "run-completed-desktop")
    folder = page.url.rsplit("/", 1)[1]
    assert (ui.out / folder / "summary.json").exists()

    page.get_by_role("link", name="Runs").click()
    page.get_by_role("link", name=folder).click()
    assert page.url.endswith(f"/runs/{folder}")


@pytest.mark.timeout(120)
def test_a_bad_value_is_shown_next_to_its_field_and_kept(browser: Any, ui: UI) -> None:
    page = _page(browser, ui)
    page.locator("[name=count]").fill("3")
    page.locator("[name=extra]").fill("7\nseven")
    page.get_by_role("button", name="Start run").click()
    error = page.locator(".field:has([name=extra]) .error")
    assert "expects list[int]" in error.inner_text()
    assert page.locator("[name=extra]").input_value() == "7\nseven"
    assert page.locator("[name=count]").input_value() == "3"
    _shot(page, "start-error-desktop")
    assert not ui.out.exists() or not any(ui.out.iterdir())  # no run was started


def _start_slow_run(browser: Any, ui: UI, *, concurrency: int) -> Any:
    """From the form: 3,000 items of 20 ms at ``concurrency``; the page once the run is running."""
    page = _page(browser, ui)
    page.locator("[name=count]").fill("3000")
    page.locator("[name=delay]").fill("0.02")
    page.locator("details.runtime summary").click()
    page.locator("[name=concurrency]").fill(str(concurrency))
    page.get_by_role("button", name="Start run").click()
    _wait_text(page, "#run-state", r"running")
    return page


@pytest.mark.timeout(120)
def test_pause_resume_and_stop_a_running_run(browser: Any, ui: UI) -> None:
    page = _start_slow_run(browser, ui, concurrency=2)

    page.get_by_role("button", name="Pause").click()
    _wait_text(page, "#run-state", r"paused")
    held = _count(page)
    time.sleep(1.2)  # paused: in-flight items have finished and no new one starts
    assert _count(page) == held
    _shot(page, "run-paused-desktop")

    page.get_by_role("button", name="Resume").click()
    _wait_text(page, "#run-state", r"running")
    deadline = time.monotonic() + 20
    while _count(page) <= held and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _count(page) > held

    page.get_by_role("button", name="Stop").click()
    _wait_text(page, "#run-state", r"finished: stopped")
    assert _count(page) < 3000
    assert page.get_by_role("button", name="Pause").count() == 0
    assert page.get_by_role("button", name="Resume").count() == 1  # a stopped run can be resumed


@pytest.mark.timeout(120)
def test_tune_a_running_run_from_its_page(browser: Any, ui: UI) -> None:
    page = _start_slow_run(browser, ui, concurrency=4)
    assert page.locator("#run-limit").inner_text() == "none"
    assert page.locator("#run-concurrency").inner_text() == "4"

    page.locator("details.tune summary").click()
    page.locator("#tune-max_per_second").fill("fast")
    page.get_by_role("button", name="Apply").click()
    assert "expects float | None" in page.locator(".problem").inner_text()  # refused as -p refuses it

    page.locator("details.tune summary").click()
    page.locator("#tune-max_per_second").fill("40")
    page.locator("#tune-concurrency").fill("2")
    page.locator("#tune-adaptive").select_option("true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#controls").screenshot(path=str(ARTIFACTS / "run-tune-panel.png"))  # docs/images/ui-tuned.png
    page.get_by_role("button", name="Apply").click()
    _wait_text(page, "#run-limit", r"^40/s \(adaptive\)$")
    assert page.locator("#run-concurrency").inner_text() == "2"
    _shot(page, "run-tuned-desktop")
    folder = page.url.rsplit("/", 1)[1]
    logs = (ui.out / folder / "logs.txt").read_text()
    assert "Limits tuned (concurrency: 4 -> 2; max_per_second: none -> 40; adaptive: false -> true)." in logs
    page.get_by_role("button", name="Stop").click()
    _wait_text(page, "#run-state", r"finished: stopped")
    assert page.locator("details.tune").count() == 0  # a finished run has no limits to tune


@pytest.mark.timeout(120)
def test_a_finished_run_shows_its_report_chart_and_downloads(browser: Any, ui: UI, tmp_path: Path) -> None:
    page = _page(browser, ui)
    page.locator("[name=count]").fill("400")
    page.locator("[name=delay]").fill("0.02")
    page.get_by_role("button", name="Start run").click()
    _wait_text(page, "#run-state", r"finished: completed")
    page.reload()  # the report is on the page of a finished run
    assert page.locator("#run-latency").inner_text().startswith("p50 ")
    chart = page.locator("#run-chart svg")
    assert chart.is_visible() and chart.bounding_box()["width"] > 200
    assert "/s" in page.locator("#run-chart").inner_text()
    _shot(page, "run-report-desktop")
    page.locator("section.report").screenshot(path=str(ARTIFACTS / "run-report.png"))  # docs/images/ui-report.png
    with page.expect_download() as download:
        page.get_by_role("link", name="summary.json").click()
    saved = tmp_path / "summary.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text())["succeeded"] == 400

    page.get_by_role("link", name="Runs").click()
    page.get_by_role("link", name="failed or killed").click()
    assert page.locator("#runs-body").inner_text().startswith("No run failed or killed")
    page.get_by_role("link", name="succeeded").click()
    folder = next(ui.out.iterdir()).name
    assert page.get_by_role("link", name=folder).count() == 1


@pytest.mark.timeout(120)
def test_a_failed_run_shows_its_failures_and_retries_on_a_phone(browser: Any, ui: UI) -> None:
    page = _page(browser, ui, PHONE)
    _shot(page, "start-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.locator("[name=count]").fill("9")
    page.locator("[name=fail_every]").fill("3")
    page.locator("[name=healed]").fill(str(ui.project / "healed"))
    page.get_by_role("button", name="Start run").click()
    _wait_text(page, "#run-state", r"finished: completed with failures")
    failures = page.locator("#failures")
    assert "ValueError" in failures.inner_text()
    assert "item 3 is not welcome" in failures.inner_text()
    _shot(page, "run-failed-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    first = page.url
    (ui.project / "healed").write_text("yes")
    page.get_by_role("button", name="Retry failed items").click()
    page.wait_for_url(lambda url: url != first and "/runs/" in url)
    _wait_text(page, "#run-state", r"finished: completed$")
    assert page.locator("#run-count").inner_text().replace(" ", "") == "3/3"


@pytest.mark.timeout(120)
def test_a_run_started_from_the_terminal_is_live_on_its_page(browser: Any, ui: UI) -> None:
    command = [sys.executable, "-m", "batchframe", "exec", str(ui.project / "job.py"), "-d", str(ui.out)]
    terminal = subprocess.Popen(
        [*command, "--no-input", "-p", "count=4000", "-p", "delay=0.02", "-p", "concurrency=2"],
        cwd=ui.project,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = _page(browser, ui)
        deadline = time.monotonic() + 20
        while not (ui.out.exists() and any(ui.out.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        folder = next(ui.out.iterdir()).name
        page.get_by_role("link", name="Runs").click()
        _shot(page, "runs-desktop")
        page.get_by_role("link", name=folder).click()
        _wait_text(page, "#run-state", r"running")
        first = _count(page)
        deadline = time.monotonic() + 20
        while _count(page) <= first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(page) > first  # the page follows the run live
        page.get_by_role("button", name="Stop").click()
        assert terminal.wait(timeout=30) == 130
        _wait_text(page, "#run-state", r"finished: stopped")
    finally:
        terminal.kill()
        terminal.wait()


SECRET_JOB = """
import asyncio
from batchframe import BatchframeParam, Secret, Service, Source


class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 30) -> None:
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        yield from range(self.count)


class Work(Service[int]):
    def __init__(self, api_token: BatchframeParam[Secret], delay: BatchframeParam[float] = 0.1) -> None:
        self.api_token, self.delay = api_token, delay

    async def process(self, item):
        await asyncio.sleep(self.delay)
        if not self.api_token.get_secret_value().startswith("tok-"):
            raise ValueError(f"{self.api_token} is not a token")
"""


@pytest.fixture
def secret_ui(make_project: Callable[..., Path], tmp_path: Path) -> Iterator[UI]:
    server = UI(make_project({"job.py": SECRET_JOB}), tmp_path / "out")
    yield server
    server.close()


@pytest.mark.timeout(120)
def test_a_secret_typed_in_a_password_field_reaches_the_run_and_nothing_else(browser: Any, secret_ui: UI) -> None:
    secret = "tok-" + os.urandom(12).hex()
    page = _page(browser, secret_ui)
    field = page.locator("[name=api_token]")
    assert (field.get_attribute("type"), field.get_attribute("autocomplete")) == ("password", "off")
    field.fill(secret)
    page.locator("details.runtime summary").click()
    page.locator("[name=concurrency]").fill("1")
    _shot(page, "start-secret-desktop")
    page.get_by_role("button", name="Start run").click()

    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    _wait_text(page, "#run-state", r"running")
    folder = secret_ui.out / page.url.rsplit("/", 1)[1]
    pid = int(json.loads((folder / "status.json").read_text())["pid"])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"exec" in argv and not any(secret.encode() in arg for arg in argv)
    assert f"BATCHFRAME_PARAM_API_TOKEN={secret}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            assert secret.encode() not in cmdline.read_bytes(), cmdline

    _wait_text(page, "#run-state", r"finished: completed")  # the service checked the token it got
    assert page.locator("#run-count").inner_text().replace(" ", "") == "30/30"
    assert secret not in page.content()
    page.get_by_role("link", name="Runs").click()
    assert secret not in page.content()
    page.get_by_role("link", name="Start a run").click()
    assert page.locator("[name=api_token]").input_value() == ""  # never filled in again
    assert secret not in page.content()
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def _click_on(page: Any, selector: str) -> None:
    """A mouse click in the middle of what ``selector`` finds, on whatever is on top there (as a person clicks)."""
    box = page.locator(selector).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _fits(page: Any) -> None:
    """The runs table is no wider than its box (nothing scrolls sideways) and the page no wider than the window."""
    table = page.locator("table.runs").bounding_box()
    box = page.locator(".table-wrap")
    inner = box.evaluate("element => element.clientWidth")
    assert table["width"] <= inner, (table["width"], inner)
    assert box.evaluate("element => element.scrollWidth <= element.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


@pytest.mark.timeout(120)
def test_the_runs_table_fits_the_page_and_a_row_opens_its_run(browser: Any, ui: UI, tmp_path: Path) -> None:
    from helpers import batchframe_cli

    long_name = ui.project / ("a_project_with_a_name_long_enough_to_push_a_table_column_wide_" * 2 + "job.py")
    long_name.write_text((ui.project / "job.py").read_text())
    args = ("-d", ui.out, "--no-input", "-p", f"healed={tmp_path / 'never-healed'}")
    assert (
        batchframe_cli("exec", "job.py", *args, "-p", "count=4", "-p", "fail_every=2", cwd=ui.project).returncode == 3
    )
    first = next(ui.out.iterdir())
    assert batchframe_cli("retry", first, "--no-input", cwd=ui.project).returncode == 3  # 0 succeeded, 2 failed
    retry = next(p for p in ui.out.iterdir() if p != first)
    assert batchframe_cli("exec", long_name, *args, "-p", "count=2", cwd=ui.project).returncode == 0
    good = next(p for p in ui.out.iterdir() if p not in (first, retry))

    page = _page(browser, ui)
    page.get_by_role("link", name="Runs").click()
    page.wait_for_url(re.compile(r"/runs$"))
    _shot(page, "runs-table-desktop")
    _fits(page)
    headers = page.locator("table.runs thead th").all_inner_texts()
    assert headers[0].strip().lower() == "run"  # the run's name first
    ok_green = page.locator(f"tr:has(a[href='/runs/{good.name}']) td.state").evaluate("e => getComputedStyle(e).color")
    retry_state = page.locator(f"tr:has(a[href='/runs/{retry.name}']) td.state")
    assert retry_state.inner_text() == "completed with failures"
    assert retry_state.evaluate("e => getComputedStyle(e).color") != ok_green  # not green: nothing succeeded

    # A click anywhere on the row (here on its project cell, where a person would click) opens the run.
    _click_on(page, f"tr:has(a[href='/runs/{retry.name}']) td[data-label=project]")
    page.wait_for_url(re.compile(rf"/runs/{re.escape(retry.name)}$"))
    _wait_text(page, "#run-state", r"finished: completed with failures")
    assert page.locator("#run-state").evaluate("e => getComputedStyle(e).color") != ok_green

    # From the keyboard: the name is a link; Enter on it opens the run.
    page.go_back()
    page.wait_for_url(re.compile(r"/runs$"))
    page.locator(f"a[href='/runs/{good.name}']").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/runs/{re.escape(good.name)}$"))

    narrow = _page(browser, ui, {"width": 800, "height": 800})
    narrow.goto(ui.url.split("/?")[0] + "/runs")
    _shot(narrow, "runs-table-800")
    _fits(narrow)
    cut = narrow.locator(f"tr:has(a[href='/runs/{good.name}']) td[data-label=project]")
    assert cut.get_attribute("title") == str(long_name)  # a cell cut short has its whole text in its title
    _click_on(narrow, f"tr:has(a[href='/runs/{first.name}']) td[data-label=failed]")
    narrow.wait_for_url(re.compile(rf"/runs/{re.escape(first.name)}$"))
