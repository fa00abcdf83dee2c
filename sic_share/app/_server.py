"""``sic-share app``: the annotation loop as a local web app (Starlette on uvicorn, loopback by default)."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import threading
import time
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sic_share.app._binary import pack
from sic_share.app._guard import Guard, allowed_hosts, new_token, shown
from sic_share.app._session import Session, SessionError
from sic_share.app._slide import CachedSlide, SlideFile, locate_slide, open_cached
from sic_share.app._tiles import SlideTiles, check_fits
from sic_share.errors import SicShareError

__all__ = ["AppError", "AppInfo", "PROJECTIONS", "build", "launch", "prepare"]

#: How the map colours (3-D) and the scatter (2-D) are made: as ``sic-share umap --method``.
PROJECTIONS = ("pca", "umap")
_MAP_MAX_SIDE = 4096
#: Most bytes of a change's JSON body: 1 MiB, or 16 bytes a patch on larger slides (a lasso over all of them).
_BODY_LIMIT = 1 << 20
_BODY_PER_PATCH = 16
#: Most bytes of a seeds file sent to ``/api/seeds/load`` (as JSON text).
_SEEDS_FILE_LIMIT = 32 << 20
_TOKEN_SLOT = b"__SIC_TOKEN__"
#: The page runs and fetches only the app's own files, and no other page may frame it (clicks in a hidden
#: frame would drive the session). 'unsafe-eval': the page never evaluates strings, Playwright's waits do.
_CSP = ("script-src 'self' 'unsafe-eval'; connect-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


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


def build(prepared: Prepared, *, allow_remote: Sequence[str] = (), token: str | None = None) -> Any:
    """The Starlette application over a prepared slide, behind the app's :class:`~sic_share.app._guard.Guard`.

    Parameters
    ----------
    prepared : Prepared
    allow_remote : sequence of str, default=()
        Host names (``name`` or ``name:port``) the app answers besides loopback ones.
    token : str, optional
        The session token every change must carry (``X-Sic-Token``); default: a new
        random one. It is written into the page at ``/`` and kept in ``app.state.token``.

    Notes
    -----
    Every request must name the app in ``Host`` (a loopback name or ``allow_remote``,
    with the port it came in on); every change must come from the app's own origin,
    with the token, as JSON of at most 1 MiB (16 bytes a patch on slides above
    65,536 patches; a seeds file: 32 MiB). Each field of a change is checked before the
    session sees it: a wrong type, a number that is not a whole patch or class index,
    or an array longer than the slide is an HTTP 400 with a JSON ``{"error": sentence}``.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    session, views, tiles, slide = prepared.session, prepared.views, prepared.tiles, prepared.slide
    static = Path(str(resources.files("sic_share.app") / "static"))
    no_store = {"Cache-Control": "no-store"}

    def state_response(*, first_view: bool = False) -> Response:
        meta, arrays = session.response()
        # a page that loads a session already changed (by a page before a reload) is told so
        meta["restored"] = first_view and meta["revision"] > 0
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
            "slide_id": slide.slide_id, "source": slide.source, "n_patches": len(slide),
            "dim": int(slide.embeddings.shape[1]), "work_dim": session.work_dim, "model": slide.metadata.model.id,
            "patch_size": slide.patch_size,
            "grid": views.grid, "projection": views.projection, "methods": methods,
            "image": None if tiles is None else {"dzi": "/tiles/slide.dzi", "width": tiles.dimensions[0],
                                                 "height": tiles.dimensions[1], "name": tiles.path.name},
            "map": {"url": "/map.png", "scale": views.map_scale, "width": views.map_size[0],
                    "height": views.map_size[1]},
        }

    token = token or new_token()
    try:
        allowed_hosts(0, allow_remote)
    except ValueError as exc:
        raise AppError(f"allow_remote: {exc}: give names as the browser's address bar shows them") from None
    page = (static / "index.html").read_bytes()
    if page.count(_TOKEN_SLOT) != 1:
        raise AppError("the app's index.html has no token slot: rebuild the front end (cd frontend && npm run build)")
    page = page.replace(_TOKEN_SLOT, token.encode())

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html", headers={**no_store, "Content-Security-Policy": _CSP,
                                                                "X-Frame-Options": "DENY"})

    async def api_info(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(info), headers=no_store)

    async def api_arrays(request: Request) -> Response:
        body = pack({"n": len(slide)}, {"coords": slide.coords, "col": views.col, "row": views.row,
                                        "rgb": views.rgb, "layout": views.layout})
        return Response(body, media_type="application/octet-stream")

    async def api_state(request: Request) -> Response:
        return await run_in_threadpool(lambda: state_response(first_view=True))

    n_patches = len(slide)

    async def json_body(request: Request) -> _Fields:
        return _Fields(_parse_json(await request.body()), n_patches)

    async def api_seeds(request: Request) -> Response:
        body = await json_body(request)
        op = body.choice("op", ("add", "remove", "clear"), "add")
        if op == "clear":
            return await change(session.clear_seeds)
        indices = body.indices("indices")
        if op == "remove":
            return await change(lambda: session.remove_seeds(indices))
        cls = body.whole("class")
        return await change(lambda: session.add_seeds(indices, cls))

    async def api_classes(request: Request) -> Response:
        body = await json_body(request)
        op = body.choice("op", ("add", "rename"))
        name, colour = body.text("name", 64), body.maybe_text("color", 64)
        if op == "add":
            return await change(lambda: session.add_class(name, colour))
        index = body.whole("index")
        return await change(lambda: session.rename_class(index, name, colour))

    async def api_method(request: Request) -> Response:
        body = await json_body(request)
        name, rule = body.text("method", 64), body.maybe_text("rule", 64)
        return await change(lambda: session.set_method(name, rule))

    async def api_undo(request: Request) -> Response:
        return await change(session.undo)

    async def api_redo(request: Request) -> Response:
        return await change(session.redo)

    async def api_seeds_load(request: Request) -> Response:
        body = await json_body(request)
        name, text = body.text("name", 255), body.text("text", _SEEDS_FILE_LIMIT)
        return await change(lambda: session.load_seeds(text.encode(), name))

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
    limit = max(_BODY_LIMIT, _BODY_PER_PATCH * n_patches)
    guard = Middleware(Guard, token=token, remote=tuple(allow_remote), body_limit=limit,
                       limits={"/api/seeds/load": _SEEDS_FILE_LIMIT})
    application = Starlette(routes=routes, middleware=[guard], exception_handlers={SicShareError: domain_error})
    application.state.token = token
    return application


