"""``-p notify_url=URL``: the summary POSTed as JSON when a run ends, whatever the outcome.

A notification is news about the run, never part of it: a short timeout, one retry, and a failure
is a warning in the log and in the summary, never a failed run. The body is ``summary.json``, whose
parameters never hold a secret's value (see ``PreparedRun.recorded_params``), with every secret
value blanked out of the text all the same.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from batchframe.project.config_values import check_http_url
from batchframe.secret import redact

logger = logging.getLogger(__name__)

TIMEOUT_S = 5.0
"""How long one POST may take."""
RETRY_AFTER_S = 1.0
"""The wait before the one retry."""


def check_notify_url(url: str | None) -> None:
    """Refuse a ``notify_url`` that is not an http(s) URL with a host, before the run starts.

    Raises:
        ParamError: another scheme (``ftp://``), no host, or not a URL at all.
    """
    check_http_url("notify_url", url, "https://hooks.example.com/batchframe")


def notify(url: str, report: Mapping[str, Any]) -> str | None:
    """POST ``report`` as JSON to ``url``; try once more after a second if the first try fails.

    Returns:
        None when the endpoint answered 2xx; else the warning for the log and the summary.
    """
    body = redact(json.dumps(report, default=str, ensure_ascii=False)).encode("utf-8")
    problem = ""
    for attempt in (1, 2):
        problem = _post(url, body)
        if not problem:
            logger.info("Notified %s of the run's end.", _shown(url))
            return None
        if attempt == 1:
            time.sleep(RETRY_AFTER_S)
    warning = f"The notification to {_shown(url)} failed twice ({problem}); the run's outcome is unchanged."
    logger.warning("%s", warning)
    return warning


def _post(url: str, body: bytes) -> str:
    """One POST; "" when it was answered 2xx, else what went wrong."""
    import urllib.error  # 15 ms of imports (http.client, email): only for a run that notifies
    import urllib.request

    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "batchframe"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
    return "" if 200 <= status < 300 else f"HTTP {status}"


def _shown(url: str) -> str:
    """The URL without its query and credentials (a token in them stays out of the log)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
