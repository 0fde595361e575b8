"""The HTTP side of `aptune serve`: a FastAPI app around a `Service`.

    POST /predict[?tasks=a,b&topk=5]   the video file as the body (Content-Type video/* or
                                       application/octet-stream), or a multipart upload (its first file)
    GET  /tasks                        the loaded tasks, their methods and class names; the views used
    GET  /health                       status, requests in flight and waiting, batcher counters

Every error is JSON `{"error": "one line"}` with a 4xx status (400 bad query or empty body, 404/405
unknown route, 413 too large, 415 not a video), 500 for a failure inside the model (the server stays
up: the traceback goes to the log), 503 while shutting down, and 503 with `Retry-After` when
`max_in_flight` requests are already being served (back-pressure: the client retries, memory stays
bounded). Decoding and the model run in threads, so the event loop keeps accepting requests; requests
waiting together share one forward (batcher.py).
Imported only by `Server` (FastAPI is an optional dependency).
"""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..version import __version__
from .batcher import ShuttingDown
from .service import Problem, Service

log = logging.getLogger("aptune.serve")
NOT_VIDEO = ("text/", "application/json")


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="aptune serve", version=__version__, docs_url=None, redoc_url=None)

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        service.answered[status] = service.answered.get(status, 0) + 1
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):
        return error(400, "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/tasks")
    async def tasks():
        return service.tasks_info()

    @app.post("/predict")
    async def predict(request: Request):
        limit = service.settings.max_in_flight
        if service.in_flight >= limit:            # checked and counted with no await between: one event loop
            return error(503, f"busy: {service.in_flight} requests in flight, the most this server takes "
                              f"(--max-in-flight {limit}); retry later", {"Retry-After": "1"})
        service.in_flight += 1
        try:
            body = await predict_body(service, request)
        except Problem as p:
            return error(p.status, p.message)
        except ClientDisconnect:
            return error(400, "the client disconnected before the body was read")
        except Exception as e:                    # noqa: BLE001  (one request's crash is its own answer)
            log.exception("request failed")
            return error(500, f"internal error ({type(e).__name__}: {' '.join(str(e).split())}); the server is up")
        finally:
            service.in_flight -= 1
        service.answered[200] = service.answered.get(200, 0) + 1
        return body

    return app


async def predict_body(service: Service, request) -> dict:
    t0 = time.perf_counter()
    tasks, topk = service.parse_query(dict(request.query_params))
    data = video_bytes(request.headers.get("content-type", ""), await read_body(request, service.settings.max_bytes))
    loop = asyncio.get_running_loop()
    t1 = time.perf_counter()
    views = await loop.run_in_executor(service.decoder, service.decode, data)
    t2 = time.perf_counter()
    try:
        result = await asyncio.wrap_future(service.batcher.submit(views, tasks))
    except ShuttingDown as e:
        raise Problem(503, str(e)) from None
    t3 = time.perf_counter()
    timing = {"read": t1 - t0, "decode": t2 - t1, "queue": t3 - t2 - result.forward_s, "forward": result.forward_s,
              "total": t3 - t0}
    return service.answer(result, tasks, topk, views.shape[0], timing)


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes, whether declared or streamed; 400 when empty."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"request body of {int(declared):,} bytes is larger than the limit {limit:,} (--max-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"request body is larger than the limit {limit:,} bytes (--max-mb)")
        chunks.append(chunk)
    if not size:
        raise Problem(400, "empty request body: send the video file as the body (Content-Type video/*) "
                           "or as a multipart upload")
    return b"".join(chunks)


def video_bytes(content_type: str, body: bytes) -> bytes:
    """The video in the body: the body itself, or the first file of a multipart form. A body declared as
    text or JSON is refused (415); anything else is tried as a video (curl --data-binary sends a form type)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith(NOT_VIDEO):
        raise Problem(415, f"Content-Type {kind} is not a video; send the file with Content-Type video/* "
                           "(curl --data-binary @clip.mp4 -H 'Content-Type: video/mp4') or curl -F video=@clip.mp4")
    if kind != "multipart/form-data":
        return body
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not form.is_multipart():
        raise Problem(400, "multipart body without parts (is the boundary right?)")
    for part in form.iter_parts():
        if part.get_filename() is not None:
            data = part.get_payload(decode=True) or b""
            if not data:
                raise Problem(400, f"the uploaded file {part.get_filename()!r} is empty")
            return data
    raise Problem(400, "multipart form without a file field; upload the video as one (curl -F video=@clip.mp4)")
