"""``batchframe tune RUN_DIR -p NAME=VALUE``: change a running run's limits from outside, through ``control.json``.

The values are parsed and checked here, as ``-p`` would (same types, same messages), before they
are sent; the run checks them again against what only it knows (the concurrency it started with)
and says in ``status.json`` what it changed or why it refused. The web UI's tune fields end here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from batchframe.configuration import Configuration
from batchframe.errors import ParamError, RunError
from batchframe.project.params import params_of_class, resolve_values, split_assignments
from batchframe.run.limits import TUNABLE, DriverSettings
from batchframe.runfolder.live import read_status, send_control

ANSWER_WITHIN_S = 3.0
"""How long ``tune`` waits for the run to say it carried the change out (it polls four times a second)."""


def parse_tune(assignments: Iterable[str]) -> dict[str, Any]:
    """``NAME=VALUE`` texts as typed values, each checked as ``-p`` checks it.

    Raises:
        ParamError: no assignment, a name that cannot be tuned, a value of the wrong type or range.
    """
    given = split_assignments(assignments)
    if not given:
        raise ParamError(
            "Nothing to tune: give at least one -p NAME=VALUE.",
            hint=f"A running run takes: {', '.join(TUNABLE)}, e.g. -p max_per_second=5",
        )
    unknown = [name for name in given if name not in TUNABLE]
    if unknown:
        raise ParamError(
            f"{unknown[0]} cannot be changed while a run goes.",
            hint=f"A running run takes: {', '.join(TUNABLE)}. Others need a new run (batchframe exec).",
            param=unknown[0],
        )
    specs = {spec.name: spec for spec in params_of_class(Configuration) if spec.name in given}
    values = resolve_values(specs, given)  # -p's own parsing and messages (defaults of the others left out)
    DriverSettings(**{TUNABLE[name]: value for name, value in values.items()})  # the ranges, as -p
    return values


def tune_run(run_dir: Path, values: Mapping[str, Any], *, wait_s: float = ANSWER_WITHIN_S) -> list[str]:
    """Send ``values`` to the run in ``run_dir`` and wait for its answer.

    Returns:
        What changed, one ``name: old -> new`` line each (empty: everything was so already).

    Raises:
        RunNotLiveError: the run is not running.
        ParamError: the run refused a value (a concurrency above the one it started with).
        RunError: the run did not answer in time (its process is stuck, or the folder is not its own).
    """
    seq = send_control(run_dir, "tune", dict(values))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = read_status(run_dir)
        if status is not None and status.control_seq == seq:
            if status.control_error:
                message, _, hint = status.control_error.partition("\n")
                raise ParamError(message, hint=hint or None)
            return list(status.control_result or [])
        if status is not None and not status.live:
            break
        time.sleep(0.05)
    raise RunError(
        f"The run in {run_dir} did not confirm the change within {wait_s:g} s.",
        hint="Its process may be busy or stuck; see its state with: batchframe runs " + str(run_dir),
    )
