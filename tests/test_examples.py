"""Every project in examples/ runs through the real CLI, as the README shows."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import EXAMPLES, batchframe_cli, only_run_dir, read_jsonl


def test_single_file_example(tmp_path: Path) -> None:
    result = batchframe_cli("exec", EXAMPLES / "squares.py", "-p", "count=120", "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # 13 and 113 are unlucky
    run_dir = only_run_dir(tmp_path / "out")
    assert sorted(r["item"] for r in read_jsonl(run_dir / "failed.jsonl")) == [13, 113]
    assert "These numbers failed: [13, 113]" in (run_dir / "logs.txt").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (118, 2)


def test_package_example_with_dev_config(tmp_path: Path) -> None:
    result = batchframe_cli("exec", EXAMPLES / "webhooks", "-c", "config_dev", "-d", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    assert "Sent 50 events to http://localhost:8080/hook" in (run_dir / "logs.txt").read_text()


def test_package_example_with_prod_config_and_params(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"id": i, "kind": "import"}) + "\n" for i in range(7)))
    result = batchframe_cli(
        "exec",
        EXAMPLES / "webhooks" / "service.py",
        "-c",
        "config_prod.py",
        "-p",
        f"events_file={events}",
        "-p",
        "failure_rate=1",
        "-p",
        "max_retries=1",
        "-p",
        "retry_backoff_sec=0.001",
        "-d",
        tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    resend = read_jsonl(run_dir / "events_to_resend.jsonl")
    assert sorted(e["id"] for e in resend) == list(range(7))
    assert {r["attempts"] for r in read_jsonl(run_dir / "failed.jsonl")} == {2}
    assert "https://hooks.example.invalid/v1/events" in (run_dir / "failed.jsonl").read_text()


def test_package_example_without_config_says_which_to_pick(tmp_path: Path) -> None:
    result = batchframe_cli("exec", EXAMPLES / "webhooks", cwd=tmp_path)
    assert result.returncode == 2
    assert "config_dev, config_prod" in result.stderr


def test_secret_token_example_keeps_the_token_out_of_the_run_folder(tmp_path: Path) -> None:
    token = "example-token-4711"
    result = batchframe_cli(
        "exec", EXAMPLES / "api_token.py", "-d", tmp_path / "out", cwd=tmp_path, BATCHFRAME_PARAM_API_TOKEN=token
    )
    assert result.returncode == 0, result.stderr
    assert "Syncing with token **********" in result.stderr
    assert "Rate limited (429 Too Many Requests)" in result.stderr
    run_dir = only_run_dir(tmp_path / "out")
    assert json.loads((run_dir / "summary.json").read_text())["succeeded"] == 30
    assert all(token.encode() not in path.read_bytes() for path in run_dir.iterdir())
    assert token not in result.stdout + result.stderr