def _no_constant(name: str) -> Any:
    raise SessionError(f"the request body holds {name}, which is not a number: send finite numbers")


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise SessionError("the request body is nested too deeply: send the JSON object the page sends") from None
    except SessionError:
        raise
    except ValueError as exc:  # UnicodeDecodeError too; an integer of over 4,300 digits (int_max_str_digits)
        reason = "an integer with too many digits" if "digits" in str(exc) else str(exc)
        raise SessionError(f"the request body is not JSON ({reason})") from None


class _Fields:
    """The fields of a change's JSON object, each checked for its type and range before the session sees it."""

    def __init__(self, body: Any, n_patches: int) -> None:
        if not isinstance(body, dict):
            raise SessionError(f"the request body should be a JSON object, not {type(body).__name__}")
        self.body, self.n = body, n_patches

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.body.get(key, default)
        if not isinstance(value, str) or value not in options:
            raise SessionError(f"{key} {shown(value)} is not one of {', '.join(options)}")
        return value

    def maybe_text(self, key: str, most: int) -> str | None:
        return None if self.body.get(key) is None else self.text(key, most)

    def text(self, key: str, most: int) -> str:
        value = self.body.get(key)
        if not isinstance(value, str):
            raise SessionError(f"{key} should be a string, not {shown(value)}")
        if len(value) > most:
            raise SessionError(f"{key} has {len(value)} characters, more than {most}")
        return value

    def whole(self, key: str) -> int:
        value = self.body.get(key)
        if type(value) is not int:  # a bool is an int to Python, not to JSON
            raise SessionError(f"{key} {shown(value)} should be a whole number (a class index)")
        return value  # the session checks the range

    def indices(self, key: str) -> np.ndarray:
        value = self.body.get(key, [])
        if not isinstance(value, list):
            raise SessionError(f"{key} should be a list of patch indices, not {shown(value)}")
        if len(value) > self.n:
            raise SessionError(f"{key} has {len(value)} entries, more than the slide's {self.n} patches")
        for v in value:
            if type(v) is not int or not 0 <= v < self.n:
                raise SessionError(f"patch index {shown(v)} in {key} should be a whole number from 0 to {self.n - 1}")
        return np.asarray(value, np.int64)




