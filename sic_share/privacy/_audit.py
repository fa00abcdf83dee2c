"""Audit a dataset folder for anything that should not leave the hospital.

A dataset holds patch coordinates, embeddings, pseudonyms and the metadata of
format v1, nothing else (see DESIGN.md, "What a dataset never holds"). The
audit looks for what slips through anyway: stray files, extra columns or
footer keys, and text that looks like a date, a path, a slide file name or a
source slide name.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sic_share.dataset._folder import SLIDES_DIR
from sic_share.dataset._schema import (
    EMBEDDING_DTYPES,
    METADATA_KEY,
    ModelInfo,
    Patching,
    SlideMetadata,
    arrow_schema,
    check_schema,
)
from sic_share.errors import DatasetError
from sic_share.privacy._pseudonym import _SUFFIXES, source_stem
from sic_share.signing._manifest import ENVELOPE, MANIFEST, PREDICATE_TYPE, STATEMENT_TYPE

__all__ = ["Finding", "audit_dataset"]

_CHUNK = 8 << 20
_MAX_CHANCE = 0.01  # chance matches of all names in 1 GiB of compressed bytes that raw search accepts
_MAX_SHOWN = 5  # bad slide_id values reported per file
_HEX_RUN = 16  # a name inside a run of this many hex digits is chance, not a leak
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")
_WHOLE_WORD_BELOW = 8  # in text, a name shorter than this counts only as a whole word ("s" is not in "slides")
_HEX_BYTES = frozenset(b"0123456789abcdefABCDEF")
_ARROW_SCHEMA_KEY = b"ARROW:schema"
_COLUMNS = tuple(arrow_schema(1).names)
_TOP_KEYS = {f.name for f in fields(SlideMetadata)}
_NESTED_KEYS = {"model": {f.name for f in fields(ModelInfo)}, "patching": {f.name for f in fields(Patching)}}
_HEX_STRING = re.compile(r"[0-9a-f]{16}|[0-9a-f]{64}")  # pseudonyms, digests, key ids: random, not text
_SLIDE_ID = re.compile(r"[0-9a-f]{16}")
_LAYOUT_FILE = re.compile(r"slides/([^/]+)\.parquet")

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?(?![a-z])"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MON = r"(?:0?[1-9]|1[0-2])"
_YEAR = r"(?:19|20)\d\d"
_DATE = re.compile(
    "|".join(
        [
            rf"(?<!\d){_YEAR}([-/.]){_MON}\1{_DAY}(?!\d)",  # 2024-03-01, 2024/3/1
            rf"(?<!\d){_DAY}([-/.]){_DAY}\2{_YEAR}(?!\d)",  # 01/03/2024, 03.01.2024
            rf"(?<!\d){_DAY}/{_DAY}/\d\d(?!\d)",  # 12/29/09, as Aperio writes it
            rf"(?<!\d){_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)",  # 20240301
            rf"(?<![a-z]){_MONTH}\s*\d{{1,2}}(?:st|nd|rd|th)?,?\s+{_YEAR}(?!\d)",  # Mar 1 2024, March 1st, 2024
            rf"(?<!\d)\d{{1,2}}(?:st|nd|rd|th)?[\s-]*{_MONTH}[\s,-]*{_YEAR}(?!\d)",  # 1 Mar 2024, 01-Mar-2024
        ]
    ),
    re.IGNORECASE,
)
_SLIDE_SUFFIXES = _SUFFIXES | {".bmp", ".gif", ".jp2", ".webp", ".qptiff", ".zarr", ".kfb", ".sdpc", ".mds",
                               ".vms", ".vmu", ".svslide", ".dicom", ".h5ad"}
_FILE_SUFFIXES = _SLIDE_SUFFIXES | {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pkl", ".onnx", ".json",
                                    ".txt", ".csv", ".parquet", ".npz", ".zip", ".gz", ".tar", ".xml", ".geojson"}


def _suffix_pattern(suffixes: set[str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted((re.escape(s[1:]) for s in suffixes), key=len, reverse=True))
    return re.compile(rf"[\w-]\.(?:{alternatives})(?![\w])", re.IGNORECASE)


_SLIDE_FILE = _suffix_pattern(_SLIDE_SUFFIXES)
_ANY_FILE = _suffix_pattern(_FILE_SUFFIXES)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_DRIVE = re.compile(r"(?<![a-z0-9])[a-z]:(?:[\\/]|$)", re.IGNORECASE)
_MODEL_ID = re.compile(r"(?:hf[-_]hub:)?([\w.+-]+)/([\w.+-]+)")
_PUNCTUATION = "\"'`()[]{}<>,;"


@dataclass(frozen=True)
class Finding:
    """Something in a dataset folder that should not be shared.

    Attributes
    ----------
    file : str
        Path relative to the dataset folder, with ``/`` separators.
    problem : str
        One sentence: what is wrong and what to do.
    """

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def _is_path(token: str) -> bool:
    """Whether a whitespace-free token looks like a file system path or URL.

    ``org/name`` (one slash, word characters, dots and dashes on both sides, no
    file suffix) and ``hf-hub:org/name`` are model ids, not paths.
    """
    if _URL.match(token) or "\\" in token or _DRIVE.search(token):
        return True
    if "/" not in token:
        return False
    model = _MODEL_ID.fullmatch(token)
    if model is None:
        return True
    org, name = model.groups()
    return set(org) == {"."} or set(name) == {"."} or _ANY_FILE.search(name) is not None


def _text_problems(text: str) -> list[str]:
    """What a free-text value gives away: a date, a path or URL, a slide file name (first of each)."""
    problems = []
    date = _DATE.search(text)
    if date:
        problems.append(f"what looks like a date ({date.group(0)!r})")
    path = name = None
    for raw in text.split():
        token = raw.strip(_PUNCTUATION)
        if not token or _DATE.fullmatch(token):  # 01/03/2024 is reported as a date, not as a path
            continue
        if path is None and _is_path(token):
            path = token
        elif name is None and _SLIDE_FILE.search(token):
            name = token
    if path is not None:
        problems.append(f"a path or URL ({_short(path)!r})")
    if name is not None:
        problems.append(f"a slide or image file name ({_short(name)!r})")
    return problems


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Needles:
    """The forbidden source names: in decoded text (case-insensitive) and in raw bytes (ASCII case-insensitive).

    Each name is searched by its stem (``/data/TCGA-01.svs`` -> ``TCGA-01``,
    see :func:`source_stem`), which is part of the file name and of the path,
    so finding the stem finds them too.
    """

    def __init__(self, forbidden: Iterable[str]) -> None:
        if isinstance(forbidden, (str, bytes)):
            forbidden = [forbidden]  # one name, not its characters
        candidates: dict[str, str] = {}
        for raw in forbidden:
            value = os.fsdecode(raw) if isinstance(raw, (bytes, os.PathLike)) else str(raw)
            name = source_stem(value).strip() or PurePath(value).name.strip() or value.strip()
            if name:
                candidates.setdefault(name.casefold(), name)
        self._folded = sorted(candidates)
        self.names = [candidates[k] for k in self._folded]
        raw_names = [n for n in self.names if _chance_per_gib(n.lower().encode()) * len(self.names) <= _MAX_CHANCE]
        self._by_bytes = {name.lower().encode(): name for name in raw_names}
        self._longest = max((len(b) for b in self._by_bytes), default=0)
        self._pattern = _trie_pattern(sorted(self._by_bytes)) if self._by_bytes else None
        self._re2 = "|".join(re.escape(name) for name in raw_names)  # Python's escapes are valid RE2

    def __bool__(self) -> bool:
        return bool(self.names)

    def in_text(self, text: str) -> list[str]:
        folded = text.casefold()
        found = []
        for name, key in zip(self.names, self._folded):
            start = folded.find(key)
            while start >= 0 and _by_chance(folded, start, start + len(key)):
                start = folded.find(key, start + 1)
            if start >= 0:
                found.append(name)
        return found

    def _maybe_in(self, data: bytes) -> bool:
        """Fast pre-check with RE2 (pyarrow): does any name occur in ``data``, ignoring ASCII case?"""
        offsets = pa.array([0, len(data)], pa.int32()).buffers()[1]
        array = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(data)])
        return bool(pc.match_substring_regex(array, self._re2, ignore_case=True)[0].as_py())

    def in_bytes(self, data: bytes, *, final: bool = True) -> set[str]:
        """Names in ``data``; unless ``final``, a match too close to the end is left to the next chunk."""
        found: set[str] = set()
        if self._pattern is None or not self._maybe_in(data):
            return found
        low = data.lower()
        match = self._pattern.search(low)
        while match is not None:
            start, end = match.span()
            if (final or end + _HEX_RUN <= len(low)) and not _in_hex_run(low, start, end, _HEX_BYTES):
                found.add(self._by_bytes[match.group()])
            match = self._pattern.search(low, start + 1)  # overlapping occurrences too
        return found

    def in_file(self, path: Path) -> set[str]:
        """Stream a file in chunks that overlap by the longest name plus the context of a hex run."""
        found: set[str] = set()
        if self._pattern is None:
            return found
        keep = self._longest + 2 * _HEX_RUN
        tail = b""
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(_CHUNK)
                data = tail + chunk
                found |= self.in_bytes(data, final=not chunk)
                if not chunk:
                    return found
                tail = data[-keep:]


def _chance_per_gib(word: bytes) -> float:
    """Expected matches of ``word`` in 1 GiB of random bytes, ignoring ASCII case (a letter matches 2 of 256)."""
    letters = sum(1 for byte in word if 97 <= byte <= 122)
    return 2.0**30 * 2.0**letters / 256.0 ** len(word)


def _by_chance(text: str, start: int, end: int) -> bool:
    """Whether a name found at ``text[start:end]`` is there by chance, not a leak.

    Inside a run of hex digits (a pseudonym, digest or key id), or, for a name
    shorter than ``_WHOLE_WORD_BELOW`` characters, inside a longer word: a slide
    imported as ``s`` or ``a`` would otherwise be "found" in every ``slides/``
    path and class name. A short name standing as a word of its own still counts.
    """
    if _in_hex_run(text, start, end, _HEX_CHARS):
        return True
    if end - start >= _WHOLE_WORD_BELOW:
        return False
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return before.isalnum() or after.isalnum()


def _in_hex_run(data: str | bytes, start: int, end: int, digits: frozenset) -> bool:
    """Whether ``data[start:end]`` lies inside a run of at least 16 hex digits (a pseudonym, digest or key id).

    Such runs are random, so a name found inside one is there by chance (a
    numeric slide name ``12345`` sits in about 1 in 20 000 sha256 digests).
    """
    if end - start >= _HEX_RUN or not all(c in digits for c in data[start:end]):
        return False  # a name of 16+ hex digits does not turn up by chance
    left, right = start, end
    while left > 0 and start - left < _HEX_RUN and data[left - 1] in digits:
        left -= 1
    while right < len(data) and right - end < _HEX_RUN and data[right] in digits:
        right += 1
    return right - left >= _HEX_RUN


def _trie_pattern(words: list[bytes]) -> re.Pattern[bytes]:
    """One regex for many literal byte strings, factored as a trie.

    A plain alternation tries every word at every candidate position; the trie
    tries one branch per byte. It only runs on chunks where RE2 found a name.
    """
    trie: dict[int, dict] = {}
    for word in words:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
        node[-1] = {}

    def emit(node: dict[int, dict]) -> bytes:
        branches = [re.escape(bytes([b])) + emit(child) for b, child in sorted(node.items()) if b != -1]
        if not branches:
            return b""
        body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
        return b"(?:" + body + b")?" if -1 in node else body

    try:
        return re.compile(emit(trie))
    except (re.error, RecursionError, OverflowError):  # absurdly long names: fall back to an alternation
        return re.compile(b"|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


def _strings(node: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, bool]]:
    """Every string in a JSON value: (location, text, is_key)."""
    if isinstance(node, str):
        yield where, node, False
    elif isinstance(node, dict):
        for key, value in node.items():
            yield (*where, str(key)), str(key), True
            yield from _strings(value, (*where, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*where, f"[{i}]"))


def _location(where: tuple[str, ...]) -> str:
    return ".".join(where).replace(".[", "[") or "the document"


class _Report:
    """Collects findings for one file."""

    def __init__(self, findings: list[Finding], file: str, needles: _Needles) -> None:
        self.findings, self.file, self.needles = findings, file, needles
        self.named: set[str] = set()  # forbidden names already reported for this file

    def __call__(self, problem: str) -> None:
        self.findings.append(Finding(self.file, problem))

    def text(self, text: str, what: str, fix: str) -> None:
        """Check one string value (16 or 64 hex digits are random: pseudonyms, digests, key ids)."""
        if not _HEX_STRING.fullmatch(text):
            for problem in _text_problems(text):
                self(f"{what} holds {problem}: {fix}")
        for name in self.needles.in_text(text):
            self.named.add(name)
            self(f"{what} holds the source slide name {name!r}: {fix}")

    def raw(self, names: set[str], where: str = "its bytes") -> None:
        for name in sorted(names - self.named):
            self.named.add(name)
            self(f"{where} contain the source slide name {name!r}: remove it, then export or sign again")


# -- Parquet -------------------------------------------------------------------------------------


def _holds_text(dtype: pa.DataType) -> bool:
    checks = ("is_string", "is_large_string", "is_binary", "is_large_binary", "is_fixed_size_binary",
              "is_string_view", "is_binary_view")
    if any(getattr(pa.types, check, lambda _: False)(dtype) for check in checks):
        return True
    if pa.types.is_dictionary(dtype):
        return _holds_text(dtype.value_type)
    return any(_holds_text(dtype.field(i).type) for i in range(dtype.num_fields))


def _expected_schema(body: Any, schema: pa.Schema) -> pa.Schema | None:
    """Format-v1 schema for this file's dim and dtype (from its metadata, else its embedding column)."""
    dim = dtype = None
    if isinstance(body, dict):
        model = body.get("model")
        dim = model.get("dim") if isinstance(model, dict) else None
        dtype = body.get("embedding_dtype")
    if not (isinstance(dim, int) and dim > 0 and dtype in EMBEDDING_DTYPES) and "embedding" in schema.names:
        kind = schema.field("embedding").type
        if pa.types.is_fixed_size_list(kind):
            dim = kind.list_size
            dtype = next((k for k, v in EMBEDDING_DTYPES.items() if kind.value_type.equals(v)), None)
    if isinstance(dim, int) and dim > 0 and dtype in EMBEDDING_DTYPES:
        return arrow_schema(dim, dtype)
    return None


