"""Drives the driver's event loop: signals, the pause shell, the emergency shell, progress.

On a terminal, Ctrl-C pauses (in-flight items finish; a second Ctrl-C cancels them back to pending)
and opens the IPython shell with the loop stopped; leaving the shell resumes the run. Off a terminal
(or with ``--no-input``), SIGINT and SIGTERM stop the run gracefully. A second signal while stopping
forces the stop: in-flight items are cancelled and recorded as not processed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from batchframe.run.driver import Driver
from batchframe.run.loop_watch import LoopWatch
from batchframe.run.progress import ProgressDisplay
from batchframe.runfolder.outcome import Outcome

if TYPE_CHECKING:
    from batchframe.runfolder.live import RunLink

logger = logging.getLogger(__name__)

OpenShell = Callable[[Mapping[str, Any], str], None]


class Supervisor:
    """Runs a driver to the end on its own event loop.

    Args:
        driver: the driver to run.
        progress: the progress display (suspended while a shell is open).
        interactive: whether Ctrl-C opens the pause shell (a terminal, and input allowed).
        namespace: the names the shell gets besides ``executor``/``self`` and ``stats``.
        open_shell: opens a shell with a namespace and a banner (the IPython one by default).
        link: the run folder's status.json and control.json (pause, resume, stop from outside).
        loop: the event loop to run on, left open afterwards for the end of the run (the Service's
            async ``finish`` runs on it); None: a loop of its own, closed at the end of ``run``.
        flush_records: writes the records held in memory: called before a second signal ends a run
            whose loop user code blocks.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        progress: ProgressDisplay,
        interactive: bool,
        namespace: Mapping[str, Any] | None = None,
        open_shell: OpenShell | None = None,
        link: Callable[[Supervisor], RunLink] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        flush_records: Callable[[], None] | None = None,
    ) -> None:
        self.driver = driver
        self.progress = progress
        self.interactive = interactive
        self.namespace = dict(namespace or {})
        self.open_shell = open_shell or _ipython_shell
        self.stopped_by: signal.Signals | None = None
        self._pause_ready: asyncio.Future[None] | None = None
        self._given_loop = loop
        self._flush_records = flush_records
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_watch: asyncio.Future[None] | None = None
        self._loop_watch: LoopWatch | None = None
        self.link = link(self) if link is not None else None

    def run(self) -> None:
        """Run the driver until it finishes, pausing for the shell as the user asks."""
        loop = self._loop = self._given_loop or asyncio.new_event_loop()
        try:
            service = self.namespace.get("service")
            self._loop_watch = LoopWatch(
                loop, blocker=f"{type(service).__qualname__}.process", before_exit=self._flush_records
            )
            self._install_signal_handlers()
            task = loop.create_task(self.driver.run())
            self._loop_watch.start()
            if self.link is not None:
                self.link.start(loop)
            with self.progress:
                try:
                    self._drive(task)
                except BaseException:
                    self._finish_after_error(task)
                    raise
                if self.driver.outcome is Outcome.FATAL and self.interactive:
                    self._shell(emergency=True)
            task.result()
        finally:
            if self._loop_watch is not None:
                self._loop_watch.stop()
            if self.link is not None:
                self.link.close()
            self._remove_signal_handlers()
            if self._given_loop is None:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
            self._loop = None

    def _finish_after_error(self, task: asyncio.Task[Any]) -> None:
        """Something broke the driving loop: stop the run so every item is still recorded."""
        if task.done() or self._loop is None:
            return
        self.driver.stop("the run was interrupted", force=True)
        self._loop.run_until_complete(task)

    def _drive(self, task: asyncio.Task[Any]) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            self._pause_ready = loop.create_future()
            assert self._loop_watch is not None
            with self._loop_watch.driving_loop():
                loop.run_until_complete(asyncio.wait({task, self._pause_ready}, return_when=asyncio.FIRST_COMPLETED))
            if task.done():
                return
            self._shell(emergency=False)
            self.driver.resume()

    # ----------------------------------------------------------------------------------- signals

    def _install_signal_handlers(self) -> None:
        loop = self._loop
        assert loop is not None
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (e.g. batchframe.testing called from a thread)
        loop.add_signal_handler(signal.SIGINT, self._on_signal, signal.SIGINT)
        loop.add_signal_handler(signal.SIGTERM, self._on_signal, signal.SIGTERM)
        if self._loop_watch is not None:
            self._loop_watch.install()  # reaches the run when user code blocks the loop

    def _remove_signal_handlers(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or threading.current_thread() is not threading.main_thread():
            return
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)

    def _on_signal(self, signum: signal.Signals) -> None:
        driver = self.driver
        if signum == signal.SIGINT and self.interactive and self.stopped_by is None:
            if driver.paused:
                logger.warning("Cancelling the items in flight; they go back to pending.")
                driver.cancel_in_flight()
            else:
                logger.warning("Pausing: in-flight items finish, then a shell opens (Ctrl-C again to cancel them).")
                driver.pause()
                self._idle_watch = asyncio.ensure_future(self._when_idle())
            return
        force = self.stopped_by is not None
        self.stopped_by = self.stopped_by or signal.Signals(signum)
        driver.stop(f"received {signal.Signals(signum).name}", force=force)

    def control(self, command: str, values: Mapping[str, Any] | None = None) -> list[str]:
        """Carry out a command sent from outside (``batchframe tune``, ``batchframe ui``): no shell, unlike Ctrl-C.

        Returns:
            What a ``tune`` changed, one ``name: old -> new`` line each (empty for the other commands).

        Raises:
            ParamError: a tune's value that ``-p`` would refuse (nothing is changed).
        """
        driver = self.driver
        if command == "tune":
            return driver.tune(**dict(values or {}))
        if command == "pause" and not driver.paused:
            logger.warning("Pausing (asked through control.json): in-flight items finish, no more start.")
            driver.pause()
            driver.stats.pause_clock()
        elif command == "resume" and driver.paused:
            logger.warning("Resuming (asked through control.json).")
            driver.stats.resume_clock()
            driver.resume()
        elif command == "stop":
            driver.stats.resume_clock()
            driver.stop("stopped from the web UI")
        return []

    async def _when_idle(self) -> None:
        await self.driver.wait_idle()
        if self._pause_ready is not None and not self._pause_ready.done() and self.driver.paused:
            self._pause_ready.set_result(None)

    # ------------------------------------------------------------------------------------- shell

    def _shell(self, *, emergency: bool) -> None:
        driver = self.driver
        namespace = {
            **self.namespace,
            "executor": driver,
            "self": driver,
            "stats": driver.stats,
        }
        # The shell handles Ctrl-C itself once it runs. Until then (IPython takes a moment to load), Ctrl-C
        # again cancels the items in flight, as it does while the run pauses, instead of ending the run.
        self._remove_signal_handlers()
        _on_ctrl_c(driver.cancel_in_flight)
        self.progress.suspend()
        driver.stats.pause_clock()  # rate and ETA count running time only
        try:
            self._open_shell(namespace, _banner(driver, emergency=emergency))
        except KeyboardInterrupt:
            # Ctrl-C reached both attempts to open the shell: the user wants out, so stop, losing nothing.
            driver.stop("interrupted while the shell was opening")
        except Exception:
            logger.exception("The shell failed; the run goes on.")
        finally:
            self._install_signal_handlers()  # first: a Ctrl-C from now on pauses the resumed run again
            driver.stats.resume_clock()
            self.progress.resume()
        if driver.outcome is Outcome.STOPPED and self.stopped_by is None:
            self.stopped_by = signal.SIGINT

    def _open_shell(self, namespace: Mapping[str, Any], banner: str) -> None:
        """Open the shell, once more if a Ctrl-C ended the first attempt.

        ``_ipython_shell`` gives Ctrl-C back to Python just before IPython's prompt takes the terminal
        over: a Ctrl-C in that instant is still the "Ctrl-C again" of a double Ctrl-C, not a request
        to end the run.

        Raises:
            KeyboardInterrupt: the second attempt was interrupted as well.
        """
        try:
            self.open_shell(namespace, banner)
        except KeyboardInterrupt:
            self.driver.cancel_in_flight()
            _on_ctrl_c(self.driver.cancel_in_flight)
            self.open_shell(namespace, banner)


