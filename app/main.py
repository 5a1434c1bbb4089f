"""The ASGI application."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from app import __version__, asyncdb
from app.audit.router import router as audit_router
from app.certificates.router import router as certificates_router
from app.config import get_settings
from app.dashboard.router import router as dashboard_router
from app.datasets.router import router as datasets_router
from app.docs import install as install_docs
from app.errors import install_error_handlers
from app.health.router import router as health_router
from app.integrity.router import router as integrity_router
from app.identities.router import router as identities_router
from app.jobs.router import router as jobs_router
from app.keys.router import router as keys_router
from app.lineage.router import router as lineage_router
from app.middleware import AccessLogMiddleware, BodyLimitMiddleware
from app.models.router import router as models_router
from app.openapi import install as install_openapi
from app.requests.router import router as requests_router
from app.remediation.router import router as remediation_router
from app.secret_strength import check_at_start as check_secret_at_start

# Room for a multipart body's boundaries, headers and metadata field beside its largest file.
MULTIPART_ALLOWANCE = 1024 * 1024


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # Endpoint work runs in this loop's threadpool; the SQLite pool is sized from the same
    # setting (app/db.py), so every thread can hold a connection at once.
    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
    # The modules and the app built at start-up are some 130,000 objects that live as long as
    # the process; a full garbage collection walked all of them (40 ms, a latency spike every
    # few large batches). Frozen, collections walk only what requests allocate. Once per process.
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    yield
    await asyncdb.close_pools()


def create_app() -> FastAPI:
    settings = get_settings()
    check_secret_at_start(settings)  # refuse a weak or guessable secret outside the embedded default
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = FastAPI(
        title="Obliviate",
        version=__version__,
        description="Erasure requests (GDPR/CCPA) carried into training data and model weights.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # app/docs.py serves them from the package
    )
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app)
    app.include_router(health_router)
    app.include_router(requests_router)
    app.include_router(remediation_router)
    # Before the audit router: GET /v1/audit/verify keeps its place in the OpenAPI document.
    app.include_router(integrity_router)
    app.include_router(audit_router)
    app.include_router(jobs_router)
    app.include_router(models_router)
    app.include_router(certificates_router)
    app.include_router(datasets_router)
    app.include_router(lineage_router)
    app.include_router(identities_router)
    # After the certificates router: its public GET /v1/keys/signing must match before /v1/keys/{key_id}.
    app.include_router(keys_router)
    app.include_router(dashboard_router)
    app.add_middleware(
        BodyLimitMiddleware, default_limit=settings.max_body_bytes, upload_limits=(
            # A model import is a weights file (max_upload_bytes) or a base's archive (max_import_bytes),
            # each checked exactly by the route.
            ("/v1/models/import", max(settings.max_upload_bytes, settings.max_import_bytes) + MULTIPART_ALLOWANCE),
            # A remediation request's file of record ids, checked exactly by the route.
            ("/v1/remediation-requests/upload", settings.max_record_ids_bytes + MULTIPART_ALLOWANCE),
            ("/v1/datasets", settings.max_upload_bytes),
        ),
    )
    app.add_middleware(AccessLogMiddleware)
    return app

