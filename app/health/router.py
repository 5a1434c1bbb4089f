from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import text

from app import metrics
from app.config import get_settings
from app.db import READ_ONLY, get_engine
from app.health import figures, supervision

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, Literal["ok", "unreachable", "missing"]]


@router.get("/healthz", response_model=Liveness, operation_id="check_liveness", summary="Is the process up")
async def healthz() -> dict[str, str]:
    # Async and without I/O: it answers on the event loop even while every thread is busy.
    return {"status": "ok"}


def _broker_reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2, transport_options={"max_retries": 0}) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


@router.get("/readyz", response_model=Readiness, operation_id="check_readiness", summary="Are the database and broker reachable", responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz() -> JSONResponse:
    checks = {}
    try:
        # Read-only: on SQLite it must not queue for the write lock behind the writers.
        with get_engine().execution_options(**{READ_ONLY: True}).connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    checks["broker"] = "ok" if _broker_reachable(get_settings().broker_url) else "unreachable"
    worker = supervision.worker_state()
    if worker is not None:
        checks["worker"] = worker
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, operation_id="get_metrics", summary="Prometheus metrics")
async def prometheus_metrics() -> Response:
    # Async: the database's figures come from a thread of their own (app/health/figures.py).
    database = await figures.database_families()
    return Response(metrics.render(database), media_type="text/plain; version=0.0.4; charset=utf-8")
