"""The documentation runs: every Python block of README.md and docs/ is a job that runs or a marked fragment.

The rules a page follows (CONTRIBUTING.md, "Documentation"):

- A ```python block whose first line is ``# NAME.py`` is a file of the page's project: it is written
  to the page's folder (a later block with the same name replaces it).
- Any other ```python block is preceded by ``<!-- fragment -->`` and must compile.
- In a ```console block, each ``$ COMMAND`` line runs (in order, in the page's folder, which also
  holds a copy of ``examples/``) and must exit 0, or N when the line ends with ``# exit N``. The lines
  below it, up to the next ``$``, are output that must appear in order in what it prints (``...``
  stands for any text). A block preceded by ``<!-- no-run -->`` is shown only (``pip install``, a
  server, a cluster).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED = {DOCS / "reference" / "cli.md"}  # typer's own output: its console blocks are usage lines
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_MARK = re.compile(r"<!--\s*(?P<mark>fragment|no-run)\s*-->\s*$")
_FILE = re.compile(r"#\s*(?P<name>[\w/.-]+\.py)\s*$")
_EXIT = re.compile(r"\s+#\s*exit\s+(?P<code>\d+)\s*$")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    body: str
    mark: str | None

    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


@dataclass
class Command:
    text: str
    exit_code: int
    expected: list[str] = field(default_factory=list)


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        body = "\n".join(line[len(match["indent"]) :] for line in match["body"].splitlines())
        found.append(
            Block(page, text.count("\n", 0, match.start()) + 1, match["lang"], body, mark["mark"] if mark else None)
        )
    return found


def commands(block: Block) -> list[Command]:
    found: list[Command] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            exit_match = _EXIT.search(line)
            text = line[2:] if exit_match is None else line[2 : exit_match.start()]
            found.append(Command(text.strip(), int(exit_match["code"]) if exit_match else 0))
        elif found and line.strip():
            found[-1].expected.append(line.rstrip())
    return found


def _pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part.strip()) for part in expected.split("...")]
    return re.compile(r"\s*" + r".*".join(parts) + r"\s*$" if parts[0] else r".*" + r".*".join(parts[1:]) + r"\s*$")


def check_output(command: Command, output: str, where: str) -> None:
    lines = [line.rstrip() for line in output.splitlines()]
    at = 0
    for expected in command.expected:
        pattern = _pattern(expected)
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        assert at < len(lines), (
            f"{where}: `{command.text}` does not print {expected!r} (in this order). It printed:\n{output}"
        )
        at += 1


def _environment(folder: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if not key.startswith("BATCHFRAME_")}
    env.update(
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        COLUMNS="80",
        NO_COLOR="1",
        TERM="dumb",
        HOME=str(folder / "home"),
        BATCHFRAME_CACHE_DIR=str(folder / "cache"),
        GIT_AUTHOR_NAME="docs",
        GIT_AUTHOR_EMAIL="docs@example.com",
        GIT_COMMITTER_NAME="docs",
        GIT_COMMITTER_EMAIL="docs@example.com",
    )
    return env


def run_page(page: Path, folder: Path) -> int:
    """Write the page's files and run its commands in ``folder``; the number of commands run."""
    shutil.copytree(ROOT / "examples", folder / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "home").mkdir()
    ran = 0
    for block in blocks(page):
        if block.lang in ("python", "py") and block.mark is None:
            first = block.body.splitlines()[0] if block.body.strip() else ""
            name = _FILE.fullmatch(first.strip())
            assert name, f"{block.where()}: a Python block starts with `# NAME.py` or follows <!-- fragment -->"
            target = folder / name["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body + "\n", encoding="utf-8")
        elif block.lang == "console" and block.mark is None and page not in GENERATED:
            for command in commands(block):
                result = subprocess.run(
                    ["bash", "-c", command.text],
                    cwd=folder,
                    env=_environment(folder),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=90,
                    check=False,
                )
                output = result.stdout + result.stderr
                assert result.returncode == command.exit_code, (
                    f"{block.where()}: `{command.text}` exited {result.returncode}, "
                    f"the page says {command.exit_code}:\n{output}"
                )
                check_output(command, output, block.where())
                ran += 1
    return ran


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_python_block_compiles(page: Path) -> None:
    for block in blocks(page):
        if block.lang in ("python", "py"):
            compile(block.body, block.where(), "exec")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_page_s_jobs_and_commands_run_as_shown(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


def test_the_api_reference_documents_every_public_name() -> None:
    import batchframe

    page = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: batchframe\.(\w+)", page, re.M)) - {"testing"}
    assert documented == set(batchframe.__all__) - {"__version__"}


def test_the_cli_reference_is_typer_s_own_output(tmp_path: Path) -> None:
    output = tmp_path / "cli.md"
    subprocess.run(
        [str(Path(sys.executable).parent / "typer"), "batchframe.cli.app", "utils", "docs", "--name", "batchframe",
         "--output", str(output)],
        check=True, capture_output=True, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    committed = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert output.read_text(encoding="utf-8").strip() in committed, (
        "docs/reference/cli.md is out of date: regenerate it with scripts/cli-docs"
    )


_JOB = """```python
# job.py
from batchframe import Service, Source


class Numbers(Source[int]):
    def __init__(self) -> None:
        self.items = iter(range(3))

    def next(self) -> int:
        return next(self.items)


class Echo(Service[int]):
    async def process(self, item: int) -> None:
        pass
```

```console
$ batchframe exec job.py --no-input
...Run folder: batchframe_outputs/...
batchframe run SAID
│ succeeded │ ... 3 │
```
"""


def test_the_rules_catch_a_page_that_drifts(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(_JOB.replace("SAID", "completed"), encoding="utf-8")
    assert run_page(page, tmp_path / "right") == 1
    page.write_text(_JOB.replace("SAID", "failed"), encoding="utf-8")
    with pytest.raises(AssertionError, match="does not print 'batchframe run failed'"):
        run_page(page, tmp_path / "drifted")
    page.write_text(_JOB.replace("--no-input", "--no-input  # exit 3").replace("SAID", "completed"), encoding="utf-8")
    with pytest.raises(AssertionError, match="exited 0, the page says 3"):
        run_page(page, tmp_path / "exit")
    page.write_text("```python\nprint('no file name')\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"starts with `# NAME\.py`"):
        run_page(page, tmp_path / "unnamed")


def test_the_readme_s_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in link}
    missing = sorted(target for target in targets if target and not (ROOT / target).exists())
    assert not missing, f"README.md links to files that do not exist: {missing}"
