"""The web app of ``batchframe ui``: security, the form, runs launched for real, the run and runs pages."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import batchframe_cli, only_run_dir

from batchframe.runfolder.live import LAUNCH_ID_ENV, RunStatus
from batchframe.ui import _launch
from batchframe.ui._security import CONTENT_SECURITY_POLICY
from batchframe.ui.app import UISettings, create_app

with warnings.catch_warnings():
    # Starlette 1.x would rather its TestClient ran on httpx2; httpx (what `dev` installs) works the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

BASE = "http://127.0.0.1:8765"
TOKEN = "test-token-0123456789"

WIDGETS = """
import asyncio
import datetime as dt
import enum
from pathlib import Path
from typing import Annotated, Literal, Optional

from batchframe import BatchframeParam, Service, Source, inject


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@inject
class Numbers(Source[int]):
    \"\"\"Numbers to square.

    Args:
        count: how many numbers
        fail_on: the number that fails
    \"\"\"

    def __init__(
        self,
        who: Annotated[str, BatchframeParam, "who runs it"],
        count: BatchframeParam[int] = 5,
        fail_on: BatchframeParam[int] = -1,
        ratio: BatchframeParam[float] = 0.5,
        dry_run: BatchframeParam[bool] = False,
        since: BatchframeParam[dt.date] = dt.date(2026, 1, 2),
        at: BatchframeParam[dt.datetime] = dt.datetime(2026, 1, 2, 3, 4, 5),
        color: BatchframeParam[Color] = Color.BLUE,
        mode: BatchframeParam[Literal["fast", "slow"]] = "fast",
        folder: BatchframeParam[Path] = Path("data"),
        tags: BatchframeParam[list[int]] = [1, 2],
        limit: BatchframeParam[Optional[int]] = None,
    ):
        self.count, self.fail_on = count, fail_on

    def __len__(self):
        return self.count

    def __iter__(self):
        yield from range(self.count)


@inject
class Square(Service[int]):
    def __init__(self, source: Source[int]):
        self.source = source

    async def process(self, item):
        if item == self.source.fail_on:
            raise ValueError(f"no square for {item}")
"""

SLOW = """
import asyncio

from batchframe import BatchframeParam, Service, Source, inject


@inject
class Items(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 1000):
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        yield from range(self.count)


@inject
class Slow(Service[int]):
    def __init__(self, source: Source[int]):
        self.source = source

    async def process(self, item):
        await asyncio.sleep(0.02)
"""

TINY = """
from batchframe import Service, Source, inject


@inject
class Items(Source[int]):
    def __iter__(self):
        yield from range(3)


@inject
class Work(Service[int]):
    def __init__(self, source: Source[int]):
        self.source = source

    def process(self, item):
        pass
"""

CONFIGS = {
    "job.py": TINY,
    "config/__init__.py": """
        from dataclasses import dataclass
        from typing import Annotated
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class JobConfig(Configuration):
            greeting: Annotated[str, BatchframeParam, "what to say"] = "hello"
    """,
    "config/config_dev.py": """
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class DevConfig(JobConfig):
            greeting: str = "hi from dev"
    """,
    "config/config_prod.py": """
        from dataclasses import dataclass
        from . import JobConfig

        @dataclass
        class ProdConfig(JobConfig):
            greeting: str = "hi from prod"
    """,
}

BROKEN = """
from batchframe import Service, Source, inject


@inject
class Items(Source[int]):
    def __init__(self):
        raise RuntimeError("no database here")

    def __iter__(self):
        yield 1


@inject
class Work(Service[int]):
    def __init__(self, source: Source[int]):
        self.source = source

    def process(self, item):
        pass
"""


FLAKY_ALWAYS = """
from batchframe import BatchframeParam, Service, Source, inject


@inject
class Items(Source[int]):
    def __init__(self, bad: BatchframeParam[int] = 3):
        self.bad = bad

    def __len__(self):
        return 4

    def __iter__(self):
        yield from range(4)


@inject
class Work(Service[int]):
    def __init__(self, source: Source[int]):
        self.source = source

    def process(self, item):
        if item == self.source.bad:
            raise ValueError(f"{item} always fails")
"""


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def open_ui(tmp_path: Path, output_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """``open_ui(project)``: a TestClient of the app, logged in with the token unless ``login=False``."""
    with ExitStack() as stack:

        def open_(project: Path | None = None, *, config: str | None = None, login: bool = True) -> TestClient:
            settings = UISettings(output_dir=output_dir, project=project, config=config, token=TOKEN, workdir=tmp_path)
            client = stack.enter_context(TestClient(create_app(settings), base_url=BASE, follow_redirects=False))
            if login:
                assert client.get(f"/?token={TOKEN}").status_code == 303
            return client

        yield open_


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, "no csrf field"
    return match.group(1)


def post(client: TestClient, url: str, data: dict[str, list[str] | str], page: str):
    """POST like the page's own form: same origin, its CSRF token."""
    return client.post(url, data={**data, "csrf": csrf_of(page)}, headers={"origin": BASE})


