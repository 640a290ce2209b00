"""The HTTP retrieval service: search, add, get and delete over a durable gallery (FastAPI).

    from reid_htg.serve.app import create_app
    app = create_app(DurableGallery("svc", "gallery_index"), Embedder.load("model.onnx"))

Endpoints (JSON in and out; errors are ``{"error": "..."}`` with a 4xx status naming the problem):

- ``GET /health``: ``status``, ``count``, ``dim``, ``metric``, ``index_type``, ``fingerprint`` (the index's
  model), ``model_fingerprint`` (the server's), ``log_length``;
- ``POST /search``: ``{"embeddings": [[...], ...], "k": 10}``, or multipart image files (``files``) and ``k``
  -> ``{"results": [[{"gallery_id", "distance", <metadata>}, ...], ...]}``, one ranked list per query; with a
  threshold (the server's, from ``threshold.json`` beside the index or ``--threshold``, or the request's own
  ``"threshold"``) also ``"threshold"`` and ``"unknown": [bool per query]`` (best match beyond the threshold);
  ``"filter": {"camid": {"in": [3, 4]}, "time": {"gte": 1700000000}}`` (equality, in, gt, gte, lt, lte, combined
  with and) restricts each list to the k nearest items that pass it (found exactly);
- ``POST /items``: ``{"embeddings": [[...]], "metadata": [{...}]}``, or multipart ``files`` and ``metadata``
  (a JSON list) -> ``{"ids": [...]}``, once the write is committed;
- ``GET /items/{id}`` -> its metadata (404 once deleted); ``DELETE /items/{id}`` -> ``{"deleted": id}``.

Limits: a body over ``max_body_bytes`` is refused (413) whether it declares its length or streams in chunks (the
bytes are counted as they arrive, and reading stops at the limit); at most ``max_batch`` queries or items and
``max_results`` (queries x k) results per request; a full disk is a 507 with nothing written.

FAISS and the model run in the worker thread pool, never on the event loop;
searches run together, writes one at a time (the index's readers-writer lock
and the gallery's writer lock). Writes need ``X-API-Key`` when a key is set.
"""
from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from reid_htg.serve.store import DurableGallery, NotFound

try:  # a faster JSON parser when installed (embeddings are long lists of floats)
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


def _loads(body: bytes):
    """Parse a JSON body: orjson when installed, the standard library for what orjson refuses (NaN literals, which
    Python clients send and which deserve their own error) and when it is missing."""
    if orjson is None:
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # the standard library parses NaN (named later) and names what is truly malformed
        return json.loads(body)


class BodyTooLarge(Exception):
    """A request body that grew past the limit while it streamed in (no Content-Length, or a false one)."""


class _Limits:
    """Pure ASGI middleware (no per-request task or body stream as with ``@app.middleware``): refuse a
    declared body over the limit (413) and, when a key is set, writes without it (401); count the bytes of every
    body as they stream in (chunked bodies declare no length) and stop reading at the limit (413)."""

    def __init__(self, app, max_body_bytes: int, api_key: str | None):
        self.app, self.max_body_bytes, self.api_key = app, max_body_bytes, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            received = 0
            limit = self.max_body_bytes

            async def counted():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(f"request body over the limit of {limit} bytes")
                return message

            headers = dict(scope["headers"])
            size = headers.get(b"content-length", b"").decode("latin-1")
            refusal = None
            if size.isdigit() and int(size) > self.max_body_bytes:
                refusal = (413, f"request body of {int(size)} bytes is over the limit of {self.max_body_bytes}")
            elif (self.api_key and scope["method"] in ("POST", "DELETE", "PUT") and scope["path"].startswith("/items")
                  and headers.get(b"x-api-key", b"").decode("latin-1") != self.api_key):
                refusal = (401, "writes need the X-API-Key header with the service's key")
            if refusal:
                return await _error(*refusal)(scope, receive, send)
            return await self.app(scope, counted, send)
        return await self.app(scope, receive, send)


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


SEARCH_KEYS = ("embeddings", "k", "threshold", "filter")  # a JSON search body
SEARCH_FIELDS = ("files", "k", "threshold", "filter")  # a multipart search form
ADD_KEYS = ("embeddings", "metadata")
ADD_FIELDS = ("files", "metadata")


