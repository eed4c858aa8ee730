from __future__ import annotations

import subprocess
import sys

import batchframe


def test_all_matches_the_public_namespace() -> None:
    public = {name for name in dir(batchframe) if not name.startswith("_")}
    submodules = {name for name in public if type(getattr(batchframe, name, None)).__name__ == "module"}
    assert set(batchframe.__all__) - {"__version__"} == public - submodules
    assert batchframe.__all__ == sorted(batchframe.__all__)
    for name in batchframe.__all__:
        assert getattr(batchframe, name) is not None


def test_errors_carry_exit_codes_and_builtin_bases() -> None:
    assert batchframe.BatchframeError("x").exit_code == 1
    assert batchframe.UsageError("x").exit_code == 2
    assert isinstance(batchframe.ParamError("x"), ValueError)
    assert isinstance(batchframe.ProjectError("x"), ImportError)
    assert str(batchframe.ParamError("bad", hint="do this")) == "bad\ndo this"


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from batchframe.cli.app import app\n"
        "try:\n    app(['--help'], prog_name='batchframe')\nexcept SystemExit:\n    pass\n"
        "print(','.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.strip().splitlines()[-1].split(","))
    for heavy in ("copier", "IPython", "questionary", "kink", "asyncio", "batchframe.run.commands"):
        assert heavy not in loaded, heavy