def _check_metadata_json(raw: bytes, report: _Report, fix: str) -> Any:
    """Keys and text of the ``sic_share`` footer JSON; returns the parsed body (None when unreadable)."""
    try:
        body = json.loads(raw)
    except ValueError:
        report(f"footer key 'sic_share' is not valid JSON: {fix}")
        return None
    if not isinstance(body, dict):
        report(f"footer key 'sic_share' is not a JSON object: {fix}")
        return None
    for key in body:
        if key not in _TOP_KEYS:
            report(f"sic_share metadata has the key {_short(key)!r}, which format v1 does not have: {fix}")
    for section, allowed in _NESTED_KEYS.items():
        if isinstance(body.get(section), dict):
            for key in body[section]:
                if key not in allowed:
                    report(f"sic_share metadata has the key {section}.{_short(key)!r}, "
                           f"which format v1 does not have: {fix}")
    for where, text, is_key in _strings(body):
        if is_key and (len(where) == 1 or (len(where) == 2 and where[0] in _NESTED_KEYS)):
            continue  # fixed keys: extra ones are reported above
        report.text(text, f"sic_share metadata {_location(where)}", fix)
    return body


def _audit_parquet(path: Path, stem: str, report: _Report) -> None:
    fix = "export the slide again with sic-share"
    before = len(report.findings)
    try:
        with pq.ParquetFile(path) as handle:  # the footer only
            schema = handle.schema_arrow
            file_meta = handle.metadata
    except (pa.ArrowException, OSError) as exc:
        report(f"is not a readable Parquet file ({_short(str(exc))}): delete it or export the slide again")
        return
    kv = file_meta.metadata or {}
    for key, value in kv.items():
        if key not in (METADATA_KEY, _ARROW_SCHEMA_KEY):
            label = f"footer metadata key {_short(key.decode(errors='replace'))!r}"
            report(f"{label} is not part of format v1: {fix}")
            report.text(value.decode(errors="replace"), label, fix)
    report.text(file_meta.created_by or "", "the writer name (created_by)", fix)
    body = None
    if METADATA_KEY in kv:
        body = _check_metadata_json(kv[METADATA_KEY], report, fix)
    else:
        report(f"has no sic_share metadata in its footer: {fix}")
    if _ARROW_SCHEMA_KEY in kv:
        _check_arrow_schema(kv[_ARROW_SCHEMA_KEY], kv, report, fix)

    expected = _expected_schema(body, schema)
    wanted = {f.name: f.type for f in expected} if expected is not None else {n: None for n in _COLUMNS}
    for field in schema:
        text = _holds_text(field.type) and field.name != "slide_id"
        if field.name not in wanted:
            kind = "text column" if text else "column"
            report(f"has an extra {kind} {_short(field.name)!r} ({field.type}); format v1 holds only "
                   f"{', '.join(_COLUMNS)}: {fix}")
        elif wanted[field.name] is not None and not field.type.equals(wanted[field.name]):
            detail = " (only slide_id may hold text)" if text else ""
            report(f"column {field.name!r} is {field.type}, format v1 needs {wanted[field.name]}{detail}: {fix}")
        elif text:
            report(f"column {field.name!r} holds text ({field.type}), only slide_id may: {fix}")
        if field.metadata:
            keys = ", ".join(repr(k.decode(errors="replace")) for k in field.metadata)
            report(f"column {field.name!r} carries metadata ({_short(keys)}), which format v1 does not have: {fix}")
    missing = [name for name in _COLUMNS if name not in schema.names]
    if missing:
        report(f"lacks the column(s) {', '.join(missing)} of format v1: {fix}")
    if len(report.findings) == before and body is not None:  # what the checks above do not cover
        try:
            check_schema(schema, path.name)
        except DatasetError as exc:
            report(f"is not format v1 ({exc})")

    if not _SLIDE_ID.fullmatch(stem):
        report(f"file name {stem!r} is not a slide pseudonym (16 lowercase hex characters): {fix}")
    if "slide_id" in schema.names and schema.field("slide_id").type in (pa.string(), pa.large_string()):
        _check_slide_ids(path, stem, report, fix)


