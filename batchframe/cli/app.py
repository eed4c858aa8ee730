"""The ``batchframe`` command line: thin typer commands that call into the runtime modules.

Only typer is imported at start-up; each command imports what it needs, so ``batchframe --help``
stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from batchframe.cli.completion import complete_config, complete_param
from batchframe.cli.help import Command, Group
from batchframe.runfolder.folder import DEFAULT_OUTPUT_DIR

if TYPE_CHECKING:
    from batchframe.errors import BatchframeError, UsageError
    from batchframe.run.execute import RunResult
    from batchframe.run.prepare import AskMissing

app = typer.Typer(
    name="batchframe",
    help="Run a Source of work items through a Service: concurrency, retries, logs and progress included.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help imports rich.markdown and markdown-it (~150 ms) on every --help.
    rich_markup_mode=None,
    cls=Group,
)


PathArg = Annotated[
    Path, typer.Argument(metavar="PATH", help="A .py file, a package directory or a directory of modules.")
]
ConfigOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
    typer.Option(
        "-c",
        "--config",
        "--configuration",
        help="Config to use: config/NAME.py in the project (e.g. config_dev).",
        metavar="NAME",
        autocompletion=complete_config,
    ),
]
ParamOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "-p",
        "--param",
        "--params",
        help="Set a parameter: -p NAME=VALUE (repeatable).",
        metavar="NAME=VALUE",
        autocompletion=complete_param,
    ),
]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        metavar="text|json",
        help="text: log lines and a summary table (default); json: every line printed, and logs.txt, "
        "one JSON object per line (no live display).",
    ),
]
OutputOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "-d",
        "--output-dir",
        help="The folder of run folders (default: batchframe_outputs in the current folder).",
        metavar="DIR",
    ),
]
VerboseOpt = Annotated[
    int,
    typer.Option("-v", "--verbose", count=True, show_default=False, help="-v: debug logs; -vv: also tracebacks."),
]


def _version(value: bool) -> None:
    if value:
        from batchframe import __version__

        typer.echo(f"batchframe {__version__}")
        raise typer.Exit()


class _GlobalOptions:
    """Options given before the command (``batchframe -v -d OUT exec PATH``, as batchframe 0.0.1a13 takes them)."""

    output_dir: Path | None = None
    verbose: int = 0


_global = _GlobalOptions()


def _verbosity(verbose: int) -> int:
    return max(verbose, _global.verbose)


def _output_dir(output_dir: Path | None) -> Path:
    return _usable(output_dir or _global.output_dir or DEFAULT_OUTPUT_DIR)


_NAME_MAX = 255
"""The longest file name (in bytes) the usual file systems take (ext4, XFS, btrfs, APFS)."""


def _usable(path: Path) -> Path:
    """``path`` from the command line; one the system refuses (a part too long, a symlink loop) is a UsageError.

    Checked before a command uses it: a check further on (``is_dir()``, ``exists()``) would take such
    a path for a missing one.
    """
    import errno
    import os

    try:
        if any(len(os.fsencode(part)) > _NAME_MAX for part in path.parts):  # under a folder yet to be made too
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
        os.stat(path)
    except OSError as exc:
        refused = _bad_path_error(exc)
        if refused is not None:
            raise refused from None
    return path


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    output_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "-d",
            "--output-dir",
            help="The folder of run folders (default: batchframe_outputs in the current folder).",
            metavar="DIR",
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "-v",
            "--verbose",
            count=True,
            show_default=False,
            help="-v: debug logs; -vv: also tracebacks (any command).",
        ),
    ] = 0,
) -> None:
    """Run a Source of work items through a Service: concurrency, retries, logs and progress included."""
    _global.output_dir = output_dir
    _global.verbose = verbose


@contextmanager
def _errors_as_exit_codes(verbosity: int = 0, *, log_format: str = "text") -> Iterator[None]:
    """The CLI's one error boundary: a BatchframeError becomes a panel and its exit code.

    Any other exception is a bug of batchframe's: a panel that says so (exit 1), its traceback with -vv.
    With ``--log-format json`` a BatchframeError is one JSON object instead of a panel.
    """
    from batchframe.errors import BatchframeError, InternalError

    verbosity = _verbosity(verbosity)
    try:
        yield
    except BatchframeError as error:
        if log_format == "json":
            _json_error(error)
        else:
            from batchframe._console import print_error

            print_error(error, show_traceback=verbosity >= 2)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:
        if _is_click_control(exc):
            raise  # typer's Exit and Abort, click's usage errors: typer reports them itself
        from batchframe._console import print_error

        bad_path = _bad_path_error(exc)
        if bad_path is not None:
            print_error(bad_path, show_traceback=verbosity >= 2)
            raise typer.Exit(bad_path.exit_code) from None

        print_error(InternalError.from_exception(exc), show_traceback=verbosity >= 2)
        raise typer.Exit(InternalError.exit_code) from None


def _json_error(error: BatchframeError) -> None:
    """An error as the one JSON line ``--log-format json`` promises for everything the command prints."""
    _json_line(str(error), level=logging.ERROR, title=error.title, exit_code=error.exit_code)


def _json_line(message: str, *, level: int, **more: object) -> None:
    """One JSON object on stderr, with the fields of the run's JSON log lines (``JsonFormatter``)."""
    import json

    from batchframe.runfolder.logs import JsonFormatter

    fields = {"name": "batchframe", "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
    line = json.loads(JsonFormatter(None).format(logging.makeLogRecord(fields)))
    typer.echo(json.dumps({**line, **more}, ensure_ascii=False), err=True)


def _bad_path_error(exc: Exception) -> UsageError | None:
    """A path on the command line the system refuses (a name over 255 characters, a symlink loop), as a usage error."""
    import errno
    import os

    from batchframe.errors import UsageError

    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):
        too_long = exc.errno == errno.ENAMETOOLONG
        path = exc.filename if exc.filename is not None else "a path given"
        why = "its symbolic links form a loop"
        if too_long:
            long_part = any(len(os.fsencode(part)) > _NAME_MAX for part in Path(str(path)).parts)
            why = (
                f"a part of it is longer than a file name may be ({_NAME_MAX} bytes)" if long_part else "it is too long"
            )
        hint = "Give a path whose every part is shorter." if too_long else "Give a path without the loop."
        return UsageError(f"The path {path} cannot be used: {why}.", hint=hint)
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from"):  # pathlib's resolve()
        return UsageError(f"{exc}: its symbolic links form a loop.", hint="Give a path without the loop.")
    return None


