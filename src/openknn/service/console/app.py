"""The web console's routes, served by ``openknn up`` itself under ``/_openknn/console/`` (a
path no bucket can have) and at ``/`` for a browser: server-rendered pages (Jinja2, autoescape
on: every name, hyperparameter and log line is text), fragments their script fetches again
while something runs, the buttons' POSTs and a few JSON calls for the plots.

Requests reach these routes through the service's router (``service.routing``) and, with
``--auth``, through ``auth.guard``, which asks ``Console.gate`` whether a browser has signed in.
Every page answers with a Content-Security-Policy that allows only the console's own script
and styles, so even a string that escaped escaping could not run."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
import jinja2
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from openknn import __version__
from openknn.errors import OpenKnnError
from openknn.service.api import ApiError
from openknn.service.auth import Keys
from openknn.service.console import actions, pages, testset, views
from openknn.service.console.pages import NotFound, Page, Parts
from openknn.service.console.sessions import (
    CSRF_HEADER,
    Session,
    Sessions,
    clear_cookie,
    csrf_ok,
    safe_next,
    same_origin,
    set_cookie,
)
from openknn.service.s3.codes import S3Error

log = logging.getLogger(__name__)
P = views.PREFIX
HERE = Path(__file__).parent
STATIC = HERE / "static"
LOGIN = f"{P}/login"
MAX_FORM = 64 << 10
MAX_INVOKE = 8 << 20
FAILED_SIGN_IN_DELAY_S = 0.5  # a guess costs this much
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
Build = Callable[..., Page]


def templates() -> jinja2.Environment:
    """The console's templates, autoescaped whatever their names end in."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(P=P, version=__version__, static_version=_static_version())
    env.globals["status_class"] = views.badge
    env.filters["urlquote"] = lambda value: quote(str(value), safe="")
    return env


def _static_version() -> str:
    """A short hash of the static files: their URLs change when they do (no stale cache)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def _body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None past ``limit`` bytes (the rest is not read into memory)."""
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _too_large(limit: int) -> Response:
    return JSONResponse({"message": f"the request is over {limit} bytes"}, 413, headers=HEADERS)


