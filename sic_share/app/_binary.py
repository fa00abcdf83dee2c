"""Arrays to the browser as one binary body: a small JSON header, then raw little-endian arrays.

Layout: ``uint32 n`` (little-endian), ``n`` bytes of UTF-8 JSON (padded with spaces
so that the data starts at a multiple of 8), then each array's bytes at the offset
the header gives, each aligned to 8 bytes, so that the browser views them as typed
arrays (``new Float32Array(buffer, offset, length)``) without copying or parsing.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["pack", "unpack"]

_DTYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"}


def _pad(n: int) -> int:
    return (-n) % 8


def pack(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """One body holding ``meta`` (JSON) and ``arrays`` (C order, little-endian)."""
    layout: dict[str, Any] = {}
    parts: list[bytes] = []
    offset = 0
    for name, value in arrays.items():
        array = np.ascontiguousarray(value)
        if array.dtype.name not in _DTYPES:
            raise TypeError(f"array {name!r} has dtype {array.dtype}, which typed arrays cannot view")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        layout[name] = {"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset}
        parts.append(data + b"\0" * _pad(len(data)))
        offset += len(data) + _pad(len(data))
    header = json.dumps({"meta": dict(meta), "arrays": layout}, separators=(",", ":")).encode()
    header += b" " * _pad(4 + len(header))
    return struct.pack("<I", len(header)) + header + b"".join(parts)


def unpack(body: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The inverse of :func:`pack` (for tests and benchmarks)."""
    (n,) = struct.unpack_from("<I", body)
    header = json.loads(body[4 : 4 + n])
    start = 4 + n
    arrays = {}
    for name, spec in header["arrays"].items():
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        count = int(np.prod(spec["shape"])) if spec["shape"] else 1
        arrays[name] = np.frombuffer(body, dtype, count, start + spec["offset"]).reshape(spec["shape"])
    return header["meta"], arrays