class _BrowserForm(HTMLParser):
    """What a browser submits for the page's run form: values, checked boxes, selected options, textareas."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self._in_form = False
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None

    def add(self, name: str, value: str) -> None:
        self.values.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form" and "run-form" in a.get("class", ""):
            self._in_form = True
        if not self._in_form:
            return
        if tag == "input" and (a.get("type") != "checkbox" or "checked" in a):
            self.add(a["name"], a.get("value", "on" if a.get("type") == "checkbox" else ""))
        elif tag == "select":
            self._select, self._options = a["name"], []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea":
            self._textarea = a["name"]
            self.add(self._textarea, "")

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.values[self._textarea][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select" and self._select is not None:
            chosen = [value for value, selected in self._options if selected] or [self._options[0][0]]
            self.add(self._select, chosen[0])
            self._select = None


def browser_form(page: str) -> dict[str, list[str]]:
    parser = _BrowserForm()
    parser.feed(page)
    return parser.values


def text_of(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no #{element_id}"
    return html.unescape(match.group(1)).strip()


def wait_for_state(client: TestClient, url: str, wanted: Callable[[str], bool], timeout_s: float = 20) -> str:
    """Reload the run page until its #run-state satisfies ``wanted``; return the page."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = client.get(url).text
        if wanted(text_of(page, "run-state")):
            return page
        assert time.monotonic() < deadline, f"state stayed {text_of(page, 'run-state')!r}"
        time.sleep(0.1)


def start_run(client: TestClient, **values: str) -> str:
    """Submit the start form with its defaults and ``values``; the run page's URL."""
    page = client.get("/start").text
    form = {**browser_form(page), **{name: [value] for name, value in values.items()}}
    response = client.post("/start", data=form, headers={"origin": BASE})
    assert response.status_code == 303, response.text
    return response.headers["location"]


# ----------------------------------------------------------------------------------------- security


