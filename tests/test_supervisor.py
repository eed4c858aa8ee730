"""The supervisor's signal handling and shells, in-process with a stand-in shell (pexpect tests use the real one)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from contextlib import nullcontext

from batchframe import Service, Source
from batchframe.run.driver import Driver, DriverSettings, Outcome
from batchframe.run.supervisor import Supervisor
from batchframe.runfolder.failures import NOT_PROCESSED


class Numbers(Source[int]):
    def __init__(self, count: int = 30) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)


class SignalsItself(Service[int]):
    """Sends a signal to its own process while processing ``at``."""

    def __init__(self, signum: int = signal.SIGINT, at: int = 5) -> None:
        self.signum = signum
        self.at = at
        self.done: list[int] = []

    async def process(self, item: int) -> None:
        if item == self.at:
            os.kill(os.getpid(), self.signum)
        await asyncio.sleep(0.001)
        self.done.append(item)


class NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def suspend(self) -> None:
        pass

    def resume(self) -> None:
        pass


def supervise(source, service, *, interactive: bool, shell=None):
    failed: list = []
    executor = Driver(source, service, settings=DriverSettings(concurrency=2), on_failure=failed.append)
    executor.failed = failed
    calls = []

    def fake_shell(namespace, banner):
        calls.append((dict(namespace), banner))
        if shell is not None:
            shell(namespace)

    supervisor = Supervisor(
        executor,
        progress=NoProgress(),
        interactive=interactive,
        namespace={"source": source, "service": service, "config": None},
        open_shell=fake_shell,
    )
    with nullcontext():
        supervisor.run()
    return executor, supervisor, calls


def test_ctrl_c_on_a_terminal_pauses_opens_the_shell_and_resumes() -> None:
    service = SignalsItself()
    executor, supervisor, calls = supervise(Numbers(), service, interactive=True)
    assert len(calls) == 1
    namespace, banner = calls[0]
    assert {"executor", "self", "source", "service", "config", "stats"} <= set(namespace)
    assert namespace["self"] is executor
    assert "paused" in banner
    names = re.search(r"Names: (.*?)\.", " ".join(banner.split())).group(1)  # type: ignore[union-attr]
    assert set(re.findall(r"\w+", names)) - {"also"} <= set(namespace)  # the banner names only what exists
    assert executor.outcome is Outcome.COMPLETED
    assert sorted(service.done) == list(range(30))
    assert supervisor.stopped_by is None


def test_stop_in_the_shell_ends_the_run_and_records_the_rest() -> None:
    service = SignalsItself()
    executor, supervisor, calls = supervise(
        Numbers(), service, interactive=True, shell=lambda ns: ns["self"].stop("stopped from the shell")
    )
    assert len(calls) == 1
    assert executor.outcome is Outcome.STOPPED
    assert supervisor.stopped_by == signal.SIGINT
    not_done = [f.item for f in executor.failed if f.error_type == NOT_PROCESSED]
    # What was read is done or recorded; the rest stays unread for resume (a stop costs O(in flight)).
    assert sorted(service.done + not_done) == list(range(executor.positions_read))
    assert not_done  # something really was left


def test_sigterm_stops_gracefully_without_a_shell() -> None:
    service = SignalsItself(signum=signal.SIGTERM)
    executor, supervisor, calls = supervise(Numbers(), service, interactive=True)
    assert calls == []
    assert supervisor.stopped_by == signal.SIGTERM
    assert executor.outcome is Outcome.STOPPED
    not_done = [f.item for f in executor.failed if f.error_type == NOT_PROCESSED]
    assert sorted(service.done + not_done) == list(range(executor.positions_read))


def test_sigint_off_a_terminal_stops_gracefully() -> None:
    service = SignalsItself()
    executor, supervisor, calls = supervise(Numbers(), service, interactive=False)
    assert calls == []
    assert supervisor.stopped_by == signal.SIGINT
    assert executor.stats.done == executor.positions_read  # every item read is done or recorded


def test_a_fatal_error_opens_the_emergency_shell_on_a_terminal() -> None:
    class Breaks(Source[int]):
        def __iter__(self):
            yield 1
            raise RuntimeError("source broke")

    executor, _, calls = supervise(Breaks(), SignalsItself(at=-1), interactive=True)
    assert executor.outcome is Outcome.FATAL
    assert len(calls) == 1
    assert "emergency" in calls[0][1] and "source broke" in calls[0][1]


def test_no_emergency_shell_off_a_terminal() -> None:
    class Breaks(Source[int]):
        def __iter__(self):
            raise RuntimeError("source broke")
            yield 1

    executor, _, calls = supervise(Breaks(), SignalsItself(at=-1), interactive=False)
    assert executor.outcome is Outcome.FATAL
    assert calls == []


def test_a_shell_that_fails_to_open_does_not_lose_the_run() -> None:
    def broken(namespace):
        raise RuntimeError("no terminal")

    service = SignalsItself()
    executor, _, calls = supervise(Numbers(), service, interactive=True, shell=broken)
    assert len(calls) == 1
    assert executor.outcome is Outcome.COMPLETED
    assert sorted(service.done) == list(range(30))


def test_ctrl_c_while_the_shell_opens_stops_gracefully() -> None:
    def interrupted(namespace):
        raise KeyboardInterrupt

    service = SignalsItself()
    executor, supervisor, _ = supervise(Numbers(), service, interactive=True, shell=interrupted)
    assert executor.outcome is Outcome.STOPPED
    assert supervisor.stopped_by == signal.SIGINT
    assert executor.stats.done == executor.positions_read  # every item read is done or recorded
