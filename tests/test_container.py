from __future__ import annotations

import datetime as dt
from pathlib import Path

import kink
import pytest

from batchframe.project.container import wire
from batchframe.run.prepare import prepare

DI_PROJECT = """
from __future__ import annotations

import abc
from pathlib import Path

from batchframe import BatchframeParam, Configuration, Service, Source, inject


class Store(abc.ABC):
    @abc.abstractmethod
    def save(self, item): ...


@inject
class MemoryStore(Store):
    def __init__(self, prefix: BatchframeParam[str] = "item-"):
        self.prefix = prefix
        self.saved = []

    def save(self, item):
        self.saved.append(self.prefix + str(item))


class Notifier:
    pass


@inject()
class EmailNotifier(Notifier):
    pass


class Clock:
    pass


@inject(alias=Clock)
class FixedClock:
    pass


@inject
class Numbers(Source[int]):
    def __init__(self, count: BatchframeParam[int] = 3):
        self.it = iter(range(count))

    def next(self):
        return next(self.it)


@inject
class Saver(Service[int]):
    def __init__(
        self,
        source: Source[int],
        store: Store,
        notifier: Notifier,
        clock: Clock,
        config: Configuration,
        _output_directory: Path,
        _current_run_start,
        _current_run_output_dir: Path,
    ):
        self.source = source
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.config = config
        self.statics = (_output_directory, _current_run_start, _current_run_output_dir)

    def process(self, item):
        self.store.save(item)
"""

STATICS = {
    "_output_directory": Path("/out"),
    "_current_run_start": dt.datetime(2026, 11, 25, 10, 30),
    "_current_run_output_dir": Path("/out/run"),
}


def _wire(root: Path, params: list[str] | None = None):
    prepared = prepare(root / "job.py", params=params or [])
    project = prepared.project
    wired = wire(
        source_cls=project.source_cls,
        service_cls=project.service_cls,
        config=prepared.config,
        injectables=project.injectables,
        param_values=prepared.values,
        static_values=STATICS,
    )
    return prepared, wired


def test_inject_forms_parents_aliases_and_statics(make_project) -> None:
    root = make_project({"job.py": DI_PROJECT})
    _, wired = _wire(root, ["prefix=n", "concurrency=2"])
    service = wired.service
    assert service.source is wired.source
    assert type(service.store).__name__ == "MemoryStore"
    assert service.store.prefix == "n"
    assert type(service.notifier).__name__ == "EmailNotifier"
    assert type(service.clock).__name__ == "FixedClock"
    assert service.config is wired.config
    assert service.config.concurrency == 2
    assert service.statics == (Path("/out"), dt.datetime(2026, 11, 25, 10, 30), Path("/out/run"))


def test_singletons_within_a_run(make_project) -> None:
    root = make_project({"job.py": DI_PROJECT})
    _, wired = _wire(root)
    assert kink.di[type(wired.service.store)] is wired.service.store


def test_two_runs_in_one_process_do_not_share_bindings(make_project, tmp_path: Path) -> None:
    first = make_project({"job.py": DI_PROJECT}, name="first")
    _, wired_first = _wire(first)
    old_store_cls = type(wired_first.service.store)
    second = make_project({"job.py": DI_PROJECT.replace("MemoryStore", "OtherStore")}, name="second")
    _, wired_second = _wire(second)
    assert type(wired_second.service.store).__name__ == "OtherStore"
    assert old_store_cls not in kink.di
    assert wired_second.service.store is not wired_first.service.store


def test_a_missing_dependency_is_named(make_project) -> None:
    broken = DI_PROJECT.replace("@inject()\nclass EmailNotifier", "class EmailNotifier")
    root = make_project({"job.py": broken})
    with pytest.raises(LookupError, match="Saver\\(\\) needs notifier"):
        _wire(root)