def _is_click_control(exc: Exception) -> bool:
    """Whether ``exc`` is one of typer's or click's own exceptions (typer vendors click in newer versions)."""
    return any(cls.__module__.split(".")[0] in ("typer", "click") for cls in type(exc).__mro__)


@app.command("exec", cls=Command, context_settings={"allow_extra_args": True})
def exec_(
    ctx: typer.Context,
    path: PathArg,
    param: ParamOpt = None,
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    verbose: VerboseOpt = 0,
    no_input: Annotated[bool, typer.Option("--no-input", help="Never prompt; fail if a parameter is missing.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count the Source's items and show the first few; process none, create no run folder."
        ),
    ] = False,
    limit: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--limit",
            min=1,
            metavar="N",
            help="Process only the first N items of the Source; resume keeps the limit.",
        ),
    ] = None,
    log_format: LogFormatOpt = "text",
) -> None:
    """Run a project: every item of its Source through its Service.

    Set parameters with -p NAME=VALUE; batchframe params PATH lists them (type, default,
    description). On a terminal, missing required ones are asked for and Ctrl-C pauses the run
    (a shell opens; leaving it resumes). --dry-run counts the items without processing any.

    \b
    Exit codes:
      0    every item succeeded
      1    fatal: the Source, a constructor or a hook raised
      2    usage error: bad path, config or parameter
      3    finished, but some items failed
      130  interrupted (Ctrl-C, or self.stop() in the shell)
      143  terminated (SIGTERM)
    """  # noqa: D301 - \b is click's "do not rewrap this paragraph" marker
    with _errors_as_exit_codes(verbose, log_format=log_format):
        from batchframe.run.commands import run_project

        _reject_extra_args(ctx.args, param or [])
        _usable(path)
        interactive = _interactive(no_input)
        ask_missing = _prompts() if interactive else None
        if dry_run:
            from batchframe.cli import dry_run as _dry_run

            report = _dry_run.dry_run(
                path,
                config=config,
                params=param or [],
                ask_missing=ask_missing,
                output_dir=_output_dir(output_dir),
                limit=limit,
                verbosity=_verbosity(verbose),
            )
            _dry_run.show(report)
            code = report.exit_code
        else:
            code = run_project(
                path,
                config=config,
                params=param or [],
                output_dir=_output_dir(output_dir),
                verbosity=_verbosity(verbose),
                interactive=interactive,
                ask_missing=ask_missing,
                limit=limit,
                log_format=log_format,
            ).exit_code
    _exit(code)


_THREAD_GRACE_S = 1.0