def _check_arrow_schema(encoded: bytes, footer: dict[bytes, bytes], report: _Report, fix: str) -> None:
    """pyarrow's serialized schema copy: it may carry metadata of its own (footer keys are reported once)."""
    try:
        raw = base64.b64decode(encoded, validate=False)
        schema = pa.ipc.read_schema(pa.py_buffer(raw))
    except (binascii.Error, ValueError, pa.ArrowException):
        report(f"footer key 'ARROW:schema' is not a readable Arrow schema: {fix}")
        return
    for key, value in (schema.metadata or {}).items():
        if key != METADATA_KEY and key not in footer:
            label = f"the metadata key {_short(key.decode(errors='replace'))!r} of the Arrow schema in the footer"
            report(f"{label} is not part of format v1: {fix}")
            report.text(value.decode(errors="replace"), label, fix)
        elif key == METADATA_KEY and value != footer.get(METADATA_KEY):
            report(f"the Arrow schema in the footer carries sic_share metadata that differs from the footer's: {fix}")
    for field in schema:
        if field.metadata:
            report(f"the Arrow schema in the footer carries metadata on column {field.name!r}: {fix}")
    report.raw(report.needles.in_bytes(raw), "the bytes of the Arrow schema in the footer")


def _check_slide_ids(path: Path, stem: str, report: _Report, fix: str) -> None:
    """Distinct slide_id values, read as a dictionary column (the embeddings are never read)."""
    try:
        table = pq.read_table(path, columns=["slide_id"], read_dictionary=["slide_id"])
    except (pa.ArrowException, OSError) as exc:
        report(f"its slide_id column cannot be read ({_short(str(exc))}): {fix}")
        return
    values: set[str] = set()
    for chunk in table.column(0).chunks:
        dictionary = chunk.dictionary if isinstance(chunk, pa.DictionaryArray) else chunk.unique()
        values.update(v for v in dictionary.to_pylist() if v is not None)
    bad = 0
    for value in sorted(values):
        problems_before = len(report.findings)
        if not _SLIDE_ID.fullmatch(value):
            report(f"slide_id {_short(value)!r} is not a pseudonym (16 lowercase hex characters): {fix}")
        elif value != stem:
            report(f"slide_id {value!r} differs from the file name: the file must be named <slide_id>.parquet")
        report.text(value, f"slide_id {_short(value)!r}", fix)
        bad += len(report.findings) > problems_before
        if bad >= _MAX_SHOWN and len(values) > _MAX_SHOWN:
            report(f"has {len(values)} distinct slide_id values in all, only the first bad ones are listed: {fix}")
            break


