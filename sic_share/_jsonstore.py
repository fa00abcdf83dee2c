"""Small JSON state files written atomically (temporary name, then rename)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from sic_share.errors import SicShareError

__all__ = ["load_json", "save_json", "atomic_write_bytes"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_json(path: Path, default: Any) -> Any:
    """Parse ``path``, or return ``default`` when it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except ValueError:
        raise SicShareError(f"{path} is not valid JSON: fix or delete it") from None


def save_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())
