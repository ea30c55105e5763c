"""`leukoflow serve`: the bundles behind a small HTTP API and a web page (FastAPI, uvicorn).

Routes: `POST /v1/predict` (multipart images, or JSON `{"model", "paths"}` naming files under
the server's `--data-root`) answers one row per image as `leukoflow predict` writes it
(`deploy.serve_models.classify`), with `?csv=true` the CSV predict writes, with
`?patients=subject|folder` the rows of predict's patients.csv; `POST
/v1/saliency` a cell's Grad-CAM overlay (PNG); `GET /v1/models` the bundles and their cards;
`GET /healthz`; `GET /` the page (`deploy/static/`); `/docs` the OpenAPI page, its Swagger UI
served from the `swagger-ui-bundle-v2` package (no CDN), `/openapi.json` its schema.

Safe by default: the caller binds to 127.0.0.1; with a token, every `/v1/` route wants
`Authorization: Bearer TOKEN`; a request body over `max_request_bytes` (or one without a
length) is refused before it is read, as are more than `max_images` images; each image is
read by the one image reader with `max_pixels`; model work runs one request at a time on one
thread, with at most `queue` requests waiting, beyond which the answer is 503 with
Retry-After; uploads live in a temporary folder removed after the request; `--data-root`
paths that resolve (symbolic links included) outside the root are refused. Every refusal is
a 4xx JSON `{"detail": ...}`.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from leukoflow.core.errors import LeukoflowError
from leukoflow.deploy.patients import patient_fit, patient_rows
from leukoflow.deploy.predict import COLUMNS, Prediction, collect_inputs
from leukoflow.deploy.serve_models import ServedModel, classify, predictions_csv, saliency_png

STATIC = Path(__file__).parent / "static"
MIB = 2**20


@dataclass
class Limits:
    """What the server accepts: bytes per request body, images per request, pixels per image,
    requests waiting for the model; preparation threads and images per model call."""

    max_request_bytes: int = 64 * MIB
    max_images: int = 256
    max_pixels: int = 4_000_000
    queue: int = 64
    batch_size: int = 32
    workers: int | None = None


class Queue:
    """One model thread and a bounded count of requests waiting for it (all counting happens
    on the event loop's thread, so it needs no lock)."""

    def __init__(self, size: int):
        self.size, self.active, self.seconds = size, 0, 1.0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def enter(self) -> None:
        """Take a place, or refuse with 503 and a Retry-After from the recent request time."""
        if self.active > self.size:
            retry = max(1, math.ceil(self.seconds * self.active))
            raise HTTPException(
                503,
                f"the server is busy ({self.active} requests in hand); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        self.active += 1

    async def run(self, fn, *args):
        """Run `fn(*args)` on the model thread; keeps a running mean of the time it takes."""
        start = time.perf_counter()
        try:
            return await asyncio.wrap_future(self.pool.submit(fn, *args))
        finally:
            self.seconds = 0.8 * self.seconds + 0.2 * (time.perf_counter() - start)


class BodyLimit:
    """ASGI middleware: a POST without Content-Length gets 411, one over `limit` bytes 413,
    before its body is read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refusal = None
            if length is None or not length.isdigit():
                refusal = 411, "send the body with a Content-Length header"
            elif int(length) > self.limit:
                refusal = (
                    413,
                    (
                        f"request body of {int(length):,} bytes is over the server's limit of "
                        f"{self.limit:,} (--max-request-mb); send fewer images per request"
                    ),
                )
            if refusal:
                response = JSONResponse({"detail": refusal[1]}, status_code=refusal[0])
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _row(row: Prediction, threshold: float, columns: list[str]) -> dict:
    """An image's answer: the columns of `leukoflow predict`'s CSV (with the bundle's
    uncertainty `columns`, None for a file that could not be used)."""
    values = (row.path, row.probability, row.label, threshold, row.refer, row.error)
    return {
        **dict(zip(COLUMNS, values, strict=True)),
        **{c: row.uncertainty.get(c) for c in columns},
    }


def _patient_fit(model: ServedModel, grouping: str | None) -> dict | None:
    """The bundle's patient-level fit for `grouping` (None: none asked for).

    Raises:
        HTTPException: 422 when the bundle has none (`deploy.patients.patient_fit`).
    """
    if grouping is None:
        return None
    try:
        return patient_fit(model.bundle.meta, grouping)
    except LeukoflowError as error:
        raise HTTPException(422, f"model {model.name}: {error}") from None


def _upload_name(name: str | None, index: int) -> str:
    """The name an uploaded image's row reports: the client's relative path, without empty,
    `.` or `..` parts (never used as a path on disk)."""
    path = PurePosixPath((name or "").replace("\\", "/"))
    parts = [part for part in path.parts if part not in ("/", "..")]
    return "/".join(parts) or f"image{index}"


def _under_root(root: Path, given: str) -> list[tuple[str, Path]]:
    """The files a path under the data root names (a folder: its images, as predict finds
    them); each (its path relative to the root, the file).

    Raises:
        HTTPException: 403 when the path or a file it leads to resolves outside the root.
    """
    path = root / given

    def check(file):
        if not file.resolve().is_relative_to(root):
            raise HTTPException(
                403, f"{given}: outside the server's data root (--data-root); refused"
            )

    check(path)  # before a folder is searched
    found = collect_inputs([path])
    for file in found:
        check(file)
    return [(os.path.relpath(file, root), file) for file in found]


def create_app(
    models: dict[str, ServedModel],
    limits: Limits | None = None,
    data_root: str | Path | None = None,
    token: str | None = None,
) -> FastAPI:
    """The service: its routes over `models` (`deploy.serve_models.load_models`).

    Args:
        models: {name: served model}; the first is the default.
        limits: what it accepts (`Limits()`).
        data_root: the folder JSON requests may name files under; None: uploads only.
        token: the bearer token every `/v1/` route wants; None: no token.
    """
    limits = limits or Limits()
    root = Path(data_root).resolve() if data_root is not None else None
    queue = Queue(limits.queue)
    app = FastAPI(
        title="leukoflow",
        summary="Classify single-cell images: leukemic lymphoblast (all) or normal (hem).",
        docs_url=None,
    )
    app.add_middleware(BodyLimit, limit=limits.max_request_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(
                401,
                "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def served(name: str | None) -> ServedModel:
        if name in (None, ""):
            return next(iter(models.values()))
        if name not in models:
            raise HTTPException(404, f"no model {name!r}; served: {', '.join(models)}")
        return models[name]

    def too_many(n: int) -> None:
        if n > limits.max_images:
            raise HTTPException(
                413, f"{n} images in one request; the server takes at most {limits.max_images}"
            )
        if n == 0:
            raise HTTPException(422, "no image in the request")

    async def request_files(request: Request, folder: Path):
        """(model name, [(row name, file)]) of a multipart or JSON request."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form(max_files=limits.max_images + 1) as form:
                uploads = [v for v in form.getlist("images") if hasattr(v, "read")]
                too_many(len(uploads))
                files = []
                for i, upload in enumerate(uploads):
                    path = folder / f"{i}.image"
                    path.write_bytes(await upload.read())
                    files.append((_upload_name(upload.filename, i), path))
                return form.get("model"), files
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(422, "send multipart images, or JSON {model, paths}") from None
        paths = body.get("paths") if isinstance(body, dict) else None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HTTPException(422, 'JSON body: {"model": NAME, "paths": [PATH, ...]} expected')
        if root is None:
            raise HTTPException(403, "the server was started without --data-root: upload images")
        too_many(len(paths))
        files = [found for given in paths for found in _under_root(root, given)]
        too_many(len(files))
        return body.get("model"), files

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the models served and the requests in hand."""
        return {"status": "ok", "models": list(models), "requests_in_hand": queue.active}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def list_models() -> dict:
        """The bundles served, each with its threshold, referral band and model card, and the
        server's limits."""
        described = [m.describe() for m in models.values()]
        return {"models": described, "limits": asdict(limits)}

    @app.post("/v1/predict", dependencies=[Depends(authorised)])
    async def predict(
        request: Request, csv: bool = False, patients: Literal["subject", "folder"] | None = None
    ) -> dict:
        """Classify images: multipart form fields `images` (files) and `model`, or JSON
        `{"model": NAME, "paths": [...]}` relative to the data root. One row per image as
        `leukoflow predict` writes it; `csv=true` adds that CSV; `patients=subject|folder`
        adds the rows of predict's patients.csv (the bundle's patient-level call per group of
        cells). 422 when none could be used."""
        queue.enter()
        try:
            with tempfile.TemporaryDirectory(prefix="leukoflow-serve-") as tmp:
                name, files = await request_files(request, Path(tmp))
                model = served(name)
                fitted = _patient_fit(model, patients)
                rows, columns = await queue.run(
                    classify, model, files, limits.max_pixels, limits.batch_size, limits.workers
                )
                threshold = model.bundle.threshold
                text = predictions_csv(rows, threshold, columns, Path(tmp)) if csv else None
        finally:
            queue.active -= 1
        images = [_row(row, threshold, columns) for row in rows]
        if all(row.error for row in rows):
            raise HTTPException(422, {"message": "no image could be classified", "images": images})
        answer = {"model": model.name, "engine": model.bundle.engine, "images": images}
        if patients:
            answer["patients"] = patient_rows(rows, patients, fitted)
        return {**answer, "referral": model.bundle.referral, **({"csv": text} if csv else {})}

    @app.post("/v1/saliency", dependencies=[Depends(authorised)])
    async def saliency(request: Request) -> Response:
        """The Grad-CAM of one uploaded cell (form fields `image` and `model`), PNG."""
        from leukoflow.data.images import BadImageError

        queue.enter()
        try:
            with tempfile.TemporaryDirectory(prefix="leukoflow-serve-") as tmp:
                async with request.form(max_files=1) as form:
                    upload, model = form.get("image"), served(form.get("model"))
                    if not hasattr(upload, "read"):
                        raise HTTPException(422, "send one image as the form field `image`")
                    path = Path(tmp) / "image"
                    path.write_bytes(await upload.read())
                try:
                    png = await queue.run(saliency_png, model, path, limits.max_pixels)
                except BadImageError as error:
                    raise HTTPException(422, f"{upload.filename}: {error.reason}") from None
        finally:
            queue.active -= 1
        return Response(png, media_type="image/png")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url="openapi.json",  # relative: works under a proxy's prefix
            title="leukoflow API",
            swagger_js_url="swagger/swagger-ui-bundle.js",
            swagger_css_url="swagger/swagger-ui.css",
            swagger_favicon_url="swagger/favicon-32x32.png",
        )

    from swagger_ui_bundle import swagger_ui_path

    app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")
    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