# -- starting --------------------------------------------------------------------------------------


def _check_host(host: str, allow_remote: Sequence[str]) -> list[str]:
    """The names the app answers besides the loopback ones: ``allow_remote``, and ``host`` when it is an address.

    A host other machines can reach needs at least one ``--allow-remote`` name.
    """
    if isinstance(allow_remote, (str, bool)):
        raise AppError("allow_remote should be a list of host names (--allow-remote NAME, once per name)")
    for name in allow_remote:
        try:
            allowed_hosts(0, [name])
        except ValueError:
            raise AppError(f"--allow-remote {name!r} is not a host name or address: give it as the browser's "
                           "address bar shows it (workstation.lab, 10.0.0.5, or name:port)") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost":
            return list(allow_remote)
        raise AppError(f"--host {host!r} is not an IP address: use 127.0.0.1 (this machine only)") from None
    if not address.is_loopback and not allow_remote:
        raise AppError(f"--host {host} would let other machines reach the app: use 127.0.0.1, or pass "
                       "--allow-remote NAME, the name they use for this machine, if you mean it (there is no login)")
    if address.is_unspecified or address.is_loopback:
        return list(allow_remote)
    return [*allow_remote, f"[{host}]" if address.version == 6 else host]  # an address cannot be rebound


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
    allow_remote: Sequence[str] = (),
    on_ready: Callable[[AppInfo], None] | None = None,
) -> None:
    """Serve the annotation app for one slide until interrupted (Ctrl-C).

    Every check (host, dataset, slide, hub access, image, port) runs before the
    server starts, so a failure leaves nothing running. ``on_ready`` is called
    with the URL once the socket listens; the browser is opened after it unless
    ``open_browser`` is False.

    The app answers only requests whose ``Host`` is a loopback name or address with
    its port, ``host`` itself when it is an address, or one of ``allow_remote``
    (``name`` or ``name:port``); a ``host`` other machines can reach needs at least
    one of those. Changes must come from the page it serves (see :func:`build`).
    """
    from sic_share.viz._common import import_extra

    start = time.perf_counter()
    for module in ("starlette", "uvicorn"):
        import_extra(module, package=module, extra="app", needed_for="sic-share app")
    import uvicorn

    remote = _check_host(host, allow_remote)
    if not 0 <= port <= 65535:
        raise AppError(f"--port {port} is not a port number: use 1-65535, or 0 for a free one")
    located = locate_slide(dataset, slide_id, hub)  # fail fast on a missing dataset or slide
    sock = bind(host, port)
    tiles = None
    try:
        prepared = prepare(dataset, slide_id=located.slide_id, hub=hub, image=image, projection=projection,
                           located=located)
        tiles = prepared.tiles
        application = build(prepared, allow_remote=remote)
        actual = sock.getsockname()[1]
        named = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        url = f"http://{named}:{actual}/"  # a wildcard address is no Host the app answers
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
