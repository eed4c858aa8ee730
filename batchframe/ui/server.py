"""``batchframe ui``: bind the port, build the app, print the URL, open a browser, serve with uvicorn."""

from __future__ import annotations

import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path
from types import FrameType

# Starlette parses forms with python-multipart but imports it only at the first POST: import it now,
# so that a missing extra is reported when the server starts.
import python_multipart  # noqa: F401
import uvicorn

from batchframe.errors import ProjectError, UsageError
from batchframe.ui._security import url_host
from batchframe.ui.app import UISettings, create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_SHUTDOWN_GRACE_S = 2  # open event streams would otherwise keep Ctrl-C waiting


def serve(
    project: Path | None,
    *,
    config: str | None,
    output_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the UI until Ctrl-C: print the URL with its token (one line on stdout), then open it.

    Args:
        project: the project the "Start a run" page runs; None shows the runs only.
        config: the config the form starts with.
        output_dir: where run folders are (as ``batchframe exec -d``).
        host: the address to bind; anything but 127.0.0.1 prints a warning.
        port: the port (0 picks a free one).
        open_browser: open the URL in the default browser.
        echo: where the URL line goes.

    Raises:
        ProjectError: ``project`` does not exist.
        UsageError: the port is taken or the address cannot be bound.
    """
    if project is not None and not project.exists():
        raise ProjectError(f"{project} does not exist.", hint="Give a .py file or a project folder: batchframe ui PATH")
    listener = _listen(host, port)
    settings = UISettings(
        output_dir=output_dir.resolve(),
        project=project.resolve() if project is not None else None,
        config=config,
        host=host,
        port=listener.getsockname()[1],
    )
    if host != DEFAULT_HOST:
        print(
            f"Warning: the UI listens on {host}, not only on this machine's 127.0.0.1. Whoever can reach it "
            "and has the link can start runs of this project.",
            file=sys.stderr,
        )
    url = f"http://{url_host(host)}:{settings.port}/?token={settings.token}"
    app = create_app(settings)
    server = _Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,  # the event streams and the polled table would flood the terminal
            proxy_headers=False,
            lifespan="on",
            timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
        ),
        stopping=app.state.stopping,
    )
    echo(url)
    sys.stdout.flush()
    if open_browser:
        # The socket already listens, so the browser's first request waits in its backlog for uvicorn.
        threading.Thread(target=webbrowser.open, args=(url,), name="batchframe-ui-browser", daemon=True).start()
    server.run(sockets=[listener])


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app's event streams to end as soon as it is asked to stop."""

    def __init__(self, config: uvicorn.Config, *, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Ctrl-C (or SIGTERM): flag the app, then shut down as uvicorn does."""
        self.stopping.set()
        super().handle_exit(sig, frame)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening; a taken port is a clear error, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    if sys.platform != "win32":  # on Windows SO_REUSEADDR would let two servers share the port
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise UsageError(
            f"batchframe ui cannot listen on {url_host(host)}:{port} ({exc.strerror or exc}).",
            hint=f"Another program (maybe another batchframe ui) uses it: pick another with --port {port + 1}, "
            "or --port 0 for any free port.",
        ) from None
    return listener
