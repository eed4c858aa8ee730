"""batchframe.testing, used the way a project's own tests use it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, read_jsonl

from batchframe import ParamError
from batchframe.testing import run_project, run_service

PACKAGE = {
    "shop/__init__.py": "",
    "shop/config/__init__.py": """
        from dataclasses import dataclass
        from batchframe import BatchframeParam, Configuration

        @dataclass
        class ShopConfig(Configuration):
            strict: BatchframeParam[bool] = True
    """,
    "shop/store.py": """
        from batchframe import inject

        @inject
        class Store:
            def __init__(self):
                self.saved = []
    """,
    "shop/service.py": """
        import asyncio
        from batchframe import BatchframeParam, Service, Source, inject
        from .config import ShopConfig
        from .store import Store

        @inject
        class Checker(Service[dict]):
            exceptions_to_retry_for = {ConnectionError}

            def __init__(self, config: ShopConfig, store: Store, source: Source, prefix: BatchframeParam[str] = "#"):
                self.config = config
                self.store = store
                self.prefix = prefix
                self.attempts = {}
                self.finished = False

            async def process(self, item):
                await asyncio.sleep(0)
                self.attempts[item["id"]] = self.attempts.get(item["id"], 0) + 1
                if item.get("flaky") and self.attempts[item["id"]] == 1:
                    raise ConnectionError("try again")
                if self.config.strict and "@" not in item["email"]:
                    raise ValueError(f"{self.prefix}{item['id']}: bad email")
                self.store.saved.append(item["id"])

            def finish(self):
                self.finished = True
    """,
}


@pytest.fixture
def shop(make_project, monkeypatch):
    root = make_project(PACKAGE, name="shoproot")
    monkeypatch.syspath_prepend(str(root))
    for name in [n for n in sys.modules if n == "shop" or n.startswith("shop.")]:
        del sys.modules[name]
    service = importlib.import_module("shop.service")
    config = importlib.import_module("shop.config")
    return service.Checker, config.ShopConfig


ITEMS = [
    {"id": 1, "email": "a@example.com"},
    {"id": 2, "email": "nope"},
    {"id": 3, "email": "c@example.com", "flaky": True},
]


def test_run_service_reports_succeeded_and_failed_items(shop) -> None:
    checker, config = shop
    result = run_service(checker, ITEMS, config=config, params={"retry_backoff_sec": 0.001})
    assert sorted(item["id"] for item in result.succeeded) == [1, 3]
    assert [f.item["id"] for f in result.failed] == [2]
    failure = result.failed[0]
    assert failure.error_type == "ValueError"
    assert isinstance(failure.exception, ValueError)
    assert failure.message == "#2: bad email"
    assert result.service.attempts[3] == 2  # retried once
    assert result.service.store.saved == [1, 3] or sorted(result.service.store.saved) == [1, 3]
    assert result.service.finished


def test_run_service_params_are_typed_or_parsed(shop) -> None:
    checker, config = shop
    lenient = run_service(checker, ITEMS[:2], config=config, params={"strict": "false", "prefix": "!"})
    assert lenient.failed == []
    assert lenient.config.strict is False


def test_run_service_rejects_unknown_params(shop) -> None:
    checker, config = shop
    with pytest.raises(ParamError, match="Did you mean 'strict'"):
        run_service(checker, ITEMS, config=config, params={"strikt": True})


def test_run_service_leaves_no_files(shop, tmp_path: Path) -> None:
    checker, config = shop
    before = set(tmp_path.rglob("*"))
    run_service(checker, ITEMS[:1], config=config)
    assert set(tmp_path.rglob("*")) == before


def test_run_project_runs_the_package_example(tmp_path: Path) -> None:
    result = run_project(EXAMPLES / "webhooks", config="config_dev", params={"limit": 5}, output_dir=tmp_path)
    assert result.exit_code == 0
    assert result.stats.succeeded == 5
    assert result.run_dir.parent == tmp_path


def test_run_project_params_as_python_values(tmp_path: Path) -> None:
    result = run_project(
        EXAMPLES / "webhooks", config="config_dev", params={"failure_rate": 1.0, "max_retries": 0}, output_dir=tmp_path
    )
    assert result.exit_code == 3
    assert len(read_jsonl(result.run_dir / "failed.jsonl")) == 50
    assert len(result.failed) == 50 and result.failed[0].exception is not None  # kept for the test to inspect