def _on_ctrl_c(action: Callable[[], None]) -> None:
    """From now on SIGINT calls ``action`` instead of raising KeyboardInterrupt (signals reach the main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda signum, frame: action())


def _banner(driver: Driver, *, emergency: bool) -> str:
    from batchframe.run.progress import describe

    if emergency:
        head = f"batchframe emergency shell: the run failed with {driver.fatal_error!r}."
        tail = "Inspect executor, source, service, config and stats; leave the shell (exit) to end the run."
    else:
        head = "batchframe paused."
        tail = (
            "Leave the shell (exit or Ctrl-D) to resume; self.stop() then exit to end the run gracefully; "
            "self.tune(max_per_second=5) changes a limit (also concurrency, max_per_minute, adaptive)."
        )
    names = "Names: executor (also self), source, service, config, stats."
    return _wrap([head, describe(driver.stats), names, tail])


def _wrap(paragraphs: list[str]) -> str:
    """One paragraph per line, wrapped at word boundaries to the terminal's width (not cut mid-word by it)."""
    import shutil
    import textwrap

    width = shutil.get_terminal_size().columns
    lines = [textwrap.fill(p, width=width, break_on_hyphens=False) for p in paragraphs]
    return "\n".join(lines) + "\n"


def _ipython_shell(namespace: Mapping[str, Any], banner: str) -> None:
    from IPython.terminal.embed import InteractiveShellEmbed
    from traitlets.config import Config

    # Settings as config, not keywords: an IPython without a trait ignores it (enable_tip is recent).
    config = Config()
    config.TerminalInteractiveShell.enable_tip = False  # no random "Tip:" line after our banner
    config.TerminalInteractiveShell.confirm_exit = False  # Ctrl-D resumes at once, no "Do you really want to exit?"
    InteractiveShellEmbed.clear_instance()
    shell = InteractiveShellEmbed(  # type: ignore[no-untyped-call]
        config=config, banner1=banner, exit_msg="Leaving the batchframe shell."
    )
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C interrupts code typed in the shell, as in any Python shell (Supervisor._open_shell had
        # turned it into "cancel the items in flight" while IPython loaded).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    shell(local_ns=dict(namespace))