def _exit(code: int) -> None:
    """End the process with ``code``, even if a thread is still blocked in the user's code.

    The run's records are written by now. A sync ``process`` stuck past its timeout (or cancelled by
    a forced stop) keeps its thread, and Python would wait for it at exit: leave without waiting.
    """
    import threading
    import time

    deadline = time.monotonic() + _THREAD_GRACE_S  # threads that are just finishing are not stuck
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    # dask's offload pool never runs user code and Python ends its idle threads at exit: not stuck.
    stuck = [t for t in stuck if not t.name.startswith("Dask-Offload")]
    for thread in stuck:
        thread.join(max(deadline - time.monotonic(), 0))
    _end_lingering_children(deadline)
    if any(thread.is_alive() for thread in stuck):
        import logging
        import os

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe
                stream.flush()
        os._exit(code)
    raise typer.Exit(code)


def _end_lingering_children(deadline: float) -> None:
    """Child processes the user's code started and left running would hold the exit (Python joins them): end them.

    Each gets until ``deadline`` to finish, then is stopped (SIGTERM, then SIGKILL), and a line on stderr names it.
    """
    if "multiprocessing" not in sys.modules:
        return
    import multiprocessing
    import time

    children = [child for child in multiprocessing.active_children() if not child.daemon]
    for child in children:
        child.join(max(deadline - time.monotonic(), 0))
        if child.is_alive():
            typer.echo(
                f"Warning: your code started the process {child.name!r} (pid {child.pid}) and left it running; "
                "batchframe stops it so the run can end. Join it in process() or finish() if it must finish.",
                err=True,
            )
            child.terminate()
            child.join(0.5)
            if child.is_alive():  # a forked child keeps the run's signal handlers: SIGTERM may not end it
                child.kill()
                child.join(1.0)


def _prompts() -> AskMissing:
    from batchframe.cli.prompts import ask_missing

    return ask_missing


def _reject_extra_args(extra: list[str], params: list[str]) -> None:
    """Extra words after PATH: most often ``-p name value``, the spelling of old READMEs."""
    if not extra:
        return
    from batchframe.errors import ParamError

    bare = [p for p in params if "=" not in p]
    if bare:
        fixed = " ".join(f"-p {name}={value}" for name, value in zip(bare, extra, strict=False))
        raise ParamError(
            f"Parameters are given as -p NAME=VALUE, not -p NAME VALUE (got: {' '.join(extra)!r}).",
            hint=f"Write: {fixed}",
        )
    raise ParamError(
        f"Unexpected argument(s): {' '.join(extra)}. batchframe exec takes one PATH.",
        hint="Set parameters with -p NAME=VALUE; see batchframe exec --help.",
    )


@app.command("params", cls=Command)
def params(path: PathArg, config: ConfigOpt = None, param: ParamOpt = None, verbose: VerboseOpt = 0) -> None:
    """List a project's parameters with their values and sources.

    Each one is settable with exec -p NAME=VALUE or a BATCHFRAME_PARAM_NAME environment
    variable (-p wins); the table shows its type, its value (or "required"), where that value
    comes from, and its description. Secret values show as **********.
    """
    with _errors_as_exit_codes(verbose):
        import dataclasses

        from batchframe._console import print_params
        from batchframe.configuration import Configuration
        from batchframe.errors import ConfigError
        from batchframe.project.compat import fold_alias_assignments
        from batchframe.project.load import load_project
        from batchframe.project.params import split_assignments
        from batchframe.run.prepare import collect_specs, resolve_with_sources

        unchosen: list[str] = []
        try:
            project = load_project(path, config)
        except ConfigError as error:
            if config is not None or not error.available:
                raise
            # Several configs and no -c: list what every config shares (the project's own parameters,
            # the runtime settings with batchframe's defaults), and say that -c adds the config's own.
            unchosen = error.available
            project = dataclasses.replace(load_project(path, unchosen[0]), config_cls=Configuration)
        chosen = f" (config {project.config_name})" if project.config_name and not unchosen else ""
        specs = collect_specs(project)
        values, sources = resolve_with_sources(specs, fold_alias_assignments(split_assignments(param or [])))
        print_params(f"Parameters of {path}{chosen}", specs, values, sources, unchosen_configs=unchosen)