# -- manifest ------------------------------------------------------------------------------------


def _check_manifest_json(body: bytes, report: _Report, prefix: str = "") -> None:
    """Every key and value of a manifest; ``prefix`` names where it came from when not manifest.json."""
    fix = "fix the export metadata and sign the dataset again"
    try:
        statement = json.loads(body)
    except ValueError:
        report(f"{prefix or 'it'} is not valid JSON: sign the dataset again")
        return
    for where, text, is_key in _strings(statement):
        if where in (("predicate", "created"), ("predicate", "expires")) and not is_key:
            continue  # written by sign_dataset
        if not is_key and ((where == ("_type",) and text == STATEMENT_TYPE)
                           or (where == ("predicateType",) and text == PREDICATE_TYPE)):
            continue
        if not is_key and where[-1:] == ("name",) and where[:1] in (("subject",), ("predicate",)):
            layout = _LAYOUT_FILE.fullmatch(text)
            if layout:  # slides/<slide_id>.parquet: the layout is ours, check the id
                text = layout.group(1)
        report.text(text, f"{prefix}{_location(where)}", fix)


def _check_envelope(body: bytes, manifest: bytes | None, report: _Report) -> None:
    try:
        envelope = json.loads(body)
        if not isinstance(envelope, dict):
            raise ValueError
    except ValueError:
        report("is not a JSON DSSE envelope: sign the dataset again")
        return
    for key in envelope:
        if key not in ("payloadType", "payload", "signatures"):
            report(f"has the key {_short(key)!r}, which a DSSE envelope does not have: sign the dataset again")
    for signature in envelope.get("signatures") or []:
        for key in signature if isinstance(signature, dict) else []:
            if key not in ("keyid", "sig"):
                report(f"a signature has the key {_short(key)!r}, which DSSE does not have: sign the dataset again")
    payload = envelope.get("payload")
    if not isinstance(payload, str):
        return
    padded = payload + "=" * (-len(payload) % 4)
    try:  # DSSE allows standard and URL-safe base64
        decoded = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        try:
            decoded = base64.urlsafe_b64decode(padded)
        except (binascii.Error, ValueError):
            report("its payload is not base64: sign the dataset again")
            return
    if decoded != manifest:  # manifest.json is checked on its own; a payload that differs is checked here
        _check_manifest_json(decoded, report, "the signed payload's ")
        report.raw(report.needles.in_bytes(decoded), "the signed payload's bytes")


