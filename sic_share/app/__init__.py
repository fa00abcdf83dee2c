"""The annotation app: click seed patches on a slide or its embedding map, see SIC's annotation at once.

``sic-share app DATASET`` serves one slide of a dataset folder or hub dataset on a
local web server (Starlette on uvicorn, loopback only by default):

- :func:`launch`: checks everything, then serves until Ctrl-C (what the command calls);
- :func:`prepare` and :func:`build`: the slide made ready, and the Starlette app over it;
- :class:`Session`: the loop itself (classes, seeds, undo/redo, the method, exports);
- :func:`available_methods`: the methods the app offers, from :mod:`sic_share.sic`;
- :func:`locate_slide` and :func:`open_cached`: a slide's file, decoded once into the
  sha256-keyed cache and memory-mapped afterwards.

Every request passes one guard (``sic_share/app/_guard.py``): the ``Host`` must be the
app's own address with its port (or an ``--allow-remote`` name), and a change must come
from the page it serves (its origin, the session token, JSON of bounded size). Web pages
the user visits can neither read the slide nor drive the session (docs/app.md,
"Security checks").

Starlette and uvicorn come with the ``app`` extra: ``pip install 'sic-share[app]'``.
"""

from __future__ import annotations

from sic_share.app._methods import Method, available_methods
from sic_share.app._session import EXPORTS, Session, SessionError
from sic_share.app._slide import WORK_DIMS, CachedSlide, SlideFile, locate_slide, open_cached
from sic_share.app._server import PROJECTIONS, AppError, AppInfo, build, launch, prepare

__all__ = [
    "EXPORTS",
    "PROJECTIONS",
    "WORK_DIMS",
    "AppError",
    "AppInfo",
    "CachedSlide",
    "Method",
    "Session",
    "SessionError",
    "SlideFile",
    "available_methods",
    "build",
    "launch",
    "locate_slide",
    "open_cached",
    "prepare",
]
