"""The base Configuration: runtime settings every project has, overridable with ``-p``."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from batchframe.backends import BACKENDS, ExecutorName
from batchframe.project.log_levels import LogLevels
from batchframe.project.params import BatchframeParam

_BACKENDS_IN_WORDS = f"{', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}"


@dataclasses.dataclass
class Configuration:
    """Runtime settings. Subclass it (a dataclass) for your own settings and per-environment values.

    Override a default in a subclass with a plain class attribute or a re-declared field; annotate
    your own fields ``BatchframeParam[T]`` to make them settable with ``-p NAME=VALUE``.

    Example:
        >>> @dataclass
        ... class ShopConfig(Configuration):
        ...     endpoint: BatchframeParam[str] = "https://staging.shop.example"
        >>> @dataclass
        ... class ProdConfig(ShopConfig):  # config/config_prod.py, chosen with -c config_prod
        ...     endpoint: BatchframeParam[str] = "https://shop.example"
        ...     concurrency = 32
        ...     max_per_second = 50.0
    """

    concurrency: Annotated[int, BatchframeParam, "number of items processed at the same time"] = 8
    queue_size: Annotated[int | None, BatchframeParam, "items read ahead of the workers (default 2 x concurrency)"] = (
        None
    )
    max_retries: Annotated[int, BatchframeParam, "retries of a retryable failure before the item fails"] = 3
    retry_backoff_sec: Annotated[float, BatchframeParam, "delay before the first retry, doubled each time"] = 1.0
    retry_backoff_max_sec: Annotated[float, BatchframeParam, "cap on the delay between retries"] = 60.0
    retry_delays_sec: Annotated[
        list[float] | None, BatchframeParam, "explicit retry delays, e.g. 1,5,30 (overrides the backoff)"
    ] = None
    max_cooldown_sec: Annotated[
        float,
        BatchframeParam,
        "longest wait a Retry-After, a Retry(delay_s) or a retry delay may ask for (longer ones are cut to it)",
    ] = 300.0
    item_timeout_sec: Annotated[float | None, BatchframeParam, "time limit per attempt (none = no limit)"] = None
    max_per_second: Annotated[float | None, BatchframeParam, "rate limit in items started per second"] = None
    max_per_minute: Annotated[
        float | None, BatchframeParam, "rate limit in items started per minute (both windows apply when both are set)"
    ] = None
    adaptive: Annotated[
        bool,
        BatchframeParam,
        "find the API's capacity: the start rate backs off on RateLimited and rising retryable failures, "
        "and grows back up to max_per_second/max_per_minute while calls succeed",
    ] = False
    executor: Annotated[ExecutorName, BatchframeParam, _BACKENDS_IN_WORDS] = "asyncio"
    scheduler: Annotated[str | None, BatchframeParam, "dask scheduler or Ray head address (none = local)"] = None
    scheduler_timeout_sec: Annotated[float, BatchframeParam, "how long to try to reach the scheduler address"] = 10.0
    journal: Annotated[bool, BatchframeParam, "keep journal.sqlite for resume and retry"] = True
    persist_unread_max: Annotated[
        int, BatchframeParam, "at a stop, items still unread that are read for persist_failed (at most)"
    ] = 100_000
    log_levels: Annotated[
        LogLevels | None,
        BatchframeParam,
        "levels of loggers for the console and logs.txt, e.g. httpx:DEBUG,my_job:WARNING "
        "(none = libraries' records on the console from WARNING)",
    ] = None

    metrics_textfile: Annotated[
        str | None,
        BatchframeParam,
        "write the run's metrics for Prometheus to this file (node_exporter's textfile format), every 5 s",
    ] = None
    metrics_pushgateway: Annotated[
        str | None, BatchframeParam, "push the run's metrics to this Prometheus Pushgateway URL at its end"
    ] = None
    notify_url: Annotated[
        str | None, BatchframeParam, "POST the summary as JSON to this http(s) URL when the run ends (none = no POST)"
    ] = None

    # The names of batchframe 0.0.1a13, kept as aliases (see batchframe/_compat.py): a config may
    # override them and -p may set them; they resolve to the current names above.
    executor_consumers: Annotated[int | None, BatchframeParam, "0.0.1a13 name of concurrency"] = None
    executor_work_queue_size: Annotated[int | None, BatchframeParam, "0.0.1a13 name of queue_size"] = None
    executor_max_retries: Annotated[int | None, BatchframeParam, "0.0.1a13 name of max_retries"] = None
    executor_backoff_times_sec: Annotated[list[float] | None, BatchframeParam, "0.0.1a13 name of retry_delays_sec"] = (
        None
    )