# -- the folder ----------------------------------------------------------------------------------


def _entries(root: Path, rel: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry below ``root``, sorted, hidden ones included, links not followed."""
    with os.scandir(root / rel if rel else root) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        yield path, entry
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(root, path)


def audit_dataset(dataset_dir: str | os.PathLike[str], *, forbidden: Iterable[str] = ()) -> list[Finding]:
    """List everything in a dataset folder that should not be shared.

    Parameters
    ----------
    dataset_dir : path-like
        Local dataset folder (``slides/`` and, once signed, the manifest).
    forbidden : iterable of str, optional
        Source slide names (file names or paths) that must appear nowhere.
        Each is searched by its stem (``/data/TCGA-01.svs`` -> ``TCGA-01``),
        ignoring case, in every string, every file's path and the raw bytes
        of every file.

    Returns
    -------
    list of Finding
        Empty when the folder is clean; otherwise every problem found, in
        file order. The audit never stops at the first one.

    Raises
    ------
    DatasetError
        When ``dataset_dir`` is not a folder.

    Notes
    -----
    Checks:

    - Files: only ``manifest.json``, ``manifest.dsse.json`` and
      ``slides/<name>.parquet``; anything else (images, notes, hidden or
      temporary files, links, empty folders) is a finding.
    - Parquet: exactly the format-v1 columns and types (no text column but
      ``slide_id``, no column metadata); footer keys only ``sic_share`` and
      pyarrow's ``ARROW:schema`` (whose decoded copy is checked too); the
      ``sic_share`` JSON only with the keys of :class:`SlideMetadata`,
      :class:`ModelInfo` and :class:`Patching` (``model.preprocessing`` is
      free-form, its text is checked); ``slide_id`` values 16 lowercase hex
      characters equal to the file stem.
    - Text (footer JSON, writer name, ``slide_id`` values, every key and value
      of manifest.json and of the envelope's payload when it differs from
      manifest.json): dates (``2024-03-01``, ``01/03/2024``, ``12/29/09``,
      ``20240301`` with a plausible month and day, ``Mar 1 2024``,
      ``1 Mar 2024``), paths and URLs, slide or image file names (``.svs``,
      ``.tif``, ``.ndpi``, ``.png``, ``.h5``, ``.dcm``, ...), forbidden names
      (a name under 8 characters only as a word of its own: ``s`` is not found
      in ``slides``). Exempt: ``predicate.created`` and ``predicate.expires`` (written by
      ``sign``), the fixed in-toto type URIs, the ``slides/`` prefix of listed
      file names, and strings of 16 or 64 hex digits (pseudonyms, digests and
      key ids are random: they are checked for forbidden names only). The
      fixed privacy texts that ``sign`` writes pass these rules as they are.
    - Raw bytes of every file, Parquet included: forbidden names.

    Path rule: a token (whitespace-separated) is a path when it is a URL
    (``scheme://``), holds a backslash or a drive letter (``C:``, ``C:/``),
    or holds a ``/`` without being a model id. A model id is ``org/name`` or
    ``hf-hub:org/name``: exactly one slash, letters, digits, ``_ . + -`` on
    both sides, and no file suffix on the name (``timm/resnet50.a1_in1k`` and
    ``hf-hub:MahmoodLab/UNI`` pass; ``models/uni.pth``, ``./x``, ``a/b/c``
    and ``/home/alice/x`` do not). The same shape lets unit ratios such as
    ``µm/px`` through.

    Cost: Parquet files are read for their footer and ``slide_id`` column only
    (dictionary-encoded, a few kilobytes), never for embeddings. When
    ``forbidden`` is given, every file is also streamed in 8 MiB chunks that
    overlap by the longest name: one RE2 regex over all names
    (``pyarrow.compute.match_substring_regex``) tells whether a chunk holds
    any, and only such chunks are searched again with a trie-shaped Python
    regex to tell which. Files are scanned in threads (reads and RE2 release
    the GIL). Measured on 2 cores: 578 MiB of float16 slides in 1.9 s with 10
    names and 2.5 s with 1000, against 0.05 s without ``forbidden``.

    Chance: compressed bytes are nearly random, so a short name turns up by
    chance (4 letters about 4 times per GiB). A name is searched in raw bytes
    only when all names together expect at most 0.01 chance matches per GiB
    (one name of 5 digits or 6 letters passes; a thousand names need about 7
    characters each); every name is still searched in all decoded text. A match inside a run of 16+ hex
    digits (pseudonyms, digests, key ids) is chance too, and is ignored
    unless the name itself is that long. Raw-byte matching ignores ASCII
    case only.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give the dataset folder to audit")
    needles = _Needles(forbidden)
    findings: list[Finding] = []
    entries = list(_entries(root))
    with ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, 8))) as pool:
        # raw-byte scans run in threads (file reads and RE2 release the GIL) while the checks below run
        scans = {
            rel: pool.submit(needles.in_file, Path(entry.path))
            for rel, entry in entries
            if needles and not entry.is_symlink() and entry.is_file()
        }
        for rel, entry in entries:
            _audit_entry(root, rel, entry, _Report(findings, rel, needles), scans.get(rel))
    return findings