@app.command("init", cls=Command)
def init(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The new project's folder (its package takes the same name).")
    ],
    defaults: Annotated[bool, typer.Option("--defaults", help="Ask nothing: use the default answers.")] = False,
    data: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--data", help="Answer a template question: --data source_kind=csv (repeatable).", metavar="KEY=VALUE"
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Render into a folder that is not empty.")] = False,
    no_git: Annotated[bool, typer.Option("--no-git", help="Do not make the project a git repository.")] = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Create a new project from batchframe's template.

    copier asks the questions (the Source's kind, the configs...); --defaults asks none.
    """
    with _errors_as_exit_codes(verbose):
        from batchframe.scaffold import create as scaffold

        answers = scaffold.parse_data(data or [], scaffold.templates_root() / "project")
        ask = not defaults and _interactive(no_input=False)
        target = scaffold.init_project(name, data=answers, defaults=not ask, force=force, git_init=not no_git)
        _print_next_steps(target)


def _print_next_steps(target: Path) -> None:
    from batchframe._console import print_line
    from batchframe.project.configs import list_configs
    from batchframe.scaffold.create import find_config_dir, package_name_for

    package = package_name_for(target.name)
    configs = list_configs(find_config_dir(target))
    config = f" -c {configs[0]}" if configs else ""
    print_line(f"Created {target} (package {package}, configs: {', '.join(configs) or 'none'}).", style="green")
    # Commands, one per line and never wrapped: each is copied as it is.
    for line in ("Next:", f"  cd {target}", f"  batchframe exec {package}{config}",
                 f"  batchframe params {package}{config}",
                 "  python -m pip install pytest    # the project's tests need it", "  python -m pytest"):  # fmt: skip
        print_line(line)


@app.command("new-config", cls=Command)
def new_config(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The config's name: staging creates config/config_staging.py.")
    ],
    project: Annotated[
        Path,
        typer.Option(
            "--project", metavar="DIR", show_default=False, help="The project folder (default: the current folder)."
        ),
    ] = Path(),
    verbose: VerboseOpt = 0,
) -> None:
    """Add a configuration to a project: config/config_NAME.py.

    The new config subclasses the project's abstract config; use it with exec -c config_NAME.
    """
    with _errors_as_exit_codes(verbose):
        from batchframe._console import print_line
        from batchframe.scaffold import create as scaffold

        path = scaffold.new_config(name, project=project)
        print_line(f"Created {path}. Use it with:", style="green")
        print_line(f"  batchframe exec {path.parent.parent} -c {path.stem}")


@app.command("update", cls=Command)
def update(
    project: Annotated[
        Path,
        typer.Argument(metavar="DIR", show_default=False, help="The project folder (default: the current folder)."),
    ] = Path(),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Without git: re-render anyway, after saving every file it overwrites to a backup folder."
        ),
    ] = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Bring a project up to date with batchframe's templates.

    For a project made with batchframe init: your answers and your edits are kept.
    """
    with _errors_as_exit_codes(verbose):
        from batchframe._console import print_line
        from batchframe.scaffold import create as scaffold

        report = scaffold.update_project(project, force=force)
        if report.merged:
            print_line(f"Updated {project} to the templates {report.ref} (three-way merge).", style="green", prose=True)
        else:
            review = (
                f"diff -r {report.backup} {project}" if report.backup is not None else "git diff"
            )  # without git, the backup is what there is to compare with
            print_line(f"Re-rendered {project} (recopy: {report.reason}).", style="yellow", prose=True)
            print_line(f"Review your edits with: {review}", style="yellow")
        for path in report.conflicts:
            print_line(f"Conflict in {path}: resolve the <<<<<<< markers.", style="red")
        if report.conflicts:
            raise typer.Exit(1)


RunDirArg = Annotated[
    Path, typer.Argument(metavar="RUN_DIR", help="A run folder, e.g. batchframe_outputs/2026-11-25T10-30-00.")
]


NoInputOpt = Annotated[bool, typer.Option("--no-input", help="Never open the pause shell.")]


NoDryRunOpt = Annotated[bool, typer.Option("--dry-run", hidden=True)]
"""Hidden: only to say that resume and retry have no dry run (instead of click's "No such option")."""


@app.command("resume", cls=Command)
def resume(
    run_dir: RunDirArg,
    verbose: VerboseOpt = 0,
    no_input: NoInputOpt = False,
    dry_run: NoDryRunOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Continue a stopped or killed run where it left off.

    The items it finished are skipped; the rest are processed, in the same run folder.
    """
    if dry_run:
        _no_dry_run("resume", run_dir, verbose)
    from batchframe.run.commands import resume_run  # the engine loads only for the commands that run it

    _from_run_dir(resume_run, run_dir, verbose, no_input, log_format)


@app.command("retry", cls=Command)
def retry(
    run_dir: RunDirArg,
    verbose: VerboseOpt = 0,
    no_input: NoInputOpt = False,
    dry_run: NoDryRunOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """Run again the items of a run that did not succeed.

    Only the items that failed (or were not processed) in RUN_DIR, in a new run folder.
    """
    if dry_run:
        _no_dry_run("retry", run_dir, verbose)
    from batchframe.run.commands import retry_run

    _from_run_dir(retry_run, run_dir, verbose, no_input, log_format)


def _no_dry_run(command: str, run_dir: Path, verbose: int) -> None:
    """``resume --dry-run``, ``retry --dry-run``: a usage error that says where to look instead."""
    with _errors_as_exit_codes(verbose):
        from batchframe.errors import UsageError

        does = (
            "continues a run that exists, with the parameters it started with"
            if command == "resume"
            else "re-runs the items that failed in a run that exists"
        )
        raise UsageError(
            f"batchframe {command} has no --dry-run: it {does}.",
            hint=f"See what is done, failed and left with: batchframe runs {run_dir}\n"
            "(--dry-run is for a new run: batchframe exec PATH --dry-run counts a project's items.)",
        )


def _from_run_dir(
    command: Callable[..., RunResult], run_dir: Path, verbose: int, no_input: bool, log_format: str
) -> None:
    """Run ``resume_run`` or ``retry_run`` as the CLI does: errors as exit codes, prompts on a terminal."""
    with _errors_as_exit_codes(verbose, log_format=log_format):
        from batchframe.run import commands as run

        _usable(run_dir)
        interactive = _interactive(no_input)
        try:
            result = command(
                run_dir,
                verbosity=_verbosity(verbose),
                interactive=interactive,
                ask_missing=_prompts() if interactive else None,  # secrets are asked for again
                log_format=log_format,
            )
        except run.AlreadyFinished as done:
            if log_format == "json":
                _json_line(str(done), level=logging.INFO)
            else:
                from batchframe._console import print_line

                print_line(str(done), prose=True)
            raise typer.Exit(0) from None
    _exit(result.exit_code)


@app.command("tune", cls=Command)
def tune(run_dir: RunDirArg, param: ParamOpt = None, verbose: VerboseOpt = 0) -> None:
    """Change a running run's limits: concurrency, max_per_second, max_per_minute, adaptive.

    The run takes the change within half a second and logs it; the journal keeps it, so a resume goes
    on with it. Example: batchframe tune batchframe_outputs/2026-11-25T10-30-00 -p max_per_second=5
    """
    with _errors_as_exit_codes(verbose):
        from batchframe._console import print_line
        from batchframe.run.tune import parse_tune, tune_run

        values = parse_tune(param or [])
        changed = tune_run(_usable(run_dir), values)
        if changed:
            print_line(f"Tuned {run_dir}:")
            for line in changed:
                print_line(f"  {line}")
        else:
            print_line(f"Nothing changed in {run_dir}: " + ", ".join(f"{name} is so already" for name in values))


@app.command("runs", cls=Command)
def runs(
    run_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(metavar="RUN_DIR", help="Show this one run in detail."),
    ] = None,
    output_dir: OutputOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """List past runs (newest first), or show one run's summary.

    Runs are looked for in batchframe_outputs in the current folder, or in the folder -d names.
    """
    with _errors_as_exit_codes(verbose):
        from batchframe.runfolder import history

        if run_dir is not None:
            history.show_run(_usable(run_dir))
        else:
            history.show_runs(_output_dir(output_dir))


_UI_PACKAGES = {"starlette", "uvicorn", "jinja2", "python_multipart", "multipart", "anyio"}


@app.command("ui", cls=Command)
def ui(
    path: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(metavar="PATH", help="The project to start runs of (as for exec). Without it: the runs only."),
    ] = None,
    config: ConfigOpt = None,
    output_dir: OutputOpt = None,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to listen on (other than 127.0.0.1: a warning).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on (0: any free port).")] = 8765,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser; only print the URL.")
    ] = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Open the local web UI: start, follow and steer runs.

    Start runs of PATH with a form, follow and pause/resume/stop runs live, list past runs.
    """
    with _errors_as_exit_codes(verbose):
        from batchframe.errors import UsageError

        try:
            from batchframe.ui.server import serve
        except ImportError as exc:
            if (exc.name or "").split(".")[0] not in _UI_PACKAGES:
                raise
            raise UsageError(
                "The UI needs the ui extra: pip install 'batchframe[ui]'", hint=f"({exc.name} is not installed.)"
            ) from None
        serve(
            path if path is None else _usable(path),
            config=config,
            output_dir=_output_dir(output_dir),
            host=host,
            port=port,
            open_browser=not no_browser,
        )


def _interactive(no_input: bool) -> bool:
    return not no_input and sys.stdin.isatty() and sys.stdout.isatty()
