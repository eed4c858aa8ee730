"""Watching the run's event loop for user code that blocks it, and ending the process when it does.

asyncio's signal handlers run as callbacks of the loop: an ``async def process`` that calls
``time.sleep(3600)`` (or any blocking call) holds the loop, so SIGINT and SIGTERM would wait for it
forever. ``LoopWatch`` keeps a heartbeat on the loop and a thread that notices when it stops:

- after ``WARN_AFTER_S`` of a blocked loop it logs one warning that names the blocking code's likely
  home (``process``) and what to write instead;
- its own signal handler runs in the main thread whatever the loop does (Python runs signal
  handlers between bytecodes, and a blocking sleep or read is interrupted for them): a second signal
  while the loop is blocked ends the process at once. Nothing is lost: the journal has what
  finished, and the items in flight stay pending for ``batchframe resume``, as after a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from batchframe.runfolder.outcome import signal_exit_code

logger = logging.getLogger(__name__)

BEAT_EVERY_S = 0.25
BLOCKED_AFTER_S = 1.0
"""A loop without a heartbeat for this long is blocked: a signal then cannot reach the run through it."""
WARN_AFTER_S = 2.0
FLUSH_WAIT_S = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LoopWatch:
    """The heartbeat of one event loop, a thread that watches it, and a signal handler that does not need it.

    Args:
        loop: the run's event loop.
        blocker: what most likely blocks it, for the warning (e.g. ``"Work.process"``).
        before_exit: writes what the run's records hold in memory (items that finished in the loop's
            last iteration), given at most ``FLUSH_WAIT_S`` before the process ends.
        exit_now: ends the process with an exit code (``os._exit`` by default).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        blocker: str,
        before_exit: Callable[[], None] | None = None,
        exit_now: Callable[[int], None] = os._exit,
    ) -> None:
        self.loop = loop
        self.blocker = blocker
        self.before_exit = before_exit
        self.exit_now = exit_now
        self.driving = False
        self._beat = time.monotonic()
        self._beat_handle: asyncio.TimerHandle | None = None
        self._warned = False
        self._blocked_signals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ the heartbeat

    def start(self) -> None:
        """Start beating on the loop and watching from a thread."""
        self._beat = time.monotonic()
        self._schedule_beat()
        self._thread = threading.Thread(target=self._watch, name="batchframe-loop-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the run is over)."""
        self._stop.set()
        if self._beat_handle is not None:
            self._beat_handle.cancel()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @contextlib.contextmanager
    def driving_loop(self) -> Iterator[None]:
        """While the loop runs for the run (not while a shell holds it stopped), a missing beat means blocked."""
        self._beat = time.monotonic()
        self.driving = True
        try:
            yield
        finally:
            self.driving = False

    def _schedule_beat(self) -> None:
        self._beat_handle = self.loop.call_later(BEAT_EVERY_S, self._on_beat)

    def _on_beat(self) -> None:
        self._beat = time.monotonic()
        self._blocked_signals = 0
        if not self._stop.is_set():
            self._schedule_beat()

    @property
    def blocked_s(self) -> float:
        """How long the loop has gone without a beat while driven (0 when it is fine or not driven)."""
        if not self.driving:
            return 0.0
        return max(time.monotonic() - self._beat - BEAT_EVERY_S, 0.0)

    def _watch(self) -> None:
        while not self._stop.wait(BEAT_EVERY_S):
            if not self._warned and self.blocked_s >= WARN_AFTER_S:
                self._warned = True
                logger.warning(
                    "The event loop has been blocked for %.0f s: %s (an async def) calls blocking code, such as "
                    "time.sleep or a synchronous client. Nothing else runs meanwhile, not even a stop. Await "
                    "asyncio.sleep or an async client instead, or write it as a plain def: batchframe runs a "
                    "plain def in threads.",
                    self.blocked_s,
                    self.blocker,
                )

    # ------------------------------------------------------------------------------------ signals

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in the main thread too (asyncio's own handlers stay: they run on the loop).

        asyncio's ``add_signal_handler`` sets a wakeup file descriptor and a no-op Python handler;
        replacing the Python handler keeps the wakeup, so the loop still gets the signal.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.blocked_s < BLOCKED_AFTER_S:
            return  # the loop runs: its own handler takes the signal
        self._blocked_signals += 1
        name = signal.Signals(signum).name
        if self._blocked_signals == 1:
            _say(
                f"batchframe: received {name}, but {self.blocker} is blocking the event loop. Send it again to end "
                "the process now: the items in flight stay pending for batchframe resume.\n"
            )
            return
        _say(f"batchframe: received {name} again; ending now. The items in flight stay pending: batchframe resume.\n")
        if self.before_exit is not None:
            # On a thread: if the interrupted code holds a lock the records need, the exit does not wait for it.
            writer = threading.Thread(
                target=_quietly, args=(self.before_exit,), name="batchframe-last-flush", daemon=True
            )
            writer.start()
            writer.join(FLUSH_WAIT_S)
        self.exit_now(signal_exit_code(signum))


def _quietly(action: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):  # the process ends anyway: a resume redoes what was not written
        action()


def _say(text: str) -> None:
    """Write to stderr from a signal handler: no logging (its lock may be held by the interrupted code)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))
