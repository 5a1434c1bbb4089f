"""What `obliviate serve` tells /readyz about the worker it runs beside the API.

serve runs uvicorn in its own process, so the supervisor registers a probe here and readyz calls
it. Without a supervisor (`--no-worker`, or workers run by Celery elsewhere) there is nothing to
report, and readyz leaves the worker out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

_probe: Callable[[], bool] | None = None


def supervise(probe: Callable[[], bool] | None) -> None:
    """Register (or, with None, remove) the probe that says whether the worker is running."""
    global _probe
    _probe = probe


def worker_state() -> Literal["ok", "missing"] | None:
    probe = _probe
    if probe is None:
        return None
    return "ok" if probe() else "missing"
