"""The ``batchframe ui`` web app: its routes, and the view of each page.

Routes (every one behind ``_security.SecurityMiddleware``)::

    GET  /                          -> /start when the server has a project, else /runs
    GET  /start[?config=NAME]       the "Start a run" form
    POST /start                     check the form (422 with the errors) or launch the run (303 to its page)
    GET  /runs                      the runs table (``batchframe runs``)
    GET  /fragments/runs?since=SIG  the table's rows, or 204 when nothing changed (polled every 2 s)
    GET  /runs/NAME                 a run: progress, actions, failures, log tail
    GET  /runs/NAME/events          the same, live, as server-sent events
    POST /runs/NAME/ACTION          pause, resume, stop (a live run); resume-run, retry (a run that ended,
                                    with its secrets given again in fields named SECRET_PREFIX + NAME)
    GET  /static/...                htmx, its SSE extension, the stylesheet

Everything shown is read from the run folders on each request; a project is only ever loaded by the
child processes of ``_forms`` and ``_launch``. A ``Secret`` parameter's value is never rendered (its
field is a password input that always comes back empty) and never put on a command line: the
launched process gets it as ``BATCHFRAME_PARAM_<NAME>`` in its environment.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from batchframe.errors import BatchframeError, ParamError
from batchframe.project.params import env_variable
from batchframe.run.limits import TUNABLE
from batchframe.runfolder.files import open_regular
from batchframe.runfolder.live import Command, send_control
from batchframe.runfolder.logs import console_lines
from batchframe.ui._forms import UNSET_SUFFIX, FieldSpec, FormError, ProjectForm, describe, validate
from batchframe.ui._launch import Launcher, LaunchError
from batchframe.ui._runs_view import (
    DOWNLOADS,
    LOG_BYTES,
    LOG_LINES,
    OUTCOME_FILTERS,
    actions,
    failure_groups,
    listing_signature,
    log_tail,
    read_info,
    read_live,
    read_page,
    run_folder,
    run_rows,
)
from batchframe.ui._security import CSRF_FIELD, SecurityMiddleware, allowed_hosts

HERE = Path(__file__).parent
EVENT_EVERY_S = 0.5
_CONTROLS: dict[str, Command] = {"pause": "pause", "resume": "resume", "stop": "stop"}
LIMIT_FIELD = "run-limit"
"""The form's ``exec --limit N`` field (a name no parameter can have)."""
_FORM_KEYS = (CSRF_FIELD, "config", LIMIT_FIELD)
SECRET_PREFIX = "secret-"
"""The run page's field for secret ``NAME`` (Resume, Retry): ``SECRET_PREFIX + NAME``, never a parameter's name."""


@dataclass(frozen=True)
class UISettings:
    """What one ``batchframe ui`` server serves.

    Attributes:
        output_dir: where the run folders are.
        project: the project of the "Start a run" page; None shows the runs only.
        config: the config the form starts with (``-c``).
        host: the address the server is bound to.
        port: its port.
        token: the secret of the URL the server prints.
        workdir: the working directory of the runs it launches.
    """

    output_dir: Path
    project: Path | None = None
    config: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    workdir: Path = field(default_factory=Path.cwd)


