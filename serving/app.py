"""The HTTP service (aiohttp): routes, JSON errors, readiness and draining.

    POST /v1/categorize  {"products": [...]} → {"rows": [...]}: the rows `linnet score` writes
    GET  /v1/model       versions, thresholds, taxonomy, encoders, store-context table
    GET  /healthz        the process answers
    GET  /readyz         200 once the encoders and the SavedModel are loaded and warmed up, else 503

aiohttp because it is one mature, actively kept package (asyncio-native, in production since 2014)
that brings the server itself, request-size limits (413) and graceful shutdown on SIGTERM, and it is
already in the pinned stack (google-cloud and Beam's GCP extras pull it in); the work per request is
the model's, not the framework's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from serving.batcher import MicroBatcher, OverloadedError
from serving.validation import Product, RequestError, parse_products

LOGGER = logging.getLogger(__name__)
# A product of every kind of content, categorized once before /readyz says ready: the first call pays
# for TensorFlow's graph tracing and ONNX Runtime's allocations, not the first caller.
WARM_UP = {"products": [{"product_id": "warm-up", "store": "warm-up", "title": "Cotton t-shirt",
                         "description": "A plain cotton t-shirt", "product_type": "T-shirts"}]}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the service."""

    max_products: int = 256
    max_body_bytes: int = 16 * 2**20
    timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_s: float = 0.005
    max_queue: int = 1024


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda value: json.dumps(value, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return _json(RequestError(status, code, message, field).body(), status)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Every failure as a JSON error: aiohttp's own (413, 404, 405) and, logged, anything unforeseen."""
    try:
        return await handler(request)
    except RequestError as error:
        return _json(error.body(), error.status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = "body_too_large" if error.status == 413 else error.reason.lower().replace(" ", "_")
        return _error(error.status, code, error.text or error.reason)
    except Exception:
        LOGGER.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, "internal_error", "the service failed on this request; see its log")


def create_app(load: Callable[[], Any], limits: Limits = Limits(), image_root: str | None = None
               ) -> web.Application:
    """The application. `load` builds the `OnlineCategorizer` (slow: it runs on a thread after the server
    is listening, so /healthz answers while the models load); `image_root` as `parse_products` takes it."""
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[json_errors])
    state: dict[str, Any] = {"ready": False, "failed": None, "limits": limits, "image_root": image_root}

    async def start(_: web.Application) -> None:
        state["loading"] = asyncio.get_running_loop().create_task(_load(load, state))

    async def draining(_: web.Application) -> None:
        state["ready"] = False  # a load balancer stops sending while in-flight requests finish
        LOGGER.info("shutting down: finishing in-flight requests")

    async def stop(_: web.Application) -> None:
        state["loading"].cancel()
        if "batcher" in state:
            await state["batcher"].stop()
        LOGGER.info("stopped")

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    app.on_startup.append(start)
    app.on_shutdown.append(draining)
    app.on_cleanup.append(stop)
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/readyz", partial(readyz, state=state)),
        web.get("/v1/model", partial(model, state=state)),
        web.post("/v1/categorize", partial(categorize, state=state)),
    ])
    return app


async def _load(load: Callable[[], Any], state: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    try:
        categorizer = await loop.run_in_executor(None, load)
        limits: Limits = state["limits"]
        batcher = MicroBatcher(categorizer.categorize, limits.max_batch, limits.max_wait_s, limits.max_queue)
        batcher.start()
        warm = await batcher.submit(parse_products(WARM_UP, 1, None))
        if isinstance(warm, RequestError):
            raise warm
        state.update(categorizer=categorizer, batcher=batcher, ready=True)
        LOGGER.info("ready: %s", json.dumps(categorizer.describe()))
    except Exception as error:
        LOGGER.exception("loading the model failed")
        state["failed"] = f"{type(error).__name__}: {error}"


async def readyz(_: web.Request | None, state: dict[str, Any]) -> web.Response:
    if state["ready"]:
        return _json({"ready": True})
    reason = f"loading failed: {state['failed']}" if state["failed"] else "loading the models"
    return _error(503, "not_ready", reason)


async def model(request: web.Request, state: dict[str, Any]) -> web.Response:
    if "categorizer" not in state:
        return await readyz(request, state)
    return _json(state["categorizer"].describe())


async def categorize(request: web.Request, state: dict[str, Any]) -> web.Response:
    if not state["ready"]:
        return await readyz(request, state)
    limits: Limits = state["limits"]
    raw = await request.read()  # 413 past client_max_size, from aiohttp
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        return _error(400, "invalid_json", f"the body is not JSON: {str(error)[:200]}")
    products: list[Product] = parse_products(body, limits.max_products, state["image_root"])
    try:
        async with asyncio.timeout(limits.timeout_s):
            answer = await state["batcher"].submit(products)
    except OverloadedError as error:
        response = _error(503, "overloaded", str(error))
        response.headers["Retry-After"] = "1"
        return response
    except TimeoutError:
        return _error(504, "timeout", f"no answer within {limits.timeout_s:g} s")
    if isinstance(answer, RequestError):
        raise answer
    return _json({"rows": answer})
