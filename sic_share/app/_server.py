"""``sic-share app``: the annotation loop as a local web app (Starlette on uvicorn, loopback by default)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import time
import webbrowser
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sic_share.app._binary import pack
from sic_share.app._session import Session, SessionError
from sic_share.app._slide import CachedSlide, SlideFile, locate_slide, open_cached
from sic_share.app._tiles import SlideTiles, check_fits
from sic_share.errors import SicShareError

__all__ = ["AppError", "AppInfo", "PROJECTIONS", "build", "launch", "prepare"]

#: How the map colours (3-D) and the scatter (2-D) are made: as ``sic-share umap --method``.
PROJECTIONS = ("pca", "umap")
_MAP_MAX_SIDE = 4096
_BODY_LIMIT = 64 << 20


class AppError(SicShareError):
    """The app cannot start: a port in use, an address that is not this machine's, a bad option."""


@dataclass
class AppInfo:
    """What :func:`launch` tells its caller once the app listens."""

    url: str
    slide_id: str
    source: str
    n_patches: int
    seconds: float
    image: str | None


class Views:
    """Seed-independent things the page draws, from the slide's cache folder.

    ``rgb`` (n, 3) uint8 map colours and ``layout`` (n, 2) float32 scatter positions
    come from :func:`sic_share.viz._embedding_map.reduce_embeddings`, the projection
    ``sic-share umap`` draws with; ``col``/``row`` place each patch on the patch grid.
    """

    def __init__(self, slide: CachedSlide, projection: str) -> None:
        from sic_share.viz._embedding_map import reduce_embeddings, scale_to_unit

        if projection not in PROJECTIONS:
            raise AppError(f"--projection {projection!r} is not known: use 'pca' or 'umap'")
        self.projection = projection

        def both() -> np.ndarray:
            c3, c2 = reduce_embeddings(np.asarray(slide.embeddings), (3, 2), method=projection, random_state=0,
                                       n_neighbors=15, min_dist=0.1, metric="euclidean", n_epochs=None)
            return np.concatenate([c3, c2], axis=1).astype(np.float32)

        coords5 = slide.derived(f"proj-{projection}", both)
        self.rgb = np.round(scale_to_unit(coords5[:, :3]) * 255).astype(np.uint8)
        self.layout = np.ascontiguousarray(coords5[:, 3:5], np.float32)
        xy = slide.coords.astype(np.int64)
        self.grid = _grid(xy, slide.patch_size)
        self.col = ((xy[:, 0] - self.grid["x0"]) // self.grid["stride"]).astype(np.int32)
        self.row = ((xy[:, 1] - self.grid["y0"]) // self.grid["stride"]).astype(np.int32)
        self._slide = slide
        self._map_png: bytes | None = None
        self.map_scale = 1.0
        self.map_size = (0, 0)

    def map_png(self) -> bytes:
        """The embedding map as ``sic-share umap`` draws it (a PNG from the slide origin)."""
        if self._map_png is None:
            from sic_share.viz._embedding_map import render_embedding_map
            from sic_share.viz._render import png_bytes

            cells = max(self.grid["cols"], self.grid["rows"])
            side = int(min(_MAP_MAX_SIDE, max(1024, 4 * cells)))
            image = render_embedding_map(coords=self._slide.coords, rgb=self.rgb.astype(np.float32) / 255,
                                         patch_size=self._slide.patch_size, max_side=side, background="transparent")
            self.map_scale = float(image.info["level0_per_pixel"])
            self.map_size = image.size
            self._map_png = png_bytes(image)
        return self._map_png


def _grid(xy: np.ndarray, patch_size: float) -> dict[str, int]:
    """The patch grid as whole level-0 pixels: first centre, step, columns and rows.

    The step is the smallest gap between distinct centres along either axis (the stride);
    a slide of one column or row uses the patch size.
    """
    steps = [np.diff(np.unique(xy[:, a])) for a in (0, 1)]
    found = np.concatenate([s[s > 0] for s in steps])
    stride = int(found.min()) if found.size else max(1, int(round(patch_size)))
    x0, y0 = int(xy[:, 0].min()), int(xy[:, 1].min())
    # centres off the grid (imported data) are rounded to the nearest cell
    x0 -= stride // 2
    y0 -= stride // 2
    cols = int((xy[:, 0].max() - x0) // stride) + 1
    rows = int((xy[:, 1].max() - y0) // stride) + 1
    return {"x0": x0, "y0": y0, "stride": stride, "cols": cols, "rows": rows}


@dataclass
class Prepared:
    """A slide ready to serve."""

    session: Session
    views: Views
    tiles: SlideTiles | None
    slide: CachedSlide
    #: Set once a page has fetched the map, its last request before the first view (see :func:`launch`).
    page_loaded: threading.Event = field(default_factory=threading.Event)


def prepare(dataset: str | os.PathLike[str] | SlideFile, *, slide_id: str | None = None, hub: str | None = None,
            image: str | os.PathLike[str] | None = None, projection: str = "pca",
            cache: str | os.PathLike[str] | None = None, located: SlideFile | None = None) -> Prepared:
    """Find, verify, decode and cache one slide, check its image, compute the views.

    ``dataset`` is a dataset folder (verified by :func:`locate_slide`), a hub
    reference, or a slide located before (how an unsigned folder is served:
    ``locate_slide(folder, slide, unsigned=True)``).

    Raises
    ------
    SicShareError
        One sentence: no such dataset or slide, a hub that refuses, an image that is
        not this slide, an unknown projection.
    """
    if projection not in PROJECTIONS:
        raise AppError(f"--projection {projection!r} is not known: use 'pca' or 'umap'")
    located = located or locate_slide(dataset, slide_id, hub)
    slide = open_cached(located, root=cache)
    tiles = None
    if image is not None:
        tiles = SlideTiles(image)
        try:
            check_fits(str(image), tiles.dimensions, slide.coords, slide.patch_size,
                       slide.metadata.slide_size)
        except BaseException:
            tiles.close()
            raise
    try:
        views = Views(slide, projection)
        session = Session(slide)
        views.map_png()
    except BaseException:
        if tiles is not None:
            tiles.close()
        raise
    return Prepared(session, views, tiles, slide)


# -- HTTP ------------------------------------------------------------------------------------------


def build(prepared: Prepared) -> Any:
    """The Starlette application over a prepared slide."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    session, views, tiles, slide = prepared.session, prepared.views, prepared.tiles, prepared.slide
    static = Path(str(resources.files("sic_share.app") / "static"))
    no_store = {"Cache-Control": "no-store"}

    def state_response() -> Response:
        meta, arrays = session.response()
        return Response(pack(meta, arrays), media_type="application/octet-stream", headers=no_store)

    async def change(action: Callable[[], Any]) -> Response:
        """Carry out ``action`` on the session and answer the new state, in one worker-thread hop.

        The ``Server-Timing`` header says how long the server took (the page shows it
        beside its own click-to-overlay time).
        """
        start = time.perf_counter()

        def run() -> tuple[Any, Response]:
            return action(), state_response()

        result, response = await run_in_threadpool(run)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
        if isinstance(result, str) and result:
            response.headers["X-Sic-Warning"] = result.encode("ascii", "replace").decode()
        return response

    def info() -> dict[str, Any]:
        methods = [{"name": m.name, "label": m.label, "rules": list(m.rules)} for m in session.methods.values()]
        views.map_png()
        return {
            "slide_id": slide.slide_id, "source": slide.source, "n_patches": len(slide), "dim":
            int(slide.embeddings.shape[1]), "model": slide.metadata.model.id, "patch_size": slide.patch_size,
            "grid": views.grid, "projection": views.projection, "methods": methods,
            "image": None if tiles is None else {"dzi": "/tiles/slide.dzi", "width": tiles.dimensions[0],
                                                 "height": tiles.dimensions[1], "name": tiles.path.name},
            "map": {"url": "/map.png", "scale": views.map_scale, "width": views.map_size[0],
                    "height": views.map_size[1]},
        }

    page = (static / "index.html").read_bytes()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html", headers=no_store)

    async def api_info(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(info), headers=no_store)

    async def api_arrays(request: Request) -> Response:
        body = pack({"n": len(slide)}, {"coords": slide.coords, "col": views.col, "row": views.row,
                                        "rgb": views.rgb, "layout": views.layout})
        return Response(body, media_type="application/octet-stream")

    async def api_state(request: Request) -> Response:
        return await run_in_threadpool(state_response)

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise SessionError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise SessionError("the request body should be a JSON object")
        return body

    async def api_seeds(request: Request) -> Response:
        body = await json_body(request)
        if body.get("op", "add") == "remove":
            return await change(lambda: session.remove_seeds(body.get("indices", [])))
        return await change(lambda: session.add_seeds(body.get("indices", []), body.get("class")))

    async def api_classes(request: Request) -> Response:
        body = await json_body(request)
        op = body.get("op")
        if op == "add":
            return await change(lambda: session.add_class(str(body.get("name", "")), body.get("color")))
        if op == "rename":
            return await change(lambda: session.rename_class(body.get("index"), str(body.get("name", "")),
                                                             body.get("color")))
        raise SessionError(f"class operation {op!r} is not add or rename")

    async def api_method(request: Request) -> Response:
        body = await json_body(request)
        return await change(lambda: session.set_method(str(body.get("method", "")), body.get("rule")))

    async def api_undo(request: Request) -> Response:
        return await change(session.undo)

    async def api_redo(request: Request) -> Response:
        return await change(session.redo)

    async def api_seeds_load(request: Request) -> Response:
        data = await request.body()
        if len(data) > _BODY_LIMIT:
            raise SessionError(f"a seeds file of {len(data) >> 20} MiB is too large")
        return await change(lambda: session.load_seeds(data, request.query_params.get("name", "")))

    def download(data: bytes, name: str, media: str) -> Response:
        return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"',
                                                         **no_store})

    async def api_seeds_save(request: Request) -> Response:
        return download(*await run_in_threadpool(session.save_seeds, request.query_params.get("format", "geojson")))

    async def api_export(request: Request) -> Response:
        fmt = request.query_params.get("format", "geojson")
        tiles_too = request.query_params.get("tiles") in ("1", "true")
        return download(*await run_in_threadpool(lambda: session.export(fmt, tiles=tiles_too)))

    async def map_png(request: Request) -> Response:
        response = Response(await run_in_threadpool(views.map_png), media_type="image/png")
        prepared.page_loaded.set()
        return response

    async def dzi(request: Request) -> Response:
        if tiles is None:
            return Response("no --image was given", status_code=404)
        return Response(tiles.dzi(), media_type="application/xml")

    async def tile(request: Request) -> Response:
        if tiles is None:
            return Response("no --image was given", status_code=404)
        p = request.path_params
        try:
            data = await run_in_threadpool(tiles.tile, int(p["level"]), int(p["col"]), int(p["row"]))
        except ValueError:
            return Response("no such tile", status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def domain_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    routes = [
        Route("/", index),
        Route("/api/info", api_info),
        Route("/api/arrays.bin", api_arrays),
        Route("/api/state.bin", api_state),
        Route("/api/seeds", api_seeds, methods=["POST"]),
        Route("/api/classes", api_classes, methods=["POST"]),
        Route("/api/method", api_method, methods=["POST"]),
        Route("/api/undo", api_undo, methods=["POST"]),
        Route("/api/redo", api_redo, methods=["POST"]),
        Route("/api/seeds/load", api_seeds_load, methods=["POST"]),
        Route("/api/seeds/save", api_seeds_save),
        Route("/api/export", api_export),
        Route("/map.png", map_png),
        Route("/tiles/slide.dzi", dzi),
        Route("/tiles/slide_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={SicShareError: domain_error})


# -- starting --------------------------------------------------------------------------------------


def _check_host(host: str, allow_remote: bool) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost":
            return
        raise AppError(f"--host {host!r} is not an IP address: use 127.0.0.1 (this machine only)") from None
    if not address.is_loopback and not allow_remote:
        raise AppError(f"--host {host} would let other machines reach the app: use 127.0.0.1, or pass "
                       "--allow-remote if you mean it (there is no login)")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or one sentence saying why not."""
    if not 0 <= port <= 65535:
        raise AppError(f"--port {port} is not a port number: use 1-65535, or 0 for a free one")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AppError(f"port {port} on {host} is in use (another app or server): choose another with "
                           "--port, or --port 0 for a free one") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise AppError(f"port {port} on {host} needs privileges: use a port above 1023") from None
        raise AppError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host and --port") from None
    return sock


def launch(
    dataset: str | os.PathLike[str] | SlideFile,
    *,
    slide_id: str | None = None,
    hub: str | None = None,
    image: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    projection: str = "pca",
    open_browser: bool = True,
    allow_remote: bool = False,
    on_ready: Callable[[AppInfo], None] | None = None,
) -> None:
    """Serve the annotation app for one slide until interrupted (Ctrl-C).

    Every check (host, dataset, slide, hub access, image, port) runs before the
    server starts, so a failure leaves nothing running. ``on_ready`` is called
    with the URL once the socket listens; the browser is opened after it unless
    ``open_browser`` is False.
    """
    from sic_share.viz._common import import_extra

    start = time.perf_counter()
    for module in ("starlette", "uvicorn"):
        import_extra(module, package=module, extra="app", needed_for="sic-share app")
    import uvicorn

    _check_host(host, allow_remote)
    if not 0 <= port <= 65535:
        raise AppError(f"--port {port} is not a port number: use 1-65535, or 0 for a free one")
    located = locate_slide(dataset, slide_id, hub)  # fail fast on a missing dataset or slide
    sock = bind(host, port)
    tiles = None
    try:
        prepared = prepare(dataset, slide_id=located.slide_id, hub=hub, image=image, projection=projection,
                           located=located)
        tiles = prepared.tiles
        application = build(prepared)
        actual = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{actual}/"
        config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(AppInfo(url, prepared.slide.slide_id, prepared.slide.source, len(prepared.slide),
                             time.perf_counter() - start, None if tiles is None else str(tiles.path)))
        # The first click's work (scikit-learn's import, the slide's spreading graph) runs before the click:
        # once the page has what it draws first (the import holds the GIL and would slow those answers),
        # or after a few seconds when no page comes.
        def warm() -> None:
            prepared.page_loaded.wait(timeout=3.0)
            prepared.session.warm()

        threading.Thread(target=warm, daemon=True, name="sic-share-warm").start()
        if open_browser:
            threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: stopping is the normal end
            pass
    finally:
        sock.close()
        if tiles is not None:
            tiles.close()


def _open_when_started(server: Any, url: str) -> None:
    for _ in range(200):
        if server.started:
            webbrowser.open(url)
            return
        time.sleep(0.05)