def test_the_token_is_exchanged_for_a_strict_http_only_cookie(open_ui) -> None:
    client = open_ui(login=False)
    response = client.get(f"/start?config=config_dev&token={TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == "/start?config=config_dev"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"batchframe_ui_8765={TOKEN};")  # per port: two servers never share a session
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert client.get("/runs").status_code == 200


def test_pages_need_the_token_or_its_cookie(open_ui) -> None:
    client = open_ui(login=False)
    refused = client.get("/runs")
    assert refused.status_code == 401
    assert "batchframe ui printed" in refused.text
    assert client.get("/runs?token=wrong").status_code == 403
    assert client.get("/static/htmx.min.js").status_code == 200  # vendored files need no session
    client.cookies.set("batchframe_ui_8765", "wrong")
    assert client.get("/runs").status_code == 403


def test_a_foreign_host_header_is_refused(open_ui) -> None:
    client = open_ui()
    rebinding = client.get("/runs", headers={"host": "attacker.example:8765"})
    assert rebinding.status_code == 400
    assert "Invalid Host header" in rebinding.text
    assert client.get("/runs", headers={"host": "127.0.0.1:9999"}).status_code == 400
    assert client.get("/runs", headers={"host": "localhost:8765"}).status_code == 200


def test_posts_need_this_origin_and_the_csrf_token(open_ui, make_project, output_dir: Path) -> None:
    client = open_ui(make_project({"job.py": TINY}) / "job.py")
    (output_dir / "2026-01-01T00-00-00").mkdir(parents=True)  # no run there: a POST that passes gets 404
    page = client.get("/start").text
    url, good = "/runs/2026-01-01T00-00-00/pause", {"csrf": csrf_of(page)}
    assert client.post(url, data=good).status_code == 403  # no Origin, no Referer
    assert client.post(url, data=good, headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post(url, data=good, headers={"origin": "null"}).status_code == 403
    assert client.post(url, data={"other": "1"}, headers={"origin": BASE}).status_code == 403
    assert client.post(url, data={"csrf": "0" * 64}, headers={"origin": BASE}).status_code == 403
    assert client.post(url, data=good, headers={"referer": f"{BASE}/runs"}).status_code == 404
    assert client.post(url, data=good, headers={"origin": BASE}).status_code == 404
    as_json = client.post(url, json=good, headers={"origin": BASE})
    assert as_json.status_code == 415


def test_every_response_carries_the_security_headers_and_no_cors(open_ui) -> None:
    client = open_ui()
    for response in (
        client.get("/runs", headers={"origin": "http://evil.example"}),
        client.get("/static/style.css"),
        open_ui(login=False).get("/runs"),
    ):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-frame-options"] == "DENY"
        assert not any(name.startswith("access-control-") for name in response.headers)
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY


def test_home_goes_to_the_form_or_to_the_runs(open_ui, make_project) -> None:
    assert open_ui().get("/").headers["location"] == "/runs"
    assert open_ui().get("/start").headers["location"] == "/runs"
    project = make_project({"job.py": TINY})
    assert open_ui(project / "job.py").get("/").headers["location"] == "/start"


# --------------------------------------------------------------------------------------- the form


def test_the_form_has_a_widget_per_parameter_type(open_ui, make_project) -> None:
    project = make_project({"job.py": WIDGETS})
    page = open_ui(project / "job.py").get("/start").text

    def control(name: str) -> str:
        match = re.search(rf'<(input|select|textarea)[^>]* id="f-{name}"[^>]*>', page)
        assert match, name
        return match.group(0)

    # The label: the name first, then the type, the required marker, the description.
    assert re.search(
        r'<label for="f-who"><span class="pname">who</span> <span class="ptype">str</span> '
        r'<span class="required">required</span> <span class="desc">who runs it</span></label>',
        page,
    )
    assert '<span class="pname">count</span> <span class="ptype">int</span> <span class="desc">how many numbers' in page
    assert 'type="number"' in control("count") and 'step="1"' in control("count") and 'value="5"' in control("count")
    assert 'type="number"' in control("ratio") and 'step="any"' in control("ratio")
    assert 'type="checkbox"' in control("dry_run") and "checked" not in control("dry_run")
    assert 'type="date"' in control("since") and 'value="2026-01-02"' in control("since")
    assert 'type="datetime-local"' in control("at") and 'value="2026-01-02T03:04:05"' in control("at")
    assert control("color").startswith("<select")
    assert '<option value="BLUE" selected>BLUE</option>' in page
    assert control("mode").startswith("<select") and '<option value="slow">slow</option>' in page
    assert 'type="text"' in control("folder") and 'value="data"' in control("folder")
    assert re.search(r'<textarea id="f-tags"[^>]*>1\n2</textarea>', page)
    # Optional: empty means the default; the "unset" box forces None.
    assert re.search(r'<input type="checkbox" id="f-limit-unset" name="limit__unset" value="true">', page)
    assert 'required aria-required="true"' in control("who") and "required" not in control("count")
    # Runtime settings in a collapsed group; then the button.
    runtime = page[page.index('<details class="runtime">') :]
    assert 'id="f-concurrency"' in runtime and 'id="f-executor"' in runtime and 'id="f-count"' not in runtime
    assert '<button type="submit">Start run</button>' in page
    # Works under the CSP: nothing inline.
    assert '<meta name="htmx-config" content=\'{"includeIndicatorStyles":false,"allowEval":false}\'>' in page
    assert "<script>" not in page and " style=" not in page and "<style" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers


def test_a_project_with_configs_has_a_config_select(open_ui, make_project) -> None:
    client = open_ui(make_project(CONFIGS))
    first = client.get("/start").text
    assert re.search(r'<select id="config" name="config">\s*<option value="config_dev" selected>', first)
    assert '<option value="config_prod">config_prod</option>' in first
    assert 'value="hi from dev"' in first
    prod = client.get("/start?config=config_prod").text
    assert '<option value="config_prod" selected>config_prod</option>' in prod
    assert 'value="hi from prod"' in prod and '<input type="hidden" name="config" value="config_prod">' in prod


def test_a_bad_value_is_shown_next_to_its_field_as_the_cli_says_it(open_ui, make_project, tmp_path: Path) -> None:
    project = make_project({"job.py": WIDGETS}) / "job.py"
    client = open_ui(project)
    form = {**browser_form(client.get("/start").text), "count": ["abc"], "who": ["me"]}
    response = client.post("/start", data=form, headers={"origin": BASE})
    assert response.status_code == 422
    message = text_of(response.text, "f-count-error")
    assert "expects int" in message and "'abc'" in message
    assert re.search(r'<input id="f-count" name="count" type="number" value="abc"', response.text)  # kept
    assert 'value="me"' in response.text
    cli = batchframe_cli("exec", project, "-p", "count=abc", "-p", "who=me", "--no-input", cwd=tmp_path)
    assert cli.returncode == 2
    assert " ".join(message.split()[:6]) in " ".join(cli.stderr.split())


# ------------------------------------------------------------------------------------------- runs


@pytest.mark.timeout(60)
def test_start_run_launches_a_real_run_and_shows_it(open_ui, make_project, output_dir: Path) -> None:
    client = open_ui(make_project({"job.py": WIDGETS}) / "job.py")
    url = start_run(client, who="me", count="7")
    folder = only_run_dir(output_dir)
    assert url == f"/runs/{folder.name}"
    page = wait_for_state(client, url, lambda state: state.startswith("finished"))
    assert text_of(page, "run-state") == "finished: completed"
    assert text_of(page, "run-count") == "7 / 7"
    assert "Run ended: completed" in page  # the log's tail
    assert "-p count=7" in page and "-p who=me" in page
    assert ">Pause<" not in page and ">Retry failed items<" not in page
    assert f'<a href="{url}">{folder.name}</a>' in client.get("/runs").text


@pytest.mark.timeout(60)
def test_the_form_starts_a_limited_run_and_refuses_a_limit_below_one(
    open_ui, make_project, output_dir: Path, launched
) -> None:
    client = open_ui(make_project({"job.py": WIDGETS}) / "job.py")
    page = client.get("/start").text
    assert re.search(r'<input id="f-run-limit" name="run-limit" type="number" min="1"', page)
    form = {**browser_form(page), "who": ["me"], "count": ["7"], "run-limit": ["0"]}
    refused = client.post("/start", data=form, headers={"origin": BASE})
    assert refused.status_code == 422
    assert "--limit expects a whole number, 1 or more, but got 0." in text_of(refused.text, "f-run-limit-error")
    assert re.search(r'<input id="f-run-limit" name="run-limit" type="number" min="1" step="1" value="0"', refused.text)
    assert not output_dir.exists() and not launched
    url = start_run(client, who="me", count="7", **{"run-limit": "3"})
    (argv, _), *_ = launched
    assert argv[argv.index("--limit") + 1] == "3"
    page = wait_for_state(client, url, lambda state: state.startswith("finished"))
    assert text_of(page, "run-state") == "finished: completed"
    assert text_of(page, "run-count") == "3 / 3"
    assert "the first 3 items" in page


@pytest.mark.timeout(60)
def test_failures_are_grouped_and_retry_makes_a_new_run(open_ui, make_project, output_dir: Path) -> None:
    client = open_ui(make_project({"job.py": WIDGETS}) / "job.py")
    url = start_run(client, who="me", fail_on="3")
    page = wait_for_state(client, url, lambda state: state.startswith("finished"))
    assert text_of(page, "run-state") == "finished: completed with failures"
    assert text_of(page, "run-count") == "5 / 5" and text_of(page, "run-failed") == "1"
    assert "<code>ValueError</code>" in page and "no square for 3" in page
    assert ">Retry failed items</button>" in page and ">Resume</button>" not in page
    response = post(client, f"{url}/retry", {}, page)
    assert response.status_code == 303, response.text
    retry_url = response.headers["location"]
    assert retry_url != url
    retried = wait_for_state(client, retry_url, lambda state: state.startswith("finished"))
    assert text_of(retried, "run-count") == "1 / 1"
    assert f'<a href="{url}">' in retried  # "retry of" links back


def test_a_project_that_cannot_start_shows_the_cli_error_on_the_form(open_ui, make_project) -> None:
    client = open_ui(make_project({"job.py": BROKEN}) / "job.py")
    response = client.post("/start", data=browser_form(client.get("/start").text), headers={"origin": BASE})
    assert response.status_code == 422
    assert "The run did not start" in response.text
    assert "RuntimeError: no database here" in response.text
    assert "╭" not in response.text and "\x1b[" not in response.text
    assert ">Start run</button>" in response.text


@pytest.mark.timeout(60)
def test_pause_resume_stop_then_resume_the_run(open_ui, make_project) -> None:
    client = open_ui(make_project({"job.py": SLOW}) / "job.py")
    url = start_run(client)
    page = client.get(url).text
    assert ">Pause</button>" in page and ">Stop</button>" in page and 'sse-connect="' in page

    assert post(client, f"{url}/pause", {}, page).status_code == 303
    paused = wait_for_state(client, url, lambda state: state == "paused")
    assert ">Resume</button>" in paused and ">Pause</button>" not in paused
    count = text_of(paused, "run-count")
    time.sleep(0.6)  # longer than a status write: the count stays still
    assert text_of(client.get(url).text, "run-count") == count

    assert post(client, f"{url}/resume", {}, paused).status_code == 303
    running = wait_for_state(client, url, lambda state: state == "running")
    assert post(client, f"{url}/stop", {}, running).status_code == 303
    stopped = wait_for_state(client, url, lambda state: state.startswith("finished"))
    assert text_of(stopped, "run-state") == "finished: stopped"
    assert ">Resume</button>" in stopped and ">Retry failed items</button>" not in stopped

    response = post(client, f"{url}/resume-run", {}, stopped)
    assert response.status_code == 303 and response.headers["location"] == url
    done = wait_for_state(client, url, lambda state: state == "finished: completed")
    assert text_of(done, "run-count") == "1,000 / 1,000"


def test_pause_or_stop_of_a_finished_run_is_a_clear_error(open_ui, make_project, output_dir: Path) -> None:
    project = make_project({"job.py": TINY})
    assert batchframe_cli("exec", project / "job.py", "-d", output_dir, cwd=project).returncode == 0
    name = only_run_dir(output_dir).name
    client = open_ui(project / "job.py")
    page = client.get("/start").text
    for action in ("pause", "stop"):
        response = post(client, f"/runs/{name}/{action}", {}, page)
        assert response.status_code == 409
        assert f"it cannot {action}" in response.text and 'role="alert"' in response.text
    assert post(client, f"/runs/{name}/explode", {}, page).status_code == 404


def test_the_runs_page_lists_runs_from_the_terminal(open_ui, make_project, output_dir: Path) -> None:
    project = make_project({"job.py": TINY})
    assert batchframe_cli("exec", project / "job.py", "-d", output_dir, cwd=project).returncode == 0
    name = only_run_dir(output_dir).name
    client = open_ui()
    page = client.get("/runs").text
    assert f'<a href="/runs/{name}">{name}</a>' in page
    row = page[page.index("<tbody") :]
    assert "job.py" in row and ">completed<" in row and ">3<" in row
    assert row.index('<th scope="row"') < row.index('data-label="project"')  # the run's name (the link) comes first
    since = re.search(r'hx-get="/fragments/runs\?since=([0-9a-f]+)"', page)
    assert since and 'hx-trigger="every 2s"' in page
    assert client.get(f"/fragments/runs?since={since.group(1)}").status_code == 204  # nothing changed
    rows = client.get("/fragments/runs?since=old")
    assert rows.status_code == 200 and rows.text.lstrip().startswith('<tbody id="runs-body"')
    run_page = client.get(f"/runs/{name}").text
    assert text_of(run_page, "run-state") == "finished: completed" and text_of(run_page, "run-count") == "3 / ?"
    assert "sse-connect" not in run_page  # nothing live to follow


def test_the_event_stream_of_a_finished_run_sends_its_fragments_then_ends(
    open_ui, make_project, output_dir: Path
) -> None:
    project = make_project({"job.py": TINY})
    assert batchframe_cli("exec", project / "job.py", "-d", output_dir, cwd=project).returncode == 0
    name = only_run_dir(output_dir).name
    response = open_ui().get(f"/runs/{name}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    names = [block.splitlines()[0] for block in events]
    assert names == ["event: progress", "event: controls", "event: logs", "event: failures", "event: end"]
    for block in events:
        assert all(line.startswith("data: ") for line in block.splitlines()[1:])
    assert "finished: completed" in events[0] and "3 / ?" in events[0]


def test_run_names_that_leave_the_output_folder_are_not_found(
    open_ui, make_project, output_dir: Path, tmp_path: Path
) -> None:
    project = make_project({"job.py": TINY})
    elsewhere = tmp_path / "elsewhere"
    assert batchframe_cli("exec", project / "job.py", "-d", elsewhere, cwd=project).returncode == 0
    output_dir.mkdir()
    os.symlink(only_run_dir(elsewhere), output_dir / "link")
    client = open_ui(project / "job.py")
    page = client.get("/start").text
    for name in ("%2E%2E", "link", "missing", "%2Fetc", "..%2F..%2Felsewhere"):
        assert client.get(f"/runs/{name}").status_code == 404, name
        assert client.get(f"/runs/{name}/events").status_code == 404, name
        assert post(client, f"/runs/{name}/stop", {}, page).status_code == 404, name


# ---------------------------------------------------------------------------------------- secrets

SECRET_JOB = """
import logging
from pathlib import Path
from batchframe import BatchframeParam, Secret, Service, Source, inject


@inject
class Items(Source[int]):
    def __init__(self, source_ok: BatchframeParam[Path], work_ok: BatchframeParam[Path], count: BatchframeParam[int] = 6):
        self.source_ok, self.work_ok, self.count = source_ok, work_ok, count

    def __len__(self):
        return self.count

    def __iter__(self):
        for item in range(self.count):
            if item == 3 and not self.source_ok.exists():
                raise RuntimeError("the source broke")
            yield item


@inject
class Work(Service[int]):
    def __init__(self, source: Source[int], token: BatchframeParam[Secret], spare: BatchframeParam[Secret] = "tok-default-spare"):
        self.source, self.token = source, token

    def process(self, item):
        if not self.token.get_secret_value().startswith("tok-"):
            raise ValueError("not a token")
        logging.getLogger(__name__).warning("item %s with %s", item, self.token)
        if item == 4 and not self.source.work_ok.exists():
            raise ValueError(f"item 4 refused")
"""


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """The command line and environment of every process the UI launches."""
    seen: list[tuple[list[str], dict[str, str]]] = []
    real = _launch.subprocess.Popen

    def recording(args: list[str], *rest: object, **options: Any) -> Any:
        env = dict(options.get("env") or {})
        if LAUNCH_ID_ENV in env:  # subprocess.Popen is patched for all: the form's own children are not runs
            seen.append(([str(arg) for arg in args], env))
        return real(args, *rest, **options)

    monkeypatch.setattr(_launch.subprocess, "Popen", recording)
    return seen


def assert_nowhere(secret: str, *texts: str, folder: Path | None = None) -> None:
    """``secret`` is in none of ``texts`` and in no file under ``folder``."""
    for text in texts:
        assert secret not in text
    for path in folder.rglob("*") if folder is not None else ():
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_secret_is_a_password_field_that_never_comes_back(open_ui, make_project, output_dir: Path) -> None:
    client = open_ui(make_project({"job.py": SECRET_JOB}) / "job.py")
    page = client.get("/start").text
    field = re.search(r'<input id="f-token"[^>]*>', page)
    assert field, page
    assert 'type="password"' in field.group(0) and 'autocomplete="off"' in field.group(0)
    assert "value=" not in field.group(0) and 'aria-required="true"' in field.group(0)
    spare = re.search(r'<input id="f-spare"[^>]*>', page)
    assert spare and "value=" not in spare.group(0) and 'placeholder="empty: not given"' in spare.group(0)
    assert_nowhere("tok-default-spare", page)  # not even a secret's default

    token = "tok-9d1f7e-typed-once"
    form = {**browser_form(page), "token": [token], "spare": ["tok-spare-4411"], "count": ["abc"], "source_ok": ["x"]}
    response = client.post("/start", data=form, headers={"origin": BASE})
    assert response.status_code == 422  # count is wrong: the form comes back...
    assert "expects int" in text_of(response.text, "f-count-error")
    field = re.search(r'<input id="f-token"[^>]*>', response.text)
    assert field and "value=" not in field.group(0)  # ...without the secrets typed into it
    assert_nowhere(token, response.text)
    assert_nowhere("tok-spare-4411", response.text)
    assert not output_dir.exists()


@pytest.mark.timeout(90)
def test_secrets_reach_runs_by_environment_and_resume_and_retry_ask_again(
    open_ui, make_project, output_dir: Path, tmp_path: Path, launched
) -> None:
    project = make_project({"job.py": SECRET_JOB})
    client = open_ui(project / "job.py")
    token, source_ok, work_ok = "tok-3c0ffee-from-the-form", tmp_path / "source-ok", tmp_path / "work-ok"
    url = start_run(client, token=token, source_ok=str(source_ok), work_ok=str(work_ok), max_retries="0")
    (argv, env), *_ = launched
    assert argv[argv.index("exec") :][:2] == ["exec", str(project / "job.py")]
    assert not any(token in arg for arg in argv) and env["BATCHFRAME_PARAM_TOKEN"] == token
    assert "BATCHFRAME_PARAM_SPARE" not in env  # left empty: not given
    page = wait_for_state(client, url, lambda state: state.startswith("finished"))
    assert text_of(page, "run-state") == "finished: failed"  # the source broke, after the token worked
    folder = output_dir / url.rsplit("/", 1)[1]
    assert "the source broke" in page and "<dt>secrets</dt><dd><code>spare</code>, <code>token</code>" in page

    # Resume asks for the secrets again: a password field per secret, next to the button, always empty.
    form = re.search(r'<form method="post" action="[^"]*/resume-run" class="with-secrets">.*?</form>', page, re.S)
    assert form, page
    for name in ("spare", "token"):
        field = re.search(rf'<input id="resume-run-secret-{name}" name="secret-{name}"[^>]*>', form.group(0))
        assert field and 'type="password"' in field.group(0) and 'autocomplete="off"' in field.group(0)
        assert "value=" not in field.group(0)
    missing = post(client, f"{url}/resume-run", {"secret-token": "  "}, page)
    assert missing.status_code == 422  # the CLI's own error
    assert "needs its secret parameter token again" in missing.text and "BATCHFRAME_PARAM_TOKEN" in missing.text
    assert 'role="alert"' in missing.text and 'id="resume-run-secret-token"' in missing.text

    source_ok.touch()
    resumed = post(client, f"{url}/resume-run", {"secret-token": token}, page)
    assert resumed.status_code == 303 and resumed.headers["location"] == url, resumed.text
    argv, env = launched[-1]
    assert "resume" in argv and not any(token in arg for arg in argv) and env["BATCHFRAME_PARAM_TOKEN"] == token
    page = wait_for_state(client, url, lambda state: state.startswith("finished"))
    assert text_of(page, "run-state") == "finished: completed with failures"  # item 4 refused
    assert ">Retry failed items</button>" in page and 'id="retry-secret-token"' in page

    work_ok.touch()
    retried = post(client, f"{url}/retry", {"secret-token": token, "secret-spare": "tok-spare-77"}, page)
    assert retried.status_code == 303, retried.text
    argv, env = launched[-1]
    assert "retry" in argv and not any(token in arg or "tok-spare-77" in arg for arg in argv)
    assert (env["BATCHFRAME_PARAM_TOKEN"], env["BATCHFRAME_PARAM_SPARE"]) == (token, "tok-spare-77")
    retry_page = wait_for_state(client, retried.headers["location"], lambda state: state.startswith("finished"))
    assert text_of(retry_page, "run-state") == "finished: completed" and text_of(retry_page, "run-count") == "1 / 1"

    events = client.get(f"{url}/events").text
    runs = client.get("/runs").text
    assert_nowhere(token, page, retry_page, events, runs, folder=output_dir)
    assert_nowhere("tok-spare-77", retry_page, events, runs, folder=output_dir)
    assert "item 0 with **********" in (folder / "logs.txt").read_text()


# -------------------------------------------------------------------------------------- cool-down


def test_the_progress_shows_a_rate_limit_cooldown_counting_down(open_ui, output_dir: Path) -> None:
    folder = output_dir / "2026-01-01T00-00-00"
    folder.mkdir(parents=True)

    def status(cooldown_s: float, age_s: float, state: str = "running") -> None:
        written = RunStatus(
            state=state, pid=os.getpid(), total=10, succeeded=4, cooldown_s=cooldown_s, updated_at=time.time() - age_s
        )
        (folder / "status.json").write_text(json.dumps(dataclasses.asdict(written)))

    client = open_ui()
    status(12.0, 0.0)
    page = client.get(f"/runs/{folder.name}").text
    assert text_of(page, "run-cooldown") == "cooling down 12 s"
    assert text_of(page, "run-state") == "running"
    status(12.0, 4.5)  # written 4.5 s ago: 7.5 s are left now
    assert text_of(client.get(f"/runs/{folder.name}").text, "run-cooldown") == "cooling down 8 s"
    status(0.0, 0.0)
    assert 'id="run-cooldown"' not in client.get(f"/runs/{folder.name}").text
    status(12.0, 0.0, state="finished")
    assert 'id="run-cooldown"' not in client.get(f"/runs/{folder.name}").text  # only a live run cools down


# ------------------------------------------------------------------------------------- the command


@pytest.mark.timeout(60)
def test_batchframe_ui_prints_its_url_serves_it_and_refuses_a_busy_port(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "batchframe", "ui", "-d", str(tmp_path / "out"), "--no-browser"]
    server = subprocess.Popen([*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=[\w-]{40,}", url)
        assert match, url
        with httpx.Client() as browser:
            page = browser.get(url, follow_redirects=True)
            assert page.status_code == 200 and "<h1>Runs</h1>" in page.text
        busy = batchframe_cli("ui", "--no-browser", "--port", match.group(1), cwd=tmp_path)
        assert busy.returncode == 2
        assert "cannot listen on 127.0.0.1" in busy.stderr and "--port 0" in busy.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=20)


def test_without_the_ui_extra_the_command_says_what_to_install(tmp_path: Path) -> None:

    code = "import sys; sys.modules['uvicorn'] = None\nfrom batchframe.cli.app import app\napp(['ui', '--no-browser'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "The UI needs the ui extra: pip install 'batchframe[ui]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_runs_with_a_broken_summary_json_are_listed_and_shown_with_a_note(
    open_ui, make_project, output_dir: Path
) -> None:
    from test_run_files import corrupt_runs

    journaled, names = corrupt_runs(make_project, output_dir)
    client = open_ui()
    response = client.get("/runs")
    assert response.status_code == 200
    page = html.unescape(response.text)
    for name in [journaled, *names.values()]:
        assert f'href="/runs/{name}"' in page, name
    assert page.count("summary.json unreadable") == len(names) + 1
    assert "(summary.json unreadable (a JSON list, not an object))" in page
    for name in [journaled, *names.values()]:
        run_page = client.get(f"/runs/{name}")
        assert run_page.status_code == 200, name
        assert 'class="note">summary.json unreadable' in run_page.text, name
    assert text_of(client.get(f"/runs/{journaled}").text, "run-state") == "finished: completed with failures"


def test_a_run_is_green_only_when_it_completed_with_no_failure(open_ui, make_project, output_dir: Path) -> None:
    project = make_project({"job.py": FLAKY_ALWAYS})
    assert batchframe_cli("exec", "job.py", "-d", output_dir, "-p", "bad=3", cwd=project).returncode == 3
    first = only_run_dir(output_dir)
    retried = batchframe_cli("retry", first, "--no-input", cwd=project)
    assert retried.returncode == 3, retried.stderr
    retry = next(p for p in output_dir.iterdir() if p.is_dir() and p != first)
    assert batchframe_cli("exec", "job.py", "-d", output_dir, "-p", "bad=99", cwd=project).returncode == 0
    good = max(p for p in output_dir.iterdir() if p.is_dir() and p not in (first, retry))
    client = open_ui()
    page = client.get("/runs").text

    def state_cell(name: str) -> tuple[str, str]:
        found = re.search(r'<td data-label="state" class="([^"]*)">([^<]*)<', page[page.index(f'/runs/{name}"') :])
        assert found, name
        return found[1], found[2]

    assert state_cell(retry.name) == ("state c-state tone-warn", "completed with failures")  # 0 succeeded, 1 failed
    assert state_cell(first.name) == ("state c-state tone-warn", "completed with failures")
    assert state_cell(good.name) == ("state c-state tone-ok", "completed")
    for folder, tone in ((retry, "warn"), (good, "ok")):
        run_page = client.get(f"/runs/{folder.name}").text
        assert f'id="run-state" class="state tone-{tone}"' in run_page


@pytest.mark.parametrize(
    ("live", "raw_state", "outcome", "failed", "expected"),
    [
        (False, "", "completed", 0, "ok"),
        (False, "", "completed", 2, "warn"),  # exit 0 with failures is no success
        (False, "", "completed", None, "unknown"),
        (False, "", "completed with failures", 0, "warn"),
        (False, "", "stopped", 0, "warn"),
        (False, "", "failed", 0, "bad"),
        (False, "killed", None, 3, "bad"),
        (False, "", None, None, "unknown"),
        (True, "running", None, 0, "live"),
        (True, "paused", None, 0, "paused"),
    ],
)
def test_the_tone_of_a_state_is_green_for_a_clean_completion_only(live, raw_state, outcome, failed, expected) -> None:
    from batchframe.ui._runs_view import tone

    assert tone(live=live, raw_state=raw_state, outcome=outcome, failed=failed) == expected


# ------------------------------------------------------------------------------ one number for one thing


@pytest.mark.timeout(90)
def test_a_resumed_runs_page_shows_the_whole_runs_counts_retries_and_refusals(
    open_ui, make_project, output_dir: Path
) -> None:
    from helpers import signal_when_ready
    from test_counts import JOB

    project = make_project({"job.py": JOB})
    ledger = project / "ledger.txt"
    os.environ["LEDGER"] = str(ledger)
    try:
        code, _, stderr = signal_when_ready(
            "exec", "job.py", "-d", str(output_dir), "-p", "concurrency=1", "-p", "retry_backoff_sec=0.001",
            cwd=project, signum=signal.SIGTERM,
            ready=lambda: ledger.exists() and ledger.read_text().count("ok") >= 10,
        )  # fmt: skip
        assert code == 143, stderr
        folder = only_run_dir(output_dir)
        assert batchframe_cli("resume", folder, cwd=project).returncode == 3
    finally:
        os.environ.pop("LEDGER", None)
    summary = json.loads((folder / "summary.json").read_text())
    page = open_ui().get(f"/runs/{folder.name}").text
    assert text_of(page, "run-count") == "40 / 40"
    assert (text_of(page, "run-succeeded"), text_of(page, "run-failed")) == ("36", "4")
    assert text_of(page, "run-retries") == str(summary["retries"])
    assert re.search(r"<code>ValueError</code> <span class=\"muted\">4 items</span>", page)
    assert "tone-ok" not in page  # completed with failures is not green


def test_the_run_page_shows_rate_limit_refusals(open_ui, make_project, output_dir: Path) -> None:
    from helpers import cooling_job

    project = make_project({"job.py": cooling_job(items=4, refused=1, retry_after_s=0.2)})
    assert batchframe_cli("exec", "job.py", "-d", output_dir, cwd=project).returncode == 0
    page = open_ui().get(f"/runs/{only_run_dir(output_dir).name}").text
    assert text_of(page, "run-retries") == "1"
    assert text_of(page, "run-rate-limited") == "1 (0.2 s cooling down)"


@pytest.mark.timeout(90)
def test_a_run_being_resumed_shows_no_end_time_of_its_first_part(open_ui, make_project, output_dir: Path) -> None:
    from helpers import signal_when_ready

    project = make_project(
        {
            "job.py": """
            import asyncio, pathlib
            from batchframe import Service, Source
            class Numbers(Source[int]):
                def __iter__(self):
                    return iter(range(60))
            class Slow(Service[int]):
                async def process(self, item):
                    await asyncio.sleep(0.05)
                    with open("done.txt", "a") as out:
                        out.write(f"{item}\\n")
            """
        }
    )
    done = project / "done.txt"
    code, _, stderr = signal_when_ready(
        "exec", "job.py", "-d", str(output_dir), "-p", "concurrency=1", cwd=project, signum=signal.SIGTERM,
        ready=lambda: done.exists() and len(done.read_text().split()) >= 5,
    )  # fmt: skip
    assert code == 143, stderr
    folder = only_run_dir(output_dir)
    client = open_ui()
    assert "<dt>ended</dt>" in client.get(f"/runs/{folder.name}").text  # the stopped first part ended
    resume = subprocess.Popen(
        [str(Path(sys.executable).parent / "batchframe"), "resume", str(folder)], cwd=project,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        page = wait_for_state(client, f"/runs/{folder.name}", lambda state: state == "running")
        assert "<dt>ended</dt>" not in page
        assert resume.wait(timeout=60) == 0
    finally:
        if resume.poll() is None:
            resume.kill()
            resume.wait()
    assert "<dt>ended</dt>" in client.get(f"/runs/{folder.name}").text


def test_a_finished_run_shows_its_report_and_its_files_download(open_ui, make_project, output_dir: Path) -> None:
    project = make_project({"job.py": FLAKY_ALWAYS})
    assert batchframe_cli("exec", "job.py", "-d", output_dir, "-p", "bad=3", cwd=project).returncode == 3
    name = only_run_dir(output_dir).name
    client = open_ui()
    page = client.get(f"/runs/{name}").text
    assert text_of(page, "run-latency").startswith("p50 ")
    assert 'id="run-top-errors"' in page
    for file in ("failed.jsonl", "logs.txt", "summary.json"):
        assert f'href="/runs/{name}/files/{file}"' in page
        response = client.get(f"/runs/{name}/files/{file}")
        assert response.status_code == 200
        assert response.headers["content-disposition"] == f'attachment; filename="{name}-{file}"'
        assert response.content == (output_dir / name / file).read_bytes()
    for other in ("journal.sqlite", "status.json", "..%2Fsecret.txt", "control.json"):
        assert client.get(f"/runs/{name}/files/{other}").status_code == 404
    (output_dir / name / "failed.jsonl").unlink()
    assert client.get(f"/runs/{name}/files/failed.jsonl").status_code == 404


def test_the_runs_table_filters_by_outcome(open_ui, make_project, output_dir: Path) -> None:
    project = make_project({"job.py": FLAKY_ALWAYS})
    assert batchframe_cli("exec", "job.py", "-d", output_dir, "-p", "bad=3", cwd=project).returncode == 3
    failed = only_run_dir(output_dir)
    assert batchframe_cli("exec", "job.py", "-d", output_dir, "-p", "bad=99", cwd=project).returncode == 0
    good = max(p for p in output_dir.iterdir() if p.is_dir() and p != failed)
    client = open_ui()

    def listed(query: str) -> set[str]:
        page = client.get(f"/runs{query}").text
        return {folder.name for folder in (failed, good) if f'href="/runs/{folder.name}"' in page}

    assert listed("") == {failed.name, good.name}
    assert listed("?outcome=succeeded") == {good.name}
    assert listed("?outcome=with+failures+or+stopped") == {failed.name}
    assert listed("?outcome=running") == set()
    assert listed("?outcome=nonsense") == {failed.name, good.name}  # an unknown filter shows every run
    page = client.get("/runs?outcome=succeeded").text
    assert 'aria-current="page">succeeded<' in page
    assert "&amp;outcome=succeeded" in page  # the table's poll keeps the filter
    assert "No run running in" in client.get("/runs?outcome=running").text


def test_run_again_fills_the_form_with_the_run_s_parameters(open_ui, make_project, output_dir: Path) -> None:
    project = make_project({"job.py": FLAKY_ALWAYS})
    assert (
        batchframe_cli("exec", "job.py", "-d", output_dir, "-p", "bad=2", "--limit", "3", cwd=project).returncode == 3
    )
    name = only_run_dir(output_dir).name
    client = open_ui(project / "job.py")
    run_page = client.get(f"/runs/{name}").text
    assert f'href="/start?again={name}" id="run-again"' in run_page
    form = client.get(f"/start?again={name}").text
    assert re.search(r'<input[^>]*name="bad"[^>]*value="2"', form) or re.search(
        r'<input[^>]*value="2"[^>]*name="bad"', form
    )
    assert re.search(r'name="run-limit"[^>]*value="3"', form)  # the limit too: a rerun is the same run
    plain = client.get("/start").text
    assert not re.search(r'<input[^>]*name="bad"[^>]*value="2"', plain)  # the default otherwise
    assert client.get("/start?again=no-such-run").status_code == 200  # an unknown run: the plain form