def known_keys(keys, known: tuple[str, ...], what: str) -> None:
    """Refuse (422) keys a request may not hold: a misspelled ``filters`` must not answer unfiltered."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise BadRequest(f"{what} has unknown key(s) {unknown}; the known keys: {list(known)}")


def create_app(gallery: DurableGallery, embedder=None, api_key: str | None = None, max_k: int = 1000,
               max_body_bytes: int = 32 << 20, max_batch: int = 1024, max_results: int = 100_000, threshold: float | None = None,
               accept_any_model: bool = False) -> FastAPI:
    """The FastAPI app over ``gallery``; ``embedder`` (``reid_htg.serve.embedder.Embedder``) enables image requests; with a
    ``threshold`` (a distance), every search also answers per query whether its best match is beyond it (``unknown``).
    A gallery that records no model fingerprint serves embedding requests only, unless ``accept_any_model``."""
    app = FastAPI(title="reid-htg retrieval service")
    index = gallery.index
    model_fp = embedder.fingerprint if embedder is not None else None

    @app.exception_handler(BadRequest)
    async def bad_request(request, exc: BadRequest):
        return _error(exc.status, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request, exc: NotFound):
        return _error(404, exc.args[0])

    @app.exception_handler(ValueError)  # the library's refusals (wrong dimension, NaN, bad metadata ...)
    async def value_error(request, exc: ValueError):
        return _error(422, str(exc))

    @app.exception_handler(BodyTooLarge)
    async def too_large(request, exc: BodyTooLarge):
        return _error(413, str(exc))

    @app.exception_handler(StarletteHTTPException)  # unknown routes and methods: the documented error shape too
    async def http_error(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return _error(422, "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors()) or "invalid request")

    @app.exception_handler(sqlite3.OperationalError)
    async def storage_error(request, exc: sqlite3.OperationalError):
        if "full" in str(exc) or "disk" in str(exc):  # nothing was committed: the client may retry once there is room
            return _error(507, f"the gallery's disk is full ({exc}); nothing was written")
        return _error(503, f"the gallery's database is unavailable ({exc}); nothing was written")

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):  # a bug: say so, without a stack trace to the client
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    app.add_middleware(_Limits, max_body_bytes=max_body_bytes, api_key=api_key)

    async def read_json(request: Request) -> dict:
        body = await request.body()
        if len(body) > max_body_bytes:
            raise BadRequest(f"request body of {len(body)} bytes is over the limit of {max_body_bytes}", 413)
        try:
            data = _loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}", 400) from None
        except RecursionError:
            raise BadRequest("malformed JSON: nested too deeply", 400) from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object", 400)
        return data

    def as_matrix(rows) -> np.ndarray:
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
            raise BadRequest("embeddings must be a non-empty list of lists of numbers")
        if len(rows) > max_batch:
            raise BadRequest(f"{len(rows)} embeddings in one request; the limit is {max_batch}")
        if any(type(v) is bool for r in rows for v in r):  # numpy would take true/false as 1.0/0.0
            raise BadRequest("embeddings must be lists of numbers; true/false are not numbers")
        try:
            x = np.array(rows, dtype=np.float32)
        except (ValueError, TypeError):
            raise BadRequest("embeddings must be lists of numbers, all of one length") from None
        if x.ndim != 2:
            raise BadRequest("embeddings must be lists of numbers, all of one length")
        return x

    async def read_images(request: Request):
        """(image bytes list, form) of a multipart request; checks the server's model against the index's."""
        if embedder is None:
            raise BadRequest("this server has no model (start it with --checkpoint or --onnx) to embed images; send embeddings", 400)
        if not index.fingerprint and not accept_any_model:
            raise BadRequest("this gallery records no model fingerprint (built from embeddings without one), so no model can be "
                             "checked against it: send embeddings, or start the server with --accept-any-model", 409)
        if index.fingerprint and index.fingerprint != model_fp:
            raise BadRequest(f"the gallery was built by model {index.fingerprint} and this server embeds with {model_fp}: "
                             "their features are not comparable; serve the model that built the index", 409)
        form = await request.form()
        files = [f for f in form.getlist("files") if hasattr(f, "read")]
        if not files:
            raise BadRequest("a multipart request needs one or more image files in the field 'files'", 400)
        if len(files) > max_batch:
            raise BadRequest(f"{len(files)} images in one request; the limit is {max_batch}")
        return [await f.read() for f in files], form

    async def embed(images: list[bytes]) -> np.ndarray:
        try:
            return await run_in_threadpool(embedder.embed_images, images)
        except OSError as exc:
            raise BadRequest(f"{exc} (send JPEG or PNG images)", 415) from None

    def parse_k(value, queries: int) -> int:
        """``k`` as sent: an integer (JSON) or a string of ASCII digits (a form field); 3.7, true and "Infinity" are refused."""
        if isinstance(value, str) and value.isascii() and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"k must be a whole number, got {value!r}")
        if not 1 <= value <= max_k:
            raise BadRequest(f"k must be between 1 and {max_k}, got {value}")
        if queries * value > max_results:
            raise BadRequest(f"{queries} queries x k={value} = {queries * value} results; the limit per request is {max_results}: "
                             "send fewer queries or a smaller k")
        return value

    def multipart(request: Request) -> bool:
        return request.headers.get("content-type", "").startswith("multipart/form-data")

    @app.get("/health")
    def health():
        return {"status": "ok", "count": len(index), "dim": index.dim, "metric": index.metric, "index_type": index.index_type,
                "fingerprint": index.fingerprint, "model_fingerprint": model_fp, "log_length": gallery.log_length(),
                "fold_error": gallery.fold_error, "threshold": threshold}

    def parse_threshold(value) -> float | None:
        """A request's own ``threshold`` (a number; a form field's text), else the server's."""
        if value is None:
            return threshold
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise BadRequest(f"threshold must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest(f"threshold must be a finite number, got {value!r}")
        return float(value)

    @app.post("/search")
    async def search(request: Request):
        if multipart(request):
            images, form = await read_images(request)
            known_keys(form.keys(), SEARCH_FIELDS, "the search form")
            k, limit = parse_k(form.get("k", 10), len(images)), parse_threshold(form.get("threshold"))
            q = await embed(images)
        else:
            data = await read_json(request)
            known_keys(data, SEARCH_KEYS, "the search body")
            q = as_matrix(data.get("embeddings"))
            k, limit = parse_k(data.get("k", 10), len(q)), parse_threshold(data.get("threshold"))
            where = data.get("filter")
        if multipart(request):
            try:
                where = json.loads(form["filter"]) if "filter" in form else None
            except json.JSONDecodeError as exc:
                raise BadRequest(f"the 'filter' field is not JSON: {exc}", 400) from None
        if where is not None and not isinstance(where, dict):
            raise BadRequest("filter must be an object of column -> value or -> {operator: value} (never an expression string)")
        results = await run_in_threadpool(index.search_records, q, k, None, where or None)
        for hits in results:  # JSON has no NaN
            for hit in hits:
                for key, v in hit.items():
                    if isinstance(v, float) and math.isnan(v):
                        hit[key] = None
        body = {"results": results}
        if limit is not None:  # open set: a query whose best match is beyond the threshold is nobody in the gallery
            body["threshold"] = limit
            body["unknown"] = [not hits or hits[0]["distance"] > limit for hits in results]
        return JSONResponse(body)  # plain types already: no jsonable_encoder walk

    @app.post("/items")
    async def add_items(request: Request):
        if multipart(request):
            images, form = await read_images(request)
            known_keys(form.keys(), ADD_FIELDS, "the items form")
            try:
                metadata = json.loads(form.get("metadata", "[]"))
            except json.JSONDecodeError as exc:
                raise BadRequest(f"the 'metadata' field is not JSON: {exc}", 400) from None
            x = await embed(images)
        else:
            data = await read_json(request)
            known_keys(data, ADD_KEYS, "the items body")
            x, metadata = as_matrix(data.get("embeddings")), data.get("metadata", [{}] * len(data.get("embeddings") or []))
        if not isinstance(metadata, list):
            raise BadRequest("metadata must be a list with one object per embedding")
        ids = await run_in_threadpool(gallery.add, x, metadata)
        return {"ids": ids}

    def parse_id(item_id: str) -> int:
        """A gallery id in the path: ASCII digits within int64 (int() would also take other scripts' digits)."""
        text = item_id[1:] if item_id.startswith("-") else item_id
        if not (text.isascii() and text.isdigit()) or abs(int(item_id)) > 2**63 - 1:
            raise BadRequest(f"gallery id must be a whole number, got {item_id!r}", 404)
        return int(item_id)

    @app.get("/items/{item_id}")
    def get_item(item_id: str):
        return gallery.get(parse_id(item_id))

    @app.delete("/items/{item_id}")
    async def delete_item(item_id: str):
        gid = parse_id(item_id)
        await run_in_threadpool(gallery.delete, gid)
        return {"deleted": gid}

    return app
