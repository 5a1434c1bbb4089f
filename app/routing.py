"""Routes whose unit of work runs on one thread, and the per-client bound on waiting writes.

FastAPI runs a sync endpoint in a threadpool thread and the teardown of its dependencies in
another call. A session that committed there would keep whatever lock the endpoint took (SQLite's
write lock, the job quota's advisory lock, the audit head's FOR UPDATE) while it waited for a free
thread, and a burst of requests waiting for that lock can hold every thread: the API, health
checks included, stops answering. A UnitOfWorkRoute runs the endpoint, the commit and the close
in one threadpool call (app/deps.py, run_unit_of_work), so a lock is always released by the
thread that took it, and the response is serialised on the event loop without a further hop.

Writes (every such route but GET, HEAD and those marked `reads_only`) also take one of their
client's slots first, on the event loop: at most max_waiting_writes_per_client of one client are
in progress at once, waiting or running, in one API process; the next answers 429 at once, so one
client's burst cannot fill the threadpool with requests that wait for each other's locks.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, get_args, get_origin

from fastapi import params
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from app.config import get_settings
from app.deps import get_session, run_unit_of_work
from app.errors import TooManyRequests, Unprocessable, field_name_or_placeholder
from app.principal import Principal

READ_METHODS = frozenset({"GET", "HEAD"})


def reads_only(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Marks an endpoint that only reads although it is a POST (a look-up, a prediction): it
    begins deferred on SQLite and takes no write slot."""
    endpoint.reads_only = True  # type: ignore[attr-defined]
    return endpoint


def writes(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a GET that writes (a download, which is audited): it begins its transaction as a
    writer, so SQLite never has to upgrade a reader's lock, and takes a write slot."""
    endpoint.writes = True  # type: ignore[attr-defined]
    return endpoint


class ClientSlots:
    """Calls of one kind in progress per client in this process (`what`: "writes", "inference
    calls"). A threading lock, not an asyncio one, so that the count holds across every thread
    and event loop of the process; each process of a multi-process deployment counts its own."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    @contextmanager
    def slot(self, client: str, limit: int) -> Iterator[None]:
        with self._lock:
            taken = self._counts.get(client, 0)
            if taken >= limit:
                raise TooManyRequests(
                    f"This client already has {limit} {self.what} in progress on this server; retry shortly.",
                    headers={"Retry-After": "1"},
                )
            self._counts[client] = taken + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._counts[client] - 1
                if left:
                    self._counts[client] = left
                else:
                    del self._counts[client]


WAITING_WRITES = ClientSlots("writes")


def _session_parameter(endpoint: Callable[..., Any]) -> str | None:
    for name, parameter in inspect.signature(endpoint, eval_str=True).parameters.items():
        annotation = parameter.annotation
        if get_origin(annotation) is Annotated and any(
            isinstance(extra, params.Depends) and extra.dependency is get_session for extra in get_args(annotation)[1:]
        ):
            return name
    return None


def in_one_thread(endpoint: Callable[..., Any], *, reads: bool) -> Callable[..., Any]:
    """The endpoint as an async function that runs it and its unit of work in one threadpool
    call. Endpoints without a SessionDep, and async ones (which manage their own unit of work,
    e.g. intake's UnitOfWork), are returned as they are."""
    if inspect.iscoroutinefunction(endpoint):
        return endpoint
    name = _session_parameter(endpoint)
    if name is None:
        return endpoint
    reads = (reads or getattr(endpoint, "reads_only", False)) and not getattr(endpoint, "writes", False)

    @functools.wraps(endpoint)
    async def run(**arguments: Any) -> Any:
        def work() -> Any:
            return run_unit_of_work(arguments[name], lambda: endpoint(**arguments), reads_only=reads)

        principal = next((value for value in arguments.values() if isinstance(value, Principal)), None)
        if reads or principal is None:
            return await run_in_threadpool(work)
        with WAITING_WRITES.slot(principal.client, get_settings().max_waiting_writes_per_client):
            return await run_in_threadpool(work)

    run.unit_of_work = True  # type: ignore[attr-defined]
    return run


def _query_parameters(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {parameter.alias for parameter in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_parameters(dependency)
    return frozenset(names)


class UnitOfWorkRoute(APIRoute):
    """The route class of every router whose endpoints use SessionDep. Its GET routes, the lists
    among them, refuse query parameters they do not declare: a misspelt filter would otherwise
    be ignored and answer every row."""

    # Off for pages that read their query string themselves (the dashboard's filter forms).
    refuses_unknown_query_parameters = True

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {method.upper() for method in kwargs.get("methods") or ("GET",)}
        super().__init__(path, in_one_thread(endpoint, reads=methods <= READ_METHODS), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        if not self.refuses_unknown_query_parameters or not self.methods <= READ_METHODS:
            return handler
        declared = _query_parameters(self.dependant)

        async def refuse_unknown_parameters(request: Request) -> Response:
            unknown = sorted({field_name_or_placeholder(name) for name in request.query_params if name not in declared})
            if unknown:
                raise Unprocessable(
                    f"Unknown query parameter: {', '.join(unknown)}. This route accepts: {', '.join(sorted(declared)) or 'none'}.",
                    unknown_parameters=unknown, accepted_parameters=sorted(declared),
                )
            return await handler(request)

        return refuse_unknown_parameters