class Console:
    """The console over one service's parts (the objects its API uses) and its keys."""

    def __init__(self, parts: Parts, keys: Keys | None) -> None:
        self.parts = parts
        self.sessions = Sessions(keys)
        self.env = templates()
        self.meter = actions.Meter()

    # -- who may ---------------------------------------------------------------------------------

    def gate(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> Response | None:
        """``auth.guard``'s question with --auth: None lets the request through (a signed-in
        browser, the sign-in page, the static files), else the answer that refuses it (the
        sign-in page, 403)."""
        path = str(scope.get("path", ""))
        if path == LOGIN or path.startswith(f"{P}/static/"):
            return None
        if self.sessions.find(headers.get("cookie")) is not None:
            return None
        query = scope.get("query_string", b"").decode("latin-1")
        return self._sign_in_needed(path + (f"?{query}" if query else ""),
                                    str(scope.get("method", "GET")), headers.get("accept", ""))

    def _sign_in_needed(self, target: str, method: str, accept: str) -> Response:
        if method == "GET" and "text/html" in accept:
            return self._render("login.html", {"next": safe_next(target, f"{P}/"), "error": "",
                                               "access_key": "", "session": None}, 403)
        return JSONResponse({"message": f"openknn up runs with --auth: sign in at {LOGIN}"},
                            403, headers=HEADERS)

    def _session(self, request: Request) -> Session | None:
        return self.sessions.find(request.headers.get("cookie"))

    # -- rendering -------------------------------------------------------------------------------

    def _render(self, template: str, context: dict[str, Any], status: int = 200,
                headers: Mapping[str, str] | None = None) -> HTMLResponse:
        session = context.get("session")
        base = {"auth": self.sessions.required, "session": session,
                "csrf": session.csrf if isinstance(session, Session) else "",
                "section": "", "path": ""}
        html = self.env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status, headers={**HEADERS, **(headers or {})})

    def _page(self, build: Build) -> Callable[[Request], Awaitable[Response]]:
        """A GET route: the page ``build`` makes (read in a thread: the state is SQLite), or
        one of its live parts (``?part=``)."""

        async def endpoint(request: Request) -> Response:
            session = self._session(request)
            if session is None:
                return self._sign_in_needed(str(request.url.path), "GET",
                                            request.headers.get("accept", ""))
            query = dict(request.query_params)
            args = list(request.path_params.values())
            try:
                page = await anyio.to_thread.run_sync(lambda: build(self.parts, *args, query))
            except NotFound as exc:
                return self._render("not_found.html", {"session": session, "message": str(exc),
                                                       "back": exc.back}, 404)
            context = {**page.context, "session": session, "path": _here(request),
                       "base_url": f"{request.url.scheme}://{request.headers.get('host', '')}"}
            part = query.get("part")
            if part is not None:
                if part not in page.parts:
                    return Response("no such part", 404, media_type="text/plain")
                return self._render(f"parts/{part}.html", context)
            return self._render(page.template, context)

        return endpoint

    def _post(self, request: Request, body: bytes, session: Session | None) -> Response | None:
        """None for a POST that may proceed: signed in, from this console's page (its Origin),
        with the session's CSRF token (a form field or a header)."""
        if session is None:
            return self._sign_in_needed(str(request.url.path), "POST", "")
        given = request.headers.get(CSRF_HEADER) or _form(body).get("csrf")
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not same_origin(headers) or not csrf_ok(session, given):
            return self._render("refused.html", {"session": session}, 403)
        return None

    # -- sign-in ---------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not self.sessions.required:
            return RedirectResponse(f"{P}/", 303)
        return self._render("login.html", {"next": safe_next(request.query_params.get("next"),
                                                             f"{P}/"), "error": "",
                                           "access_key": ""})

    async def login(self, request: Request) -> Response:
        if not self.sessions.required:
            return RedirectResponse(f"{P}/", 303)
        body = await _body(request, MAX_FORM)
        if body is None:
            return _too_large(MAX_FORM)
        form = _form(body)
        target = safe_next(form.get("next"), f"{P}/")
        headers = {k.lower(): v for k, v in request.headers.items()}
        access_key = form.get("access_key", "").strip()
        session = None
        if same_origin(headers):
            session = self.sessions.sign_in(access_key, form.get("secret_key", "").strip())
        if session is None:
            await asyncio.sleep(FAILED_SIGN_IN_DELAY_S)
            return self._render("login.html", {"next": target, "access_key": access_key,
                                               "error": "That is not a key pair of this "
                                               "service's --auth file."}, 401)
        response = RedirectResponse(target, 303, headers=HEADERS)
        response.headers["set-cookie"] = set_cookie(session)
        return response

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        body = await _body(request, MAX_FORM)
        if body is None:
            return _too_large(MAX_FORM)
        refused = self._post(request, body, session)
        if refused is not None:
            return refused
        assert session is not None
        self.sessions.sign_out(session)
        response = RedirectResponse(LOGIN if self.sessions.required else f"{P}/", 303)
        response.headers["set-cookie"] = clear_cookie()
        return response

    # -- buttons ---------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        """GET: the confirmation page; POST: the API call, then back to the list (a delete)
        or to the resource (a stop)."""
        collection, name = request.path_params["collection"], request.path_params["name"]
        verb = request.path_params["verb"]
        act = actions.ACTIONS.get((collection, verb))
        session = self._session(request)
        if act is None:
            return Response("no such action", 404, media_type="text/plain")
        if session is None:
            return self._sign_in_needed(str(request.url.path), request.method,
                                        request.headers.get("accept", ""))
        back = views.link(collection, name)
        context = {"session": session, "action": act, "name": name, "back": back,
                   "section": collection, "error": ""}
        if request.method == "GET":
            exists = self.parts.state.get(act.kind, name) is not None
            if not exists:
                return self._render("not_found.html", {"session": session, "back": back.rsplit(
                    "/", 1)[0], "message": f"No {act.what} named {name!r} here."}, 404)
            return self._render("confirm.html", context)
        body = await _body(request, MAX_FORM)
        if body is None:
            return _too_large(MAX_FORM)
        refused = self._post(request, body, session)
        if refused is not None:
            return refused
        caller = actions.caller_of(session.account)
        try:
            await anyio.to_thread.run_sync(actions.perform, self.parts, act, name, caller)
        except ApiError as err:
            return self._render("confirm.html", {**context, "error": f"{err.code}: "
                                                 f"{err.message}"}, 400)
        if act.back_to_list:
            return RedirectResponse(f"{P}/{collection}?deleted={quote(name)}", 303)
        return RedirectResponse(back, 303)

    # -- live data -------------------------------------------------------------------------------

    async def log_tail(self, request: Request) -> Response:
        """The log lines after ``after`` (a fragment of rows the page appends)."""
        session = self._session(request)
        if session is None:
            return self._sign_in_needed(str(request.url.path), "GET", "")
        q = request.query_params
        group, prefix, stream = q.get("group", ""), q.get("prefix", ""), q.get("stream", "")
        given = q.get("after", "")
        after = int(given) if given.isdigit() else 0

        def read() -> list[dict[str, Any]]:
            streams = [s for s, _ in self.parts.state.streams(group, prefix)]
            chosen = [stream] if stream in streams else streams
            return views.log_rows(self.parts.state.events(group, chosen, after_id=after,
                                                          limit=pages.LOG_LINES))

        rows = await anyio.to_thread.run_sync(read)
        return self._render("parts/log_rows.html", {"session": session, "rows": rows})

    async def endpoint_metrics(self, request: Request) -> Response:
        if self._session(request) is None:
            return self._sign_in_needed(str(request.url.path), "GET", "")
        name = request.path_params["name"]
        return JSONResponse(await self.meter.read(self.parts, name), headers=HEADERS)

    async def invoke(self, request: Request) -> Response:
        """Try it: the rows, content type and Accept the page sends, through the Runtime."""
        session = self._session(request)
        refused = self._post(request, b"", session)  # the token comes in a header
        if refused is not None:
            return refused
        assert session is not None
        body = await _body(request, MAX_INVOKE)
        if body is None:
            return _too_large(MAX_INVOKE)
        answer = await actions.invoke(self.parts.runtime, request.path_params["name"], body,
                                      request.headers.get("x-openknn-content-type", "text/csv"),
                                      request.headers.get("x-openknn-accept",
                                                          "application/json"),
                                      session.access_key)
        return JSONResponse({"status": answer.status, "content_type": answer.content_type,
                             "body": answer.body.decode("utf-8", "replace"),
                             "variant": answer.variant, "ms": answer.ms}, headers=HEADERS)

    async def test_set(self, request: Request) -> Response:
        """A labelled test set from the store, for the plots (features as CSV, labels)."""
        if self._session(request) is None:
            return self._sign_in_needed(str(request.url.path), "GET", "")
        store = self.parts.store
        if store is None:
            return JSONResponse({"message": "this service uses another S3 (--s3-endpoint); "
                                 "the console reads test sets from its embedded store"}, 400)
        q = request.query_params
        rows = int(q["rows"]) if q.get("rows", "").isdigit() else testset.DEFAULT_ROWS
        try:
            found = await anyio.to_thread.run_sync(
                lambda: testset.read(store, q.get("uri", ""), q.get("content_type") or None,
                                     rows))
        except (OpenKnnError, S3Error) as exc:
            return JSONResponse({"message": str(exc)}, 400, headers=HEADERS)
        return JSONResponse(found.to_json(), headers=HEADERS)

    # -- S3 downloads ----------------------------------------------------------------------------

    async def s3_object(self, request: Request) -> Response:
        """An object's bytes, always as a download (an HTML object must not become a page of
        the console's origin)."""
        session = self._session(request)
        if session is None:
            return self._sign_in_needed(str(request.url.path), "GET",
                                        request.headers.get("accept", ""))
        store = self.parts.store
        bucket, key = request.path_params["bucket"], request.path_params["key"]
        try:
            if store is None:
                raise S3Error("NoSuchBucket", "the service uses another S3")
            info, stream = store.open_object(bucket, key)
        except S3Error as exc:
            return self._render("not_found.html", {"session": session, "message": (
                f"No object s3://{bucket}/{key} here ({exc.code})."),
                "back": f"{P}/s3/{quote(bucket, safe='')}"}, 404)
        filename = key.rsplit("/", 1)[-1] or "object"

        def chunks() -> Any:
            with stream:
                while block := stream.read(1 << 20):
                    yield block

        return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
            "Content-Length": str(info.size), "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})

    # -- the table -------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """Every route of the console, for the service's internal app."""
        page = self._page
        return [
            Route("/", page(pages.home), methods=["GET"]),
            Route(P, page(pages.home), methods=["GET"]),
            Route(f"{P}/", page(pages.home), methods=["GET"]),
            Route(LOGIN, self.login_form, methods=["GET"]),
            Route(LOGIN, self.login, methods=["POST"]),
            Route(f"{P}/logout", self.logout, methods=["POST"]),
            Mount(f"{P}/static", StaticFiles(directory=STATIC), name="static"),
            Route(f"{P}/training-jobs", page(pages.training_jobs), methods=["GET"]),
            Route(f"{P}/training-jobs/{{name}}", page(pages.training_job), methods=["GET"]),
            Route(f"{P}/models", page(pages.models), methods=["GET"]),
            Route(f"{P}/models/{{name}}", page(pages.model), methods=["GET"]),
            Route(f"{P}/endpoint-configs", page(pages.configs), methods=["GET"]),
            Route(f"{P}/endpoint-configs/{{name}}", page(pages.config), methods=["GET"]),
            Route(f"{P}/endpoints", page(pages.endpoints), methods=["GET"]),
            Route(f"{P}/endpoints/{{name}}", page(pages.endpoint), methods=["GET"]),
            Route(f"{P}/transform-jobs", page(pages.transform_jobs), methods=["GET"]),
            Route(f"{P}/transform-jobs/{{name}}", page(pages.transform_job), methods=["GET"]),
            Route(f"{P}/compare", page(pages.compare), methods=["GET"]),
            Route(f"{P}/s3", page(pages.buckets), methods=["GET"]),
            Route(f"{P}/s3/{{bucket}}", page(pages.bucket), methods=["GET"]),
            Route(f"{P}/s3/{{bucket}}/{{key:path}}", self.s3_object, methods=["GET"]),
            Route(f"{P}/logs", self.log_tail, methods=["GET"]),
            Route(f"{P}/api/endpoints/{{name}}/metrics", self.endpoint_metrics,
                  methods=["GET"]),
            Route(f"{P}/api/endpoints/{{name}}/invoke", self.invoke, methods=["POST"]),
            Route(f"{P}/api/testset", self.test_set, methods=["GET"]),
            Route(f"{P}/{{collection}}/{{name}}/{{verb}}", self.action,
                  methods=["GET", "POST"]),
        ]


def _here(request: Request) -> str:
    """The page's own path and query, without ``part``: where its fragments come from."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "part"]
    qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in query)
    return str(request.url.path) + (f"?{qs}" if qs else "")