def create_app(settings: UISettings) -> Starlette:
    """The web app for ``settings``: routes, templates, static files, and the security middleware."""
    views = _Views(settings, _templates())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="batchframe-ui-") as scratch:
            yield {"launcher": Launcher(Path(scratch), settings.workdir)}

    routes = [
        Route("/", views.home),
        Route("/start", views.start_form, methods=["GET"]),
        Route("/start", views.start_run, methods=["POST"]),
        Route("/runs", views.runs),
        Route("/fragments/runs", views.runs_rows),
        Route("/runs/{name}", views.run_page),
        Route("/runs/{name}/events", views.events),
        Route("/runs/{name}/files/{file}", views.download),
        Route("/runs/{name}/{action}", views.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    guard = Middleware(
        SecurityMiddleware,
        token=settings.token,
        secret=secrets.token_bytes(32),
        hosts=allowed_hosts(settings.host, settings.port),
        port=settings.port,
    )
    app = Starlette(
        routes=routes,
        middleware=[guard],
        lifespan=lifespan,
        exception_handlers={HTTPException: views.http_error},
    )
    # Set by the server on Ctrl-C: the event streams end, rather than hold the shutdown until its timeout.
    app.state.stopping = threading.Event()
    return app


# ----------------------------------------------------------------------------------------- helpers


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = _duration
    env.filters["quote"] = lambda text: quote(str(text), safe="")
    return Jinja2Templates(env=env)


def _duration(seconds: float | None) -> str:
    """12 s, 3 min 04 s, 2 h 05 min; "-" when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Problem:
    """An error to show in a panel: the CLI's title, message, hint and the user's traceback."""

    title: str
    message: str
    hint: str | None = None
    details: str | None = None

    @classmethod
    def of(cls, error: BatchframeError) -> Problem:
        """The panel for a BatchframeError."""
        return cls(error.title, error.message, error.hint, error.user_traceback)


@dataclass(frozen=True)
class FieldView:
    """One form field with what to show in it: the default, or what was typed, and its error."""

    spec: FieldSpec
    value: str
    checked: bool
    unset: bool
    error: str | None

    @property
    def id(self) -> str:
        """The control's id (parameter names are Python identifiers, safe in an id)."""
        return f"f-{self.spec.name}"


def field_views(
    form: ProjectForm, submitted: Mapping[str, Sequence[str]] | None, errors: Mapping[str, str]
) -> list[FieldView]:
    """The form's fields, filled with the defaults (a fresh form) or with what was submitted."""
    views = []
    for spec in form.fields:
        if submitted is None:
            # An empty optional field already means its default; "unset" is there to force None.
            value, unset = spec.default or "", False
            checked = value.strip().lower() in ("true", "1", "yes", "on")
        else:
            # A secret is never sent back, not even to the browser that typed it (a 422 re-render).
            value = "" if spec.widget == "secret" else next(iter(submitted.get(spec.name, ())), "")
            checked = spec.name in submitted
            unset = spec.name + UNSET_SUFFIX in submitted
        if spec.widget == "datetime":
            value = value.replace(" ", "T", 1)  # the form of a datetime-local input
        views.append(FieldView(spec, value, checked, unset, errors.get(spec.name)))
    return views


LOG_SCAN_BYTES = 4 * LOG_BYTES
"""How much of the end of logs.txt the log box reads to find its lines among libraries' records."""


def log_box(folder: Path) -> str:
    """The end of the run's logs.txt as the console showed it: libraries' records below WARNING left out.

    A run whose log_levels named a library's logger showed that logger's records on its console;
    the box leaves them out too (it reads logs.txt only), and says how many it left out.
    """
    text = log_tail(folder, lines=LOG_SCAN_BYTES, max_bytes=LOG_SCAN_BYTES)  # every line of the window
    kept, hidden = console_lines(text.splitlines())
    shown = kept[-LOG_LINES:]
    if hidden:
        shown.append(f"({hidden:,} records of libraries below WARNING left out here; logs.txt has every record.)")
    return "\n".join(shown)


def _event(name: str, data: str) -> str:
    """One server-sent event; every line of ``data`` gets its own ``data:`` prefix (the SSE format)."""
    lines = data.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


# ------------------------------------------------------------------------------------------- views


class _Views:
    """The route handlers, sharing the settings and the templates."""

    def __init__(self, settings: UISettings, templates: Jinja2Templates) -> None:
        self.settings = settings
        self.templates = templates

    def render(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        """A page: ``context`` plus what every page needs (the CSRF token, whether there is a project)."""
        base = {"csrf": request.state.csrf, "has_project": self.settings.project is not None}
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)

    def fragment(self, template: str, context: Mapping[str, Any]) -> str:
        """A template rendered to text (for the live stream)."""
        return self.templates.env.get_template(template).render(context)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """404 and friends as a page."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "Something went wrong."
        return self.render(request, "message.html", {"title": detail, "status": status}, status_code=status)

    def folder(self, request: Request) -> Path:
        """The run folder named in the URL, which must be directly inside the output folder."""
        folder = run_folder(self.settings.output_dir, request.path_params["name"])
        if folder is None:
            raise HTTPException(404, "No such run")
        return folder

    # ---------------------------------------------------------------------------------- pages

    async def home(self, request: Request) -> Response:
        """The start form when there is a project, else the runs."""
        return RedirectResponse("/start" if self.settings.project is not None else "/runs", status_code=303)

    async def start_form(self, request: Request) -> Response:
        """The "Start a run" form, for the config in the query (or the server's).

        ``?again=RUN``: filled in with that run's config, parameters and limit ("Run again with these
        parameters"); its secrets are not kept, so their fields are empty, to be given again.
        """
        if self.settings.project is None:
            return RedirectResponse("/runs", status_code=303)
        config = request.query_params.get("config") or self.settings.config
        again = request.query_params.get("again")
        if again:
            folder = run_folder(self.settings.output_dir, again)
            info = await run_in_threadpool(read_info, folder) if folder is not None else None
            if info is not None:
                meta = info.meta
                submitted = _given_params(meta.get("params"))
                limit = meta.get("limit")
                return await self.start_page(
                    request,
                    self.settings.project,
                    config=meta.get("config") or config,
                    submitted=submitted,
                    limit=str(limit) if isinstance(limit, int) else "",
                )
        return await self.start_page(request, self.settings.project, config=config)

    async def start_page(
        self,
        request: Request,
        project: Path,
        *,
        config: str | None,
        submitted: Mapping[str, Sequence[str]] | None = None,
        errors: Mapping[str, str] | None = None,
        problem: Problem | None = None,
        status_code: int = 200,
        limit: str = "",
    ) -> Response:
        """Describe the project (in a child process) and render its form."""
        errors = errors or {}
        form: ProjectForm | None = None
        try:
            form = await run_in_threadpool(describe, project, config)
        except FormError as exc:
            problem, status_code = problem or Problem.of(exc), max(status_code, 422)
        fields = field_views(form, submitted, errors) if form is not None else []
        known = {view.spec.name for view in fields}
        context = {
            "project": project,
            "form": form,
            "fields": [view for view in fields if view.spec.group != "runtime"],
            "runtime": [view for view in fields if view.spec.group == "runtime"],
            "runtime_open": any(view.error for view in fields if view.spec.group == "runtime")
            or LIMIT_FIELD in errors
            or bool(limit),
            "limit": limit,
            "limit_error": errors.get(LIMIT_FIELD),
            "other_errors": sorted(
                f"{name}: {text}" for name, text in errors.items() if name not in known and name != LIMIT_FIELD
            ),
            "problem": problem,
        }
        return self.render(request, "start.html", context, status_code=status_code)

    async def start_run(self, request: Request) -> Response:
        """Check the submitted form; re-render it with the errors (422), or launch the run and go to its page."""
        project = self.settings.project
        if project is None:
            raise HTTPException(404, "This server has no project to run")
        data = await request.form()
        config = str(data.get("config") or "") or None
        submitted = {key: [str(value) for value in data.getlist(key)] for key in data if key not in _FORM_KEYS}
        limit_text = str(data.get(LIMIT_FIELD) or "").strip()
        limit, limit_error = _limit_of(limit_text)
        errors: dict[str, str] = {}
        problem = None
        try:
            params, errors, environment = await run_in_threadpool(validate, project, config, submitted)
            if limit_error:
                errors[LIMIT_FIELD] = limit_error
            if not errors:
                launcher: Launcher = request.state.launcher
                output_dir = self.settings.output_dir
                folder = await launcher.exec_run(
                    project, config=config, params=params, output_dir=output_dir, environment=environment, limit=limit
                )
                return _to_run(folder)
        except (FormError, LaunchError) as exc:
            problem = Problem.of(exc)
        return await self.start_page(
            request,
            project,
            config=config,
            submitted=submitted,
            errors=errors,
            problem=problem,
            status_code=422,
            limit=limit_text,
        )

    async def runs(self, request: Request) -> Response:
        """The runs table (``?outcome=`` one of ``OUTCOME_FILTERS``: only those runs)."""
        context = await run_in_threadpool(self.runs_context, request.query_params.get("outcome"))
        return self.render(request, "runs.html", context)

    async def runs_rows(self, request: Request) -> Response:
        """The table's rows for the 2-second poll: 204 (htmx keeps the rows) when nothing changed."""
        since = request.query_params.get("since")
        signature = await run_in_threadpool(listing_signature, self.settings.output_dir)
        if since == signature:
            return Response(status_code=204)
        context = await run_in_threadpool(self.runs_context, request.query_params.get("outcome"))
        return self.render(request, "_runs_rows.html", context)

    def runs_context(self, outcome: str | None = None) -> dict[str, Any]:
        """What the runs table shows (blocking: reads every run's journal)."""
        signature = listing_signature(self.settings.output_dir)
        outcome = outcome if outcome in OUTCOME_FILTERS else None
        rows, unreadable = run_rows(self.settings.output_dir, outcome)
        return {
            "rows": rows,
            "unreadable": unreadable,
            "output_dir": self.settings.output_dir,
            "since": signature,
            "outcome": outcome,
            "filters": list(OUTCOME_FILTERS),
        }

    async def run_page(self, request: Request) -> Response:
        """One run."""
        return await self.show_run(request, self.folder(request))

    async def show_run(
        self, request: Request, folder: Path, *, problem: Problem | None = None, status_code: int = 200
    ) -> Response:
        """Render a run's page, with ``problem`` (an action that failed) above it."""
        context = await run_in_threadpool(self.run_context, folder)
        return self.render(request, "run.html", {**context, "problem": problem}, status_code=status_code)

    def run_context(self, folder: Path) -> dict[str, Any]:
        """What the run page shows (blocking: reads the run's files)."""
        page = read_page(folder)
        return {
            "page": page,
            "name": page.name,
            "progress": page.progress,
            "actions": page.actions,
            "error": page.error,
            "logs": log_box(folder),
            "groups": failure_groups(folder, page.failures_by_type),
            "parent": self.parent_run(page.meta.get("retry_of")),
            "secrets": secret_names(page.meta),
            "has_project": self.settings.project is not None,
        }

    def parent_run(self, retry_of: object) -> str | None:
        """The name of the run a retry retried, when it is in the output folder (to link to it)."""
        if not isinstance(retry_of, str):
            return None
        parent = Path(retry_of)
        if parent.parent.resolve() != self.settings.output_dir.resolve():
            return None
        return parent.name if run_folder(self.settings.output_dir, parent.name) is not None else None

    async def download(self, request: Request) -> Response:
        """One of the run's ``DOWNLOADS`` (failed.jsonl, logs.txt, summary.json), as an attachment."""
        folder = self.folder(request)
        name = request.path_params["file"]
        if name not in DOWNLOADS:
            raise HTTPException(404, "No such file")
        try:
            handle = await run_in_threadpool(open_regular, folder / name)
        except OSError:
            raise HTTPException(404, "No such file") from None

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(1 << 16):
                    yield chunk

        kind = "text/plain; charset=utf-8" if name.endswith(".txt") else "application/json"
        disposition = f'attachment; filename="{folder.name}-{name}"'
        return StreamingResponse(chunks(), media_type=kind, headers={"content-disposition": disposition})

    # ------------------------------------------------------------------------------ live stream

    async def events(self, request: Request) -> Response:
        """Server-sent events for a run: changed fragments every half second, then ``end`` once it ended."""
        folder = self.folder(request)
        csrf: str = request.state.csrf
        stopping: threading.Event = request.app.state.stopping

        async def stream() -> AsyncIterator[str]:
            sent: dict[str, str] = {}
            counts: dict[str, int] | None = None
            while True:
                fragments, counts, final = await run_in_threadpool(self.live_fragments, folder, csrf, counts)
                for name, html in fragments.items():
                    if sent.get(name) != html:
                        sent[name] = html
                        yield _event(name, html)
                if final:
                    yield _event("end", "finished")
                    return
                if stopping.is_set() or await request.is_disconnected():
                    return
                await anyio.sleep(EVENT_EVERY_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    def live_fragments(
        self, folder: Path, csrf: str, last_counts: dict[str, int] | None
    ) -> tuple[dict[str, str], dict[str, int], bool]:
        """The fragments of a run now, its failure counts, and whether it is over (blocking)."""
        live = read_live(folder)
        if live is None:  # over: read everything once more, for the final state and buttons
            context = self.run_context(folder)
            counts, final = context["page"].failures_by_type, True
        else:
            prog, counts = live
            context = {"name": folder.name, "progress": prog, "actions": actions(prog, None), "error": None}
            context["secrets"] = []  # asked for by Resume and Retry only, which a live run does not offer
            context["logs"] = log_box(folder)
            if counts != last_counts:  # failed.jsonl is read only when there are new failures
                context["groups"] = failure_groups(folder, counts)
            final = False
        context["csrf"] = csrf
        fragments = {
            "progress": self.fragment("_progress.html", context),
            "controls": self.fragment("_controls.html", context),
            "logs": self.fragment("_logs.html", context),
        }
        if "groups" in context:
            fragments["failures"] = self.fragment("_failures.html", context)
        return fragments, counts, final

    # ----------------------------------------------------------------------------------- actions

    async def act(self, request: Request) -> Response:
        """Pause, resume or stop a live run; resume (the run) or retry one that ended."""
        folder = self.folder(request)
        action = request.path_params["action"]
        try:
            if action in _CONTROLS:
                await run_in_threadpool(send_control, folder, _CONTROLS[action])
                return _to_run(folder)
            if action == "tune":
                await self.tune(request, folder)
                return _to_run(folder)
            launcher: Launcher = request.state.launcher
            if action == "resume-run":
                environment = await self.secrets_given(request, folder)
                return _to_run(await launcher.resume_run(folder, environment=environment))
            if action == "retry":
                environment = await self.secrets_given(request, folder)
                return _to_run(await launcher.retry_run(folder, self.settings.output_dir, environment=environment))
        except BatchframeError as exc:
            status = 422 if isinstance(exc, (LaunchError, ParamError)) else 409
            return await self.show_run(request, folder, problem=Problem.of(exc), status_code=status)
        raise HTTPException(404, f"No action {action!r}")

    async def tune(self, request: Request, folder: Path) -> None:
        """The run page's tune fields, sent as ``batchframe tune`` sends them (an empty field: unchanged).

        Raises:
            ParamError: a value ``-p`` would refuse, or one the run refused.
            RunNotLiveError: the run ended meanwhile.
        """
        from batchframe.run.tune import parse_tune, tune_run

        data = await request.form()
        given = [f"{name}={str(data.get(name) or '').strip()}" for name in TUNABLE if str(data.get(name) or "").strip()]
        values = parse_tune(given)
        await run_in_threadpool(tune_run, folder, values)

    async def secrets_given(self, request: Request, folder: Path) -> dict[str, str]:
        """The secrets typed on the run's page, as ``BATCHFRAME_PARAM_<NAME>`` variables; an empty field: not given."""
        info = await run_in_threadpool(read_info, folder)
        meta = info.meta if info is not None else {}
        data = await request.form()
        given = {name: str(data.get(SECRET_PREFIX + name) or "") for name in secret_names(meta)}
        return {env_variable(name): value for name, value in given.items() if value.strip()}


def secret_names(meta: Mapping[str, Any]) -> list[str]:
    """The names of a run's secret parameters (its journal keeps where each came from, never the value)."""
    secrets = meta.get("secrets")
    if not isinstance(secrets, Mapping):
        return []
    return sorted(name for name in secrets if isinstance(name, str) and name.isidentifier())


def _limit_of(text: str) -> tuple[int | None, str | None]:
    """The form's limit: empty is none; else a whole number of at least 1, as ``exec --limit`` takes."""
    if not text:
        return None, None
    try:
        limit = int(text)
    except ValueError:
        return None, f"--limit expects a whole number, 1 or more, but got {text!r}."
    if limit < 1:
        return None, f"--limit expects a whole number, 1 or more, but got {limit}."
    return limit, None


def _given_params(params: object) -> dict[str, list[str]]:
    """A run's recorded ``NAME=VALUE`` parameters as the form's submitted values (unreadable ones left out)."""
    given: dict[str, list[str]] = {}
    for text in params if isinstance(params, list) else []:
        name, sep, value = str(text).partition("=")
        if sep and name:
            given.setdefault(name, []).append(value)
    return given


def _to_run(folder: Path | None) -> Response:
    """See Other: the run's page, or the runs table when its folder is not known yet."""
    return RedirectResponse(f"/runs/{quote(folder.name, safe='')}" if folder is not None else "/runs", status_code=303)