def _audit_entry(root: Path, rel: str, entry: os.DirEntry[str], report: _Report, scan: Future[set[str]] | None) -> None:
    """All checks of one folder entry; ``scan`` is its running raw-byte search, if any."""
    for name in report.needles.in_text(rel):
        report.named.add(name)
        report(f"its path holds the source slide name {name!r}: rename or delete it")
    if entry.is_symlink():
        report("is a link, which a dataset never holds: delete it")
        return
    if entry.is_dir():
        with os.scandir(entry.path) as inside:
            empty = next(inside, None) is None
        if empty and rel != SLIDES_DIR:
            report("is an empty folder, which a dataset never holds: delete it")
        return
    if not entry.is_file():
        report("is not a regular file: delete it")
        return
    path = Path(entry.path)
    parts = rel.split("/")
    if rel == MANIFEST:
        _check_manifest_json(path.read_bytes(), report)
    elif rel == ENVELOPE:
        manifest = root / MANIFEST
        signed = manifest.read_bytes() if manifest.is_file() and not manifest.is_symlink() else None
        _check_envelope(path.read_bytes(), signed, report)
    elif len(parts) == 2 and parts[0] == SLIDES_DIR and parts[1].endswith(".parquet") and not parts[1].startswith("."):
        _audit_parquet(path, parts[1][: -len(".parquet")], report)
    else:
        report(f"does not belong in a dataset, which holds only {MANIFEST}, {ENVELOPE} and "
               f"{SLIDES_DIR}/<slide_id>.parquet: delete it")
    if scan is not None:
        report.raw(scan.result())
