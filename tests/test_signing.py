"""Signing and verification: keys, DSSE envelopes, in-toto manifests, trust and freshness.

Everything here is real: Ed25519 keys on disk, real Parquet files, real envelopes,
and the ``sic-share`` entry point for what a user types.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization

from conftest import REPO, assert_one_line_error, make_dataset, make_publisher
from sic_share.dataset import arrow_schema, read_slide_metadata
from sic_share.signing import (
    ENVELOPE,
    IN_TOTO_PAYLOAD_TYPE,
    MANIFEST,
    PREDICATE_TYPE,
    TrustStore,
    generate_key,
    load_private_key,
    pae,
    sign_dataset,
    sign_envelope,
)
from sic_share.signing import _manifest

MANIFEST_SCHEMA = REPO / "schemas" / "manifest.schema.json"


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of a file in place (the middle one by default)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """Cut a file to half its length, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def no_signature_files(root: Path) -> bool:
    """Neither manifest file, nor a temporary left-over of one, is in the folder."""
    names = {p.name for p in root.iterdir()}
    return not any(n.startswith((MANIFEST, ENVELOPE, f".{MANIFEST}", f".{ENVELOPE}")) for n in names)


# --- DSSE -------------------------------------------------------------------------------------


def test_pae_matches_the_dsse_spec_vector():
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters():
    body = "µm".encode()
    assert pae("t/µ", body) == b"DSSEv1 4 t/\xc2\xb5 3 \xc2\xb5m"


# --- keys -------------------------------------------------------------------------------------


def test_keys_generate_writes_a_private_key_only_its_owner_can_read(cli, tmp_path):
    out = tmp_path / "keys"
    result = cli("keys", "generate", "--publisher", "lab-x", "--out", out)
    assert result.code == 0, result.err

    private, public = out / "lab-x.key", out / "lab-x.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public_key = serialization.load_pem_public_key(public.read_bytes())
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert result.out.strip() == hashlib.sha256(raw).hexdigest()
    # The private key is the other half of the public key it was printed with.
    private_raw = load_private_key(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert private_raw == raw


def test_keys_generate_never_overwrites_a_key(cli, tmp_path):
    out = tmp_path / "keys"
    assert cli("keys", "generate", "--publisher", "lab-x", "--out", out).code == 0
    before = (out / "lab-x.key").read_bytes(), (out / "lab-x.pub").read_bytes()

    result = cli("keys", "generate", "--publisher", "lab-x", "--out", out)
    assert_one_line_error(result, "lab-x.key", "already exists")
    assert ((out / "lab-x.key").read_bytes(), (out / "lab-x.pub").read_bytes()) == before


def test_keys_generate_refuses_an_unsafe_publisher_name(cli, tmp_path):
    result = cli("keys", "generate", "--publisher", "../evil", "--out", tmp_path / "keys")
    assert_one_line_error(result, "not a valid name")
    assert not (tmp_path / "keys").exists() or not any((tmp_path / "keys").iterdir())


def test_default_key_is_the_one_keys_generate_made(cli, tmp_path, home):
    assert cli("keys", "generate", "--publisher", "lab-d").code == 0
    root = make_dataset(tmp_path / "ds")
    result = cli("sign", root, "--name", "crc")
    assert result.code == 0, result.err
    statement = json.loads((root / MANIFEST).read_bytes())
    assert statement["predicate"]["publisher"] == "lab-d"


def test_passphrase_protected_key_signs_with_the_passphrase_only(cli, tmp_path, monkeypatch):
    out = tmp_path / "keys"
    monkeypatch.setenv("SIC_SHARE_KEY_PASSPHRASE", "correct horse battery")
    assert cli("keys", "generate", "--publisher", "lab-p", "--out", out, "--passphrase").code == 0
    key = out / "lab-p.key"
    assert b"ENCRYPTED" in key.read_bytes()

    signed = make_dataset(tmp_path / "ok")
    result = cli("sign", signed, "--name", "crc", "--key", key)
    assert result.code == 0, result.err
    assert (signed / ENVELOPE).exists()

    monkeypatch.delenv("SIC_SHARE_KEY_PASSPHRASE")
    unsigned = make_dataset(tmp_path / "no-passphrase")
    result = cli("sign", unsigned, "--name", "crc", "--key", key)
    assert_one_line_error(result, "encrypted", "SIC_SHARE_KEY_PASSPHRASE")
    assert no_signature_files(unsigned)

    monkeypatch.setenv("SIC_SHARE_KEY_PASSPHRASE", "wrong")
    result = cli("sign", unsigned, "--name", "crc", "--key", key)
    assert_one_line_error(result, "wrong passphrase")
    assert no_signature_files(unsigned)


def test_encrypted_key_error_only_suggests_options_that_exist(cli, tmp_path, monkeypatch):
    """Following the error's advice must work: an option it names must exist on 'sign'."""
    monkeypatch.setenv("SIC_SHARE_KEY_PASSPHRASE", "secret")
    assert cli("keys", "generate", "--publisher", "lab-p", "--out", tmp_path / "keys", "--passphrase").code == 0
    monkeypatch.delenv("SIC_SHARE_KEY_PASSPHRASE")
    root = make_dataset(tmp_path / "ds")

    result = cli("sign", root, "--name", "crc", "--key", tmp_path / "keys" / "lab-p.key")
    assert_one_line_error(result, "encrypted")
    if "--passphrase" in result.err:
        help_text = cli("sign", "--help").out
        assert "--passphrase" in help_text, "the error suggests 'sign --passphrase', which does not exist"


# --- sign -------------------------------------------------------------------------------------


def test_manifest_is_an_in_toto_statement_listing_every_slide(cli, tmp_path, publisher):
    root = make_dataset(tmp_path / "crc", slides=3, n=150)
    result = cli("sign", root, "--name", "crc", "--key", publisher.private)
    assert result.code == 0, result.err
    assert "lab-a/crc@1" in result.out

    statement = json.loads((root / MANIFEST).read_bytes())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE

    slides = sorted((root / "slides").glob("*.parquet"))
    expected = {f"slides/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in slides}
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == expected

    predicate = statement["predicate"]
    assert predicate["publisher"] == "lab-a"
    assert predicate["name"] == "crc"
    assert predicate["version"] == 1
    created = datetime.fromisoformat(predicate["created"])
    assert abs(created - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert "expires" not in predicate
    assert predicate["model"]["id"] == "test-model" and predicate["model"]["dim"] == 16
    assert predicate["patching"]["size_px"] == 256 and predicate["patching"]["stride_px"] == 128
    assert predicate["classes"] == ["normal", "tumour"]
    assert predicate["counts"] == {"slides": 3, "patches": 450}
    assert predicate["privacy"]["pixels"] is False
    assert predicate["signer"] == publisher.keyid
    files = {f["name"]: f for f in predicate["files"]}
    assert set(files) == set(expected)
    for p in slides:
        entry = files[f"slides/{p.name}"]
        assert entry["size"] == p.stat().st_size
        assert entry["sha256"] == expected[f"slides/{p.name}"]


def test_manifest_validates_against_the_published_json_schema(signed):
    jsonschema = pytest.importorskip("jsonschema")
    if not MANIFEST_SCHEMA.exists():
        pytest.skip(f"{MANIFEST_SCHEMA} is not written yet")
    schema = json.loads(MANIFEST_SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)

    statement = json.loads((signed / MANIFEST).read_bytes())
    validator.validate(statement)

    # A schema that accepts a statement without its predicate describes nothing.
    broken = {k: v for k, v in statement.items() if k != "predicate"}
    assert not validator.is_valid(broken)


def test_version_starts_at_one_and_increments_on_re_sign(cli, tmp_path, publisher):
    root = make_dataset(tmp_path / "crc")
    for expected in (1, 2, 3):
        result = cli("sign", root, "--name", "crc", "--key", publisher.private)
        assert result.code == 0, result.err
        assert f"lab-a/crc@{expected}" in result.out
        assert json.loads((root / MANIFEST).read_bytes())["predicate"]["version"] == expected
    assert cli("verify", root).code == 0


def test_envelope_payload_is_exactly_the_manifest_bytes(signed, publisher):
    envelope = json.loads((signed / ENVELOPE).read_bytes())
    assert envelope["payloadType"] == IN_TOTO_PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"]) == (signed / MANIFEST).read_bytes()
    assert len(envelope["signatures"]) == 1
    # The signature is over PAE(type, body), checked here with the raw public key.
    public = serialization.load_pem_public_key(publisher.public.read_bytes())
    body = (signed / MANIFEST).read_bytes()
    public.verify(base64.b64decode(envelope["signatures"][0]["sig"]), pae(IN_TOTO_PAYLOAD_TYPE, body))


# --- verify: good -----------------------------------------------------------------------------


def test_verify_accepts_a_signed_trusted_dataset(cli, signed):
    result = cli("verify", signed)
    assert result.code == 0, result.err
    assert "verified lab-a/crc@1" in result.out
    assert result.err == ""


def test_verify_accepts_url_safe_base64_without_padding(cli, signed):
    envelope = json.loads((signed / ENVELOPE).read_bytes())

    def url_safe(text: str) -> str:
        return base64.urlsafe_b64encode(base64.b64decode(text)).decode().rstrip("=")

    envelope["payload"] = url_safe(envelope["payload"])
    for sig in envelope["signatures"]:
        sig["sig"] = url_safe(sig["sig"])
    rewritten = json.dumps(envelope).encode()
    assert rewritten != json.dumps(json.loads((signed / ENVELOPE).read_bytes())).encode()
    (signed / ENVELOPE).write_bytes(rewritten)

    result = cli("verify", signed)
    assert result.code == 0, result.err


# --- verify: every bad input is one line and exit 1 --------------------------------------------


def test_verify_refuses_a_flipped_byte(cli, signed):
    flip_byte(signed / "slides" / "s0.parquet")
    assert_one_line_error(cli("verify", signed), "slides/s0.parquet", "sha256")


def test_verify_refuses_a_missing_file(cli, signed):
    (signed / "slides" / "s1.parquet").unlink()
    assert_one_line_error(cli("verify", signed), "slides/s1.parquet", "missing")


def test_verify_refuses_an_unlisted_slide_file(cli, signed):
    shutil.copy(signed / "slides" / "s0.parquet", signed / "slides" / "s9.parquet")
    assert_one_line_error(cli("verify", signed), "slides/s9.parquet", "not listed")


def test_verify_refuses_a_slide_swapped_in_from_another_dataset(cli, tmp_path, signed, publisher):
    other = make_dataset(tmp_path / "other", seed=7)  # same slide names s0, s1
    sign_dataset(other, name="other", key_path=publisher.private)
    assert cli("verify", other).code == 0
    shutil.copy(other / "slides" / "s1.parquet", signed / "slides" / "s1.parquet")
    assert_one_line_error(cli("verify", signed), "slides/s1.parquet", "lab-a/crc@1")


def test_verify_refuses_an_edited_manifest(cli, signed):
    text = (signed / MANIFEST).read_text()
    statement = json.loads(text)
    statement["predicate"]["counts"]["patches"] += 1
    (signed / MANIFEST).write_text(json.dumps(statement, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    assert_one_line_error(cli("verify", signed), "manifest.json", "not the signed manifest")


def test_verify_refuses_an_envelope_re_signed_by_an_untrusted_key(cli, tmp_path, signed):
    stranger = make_publisher("lab-a", tmp_path / "stranger-keys", trust=False)
    result = cli("sign", signed, "--name", "crc", "--key", stranger.private, "--publisher", "lab-a")
    assert result.code == 0, result.err
    assert_one_line_error(cli("verify", signed), "not signed by any key you trust", "trust add")


def test_verify_refuses_the_old_manifest_re_wrapped_by_an_untrusted_key(cli, tmp_path, signed):
    stranger = make_publisher("lab-a", tmp_path / "stranger-keys", trust=False)
    body = (signed / MANIFEST).read_bytes()
    (signed / ENVELOPE).write_bytes(sign_envelope(body, load_private_key(stranger.private)))
    assert_one_line_error(cli("verify", signed), "not signed by any key you trust")


def test_verify_refuses_a_key_trusted_for_another_publisher(cli, tmp_path):
    private, public, _ = generate_key("lab-b", out_dir=tmp_path / "keys-b")
    TrustStore().add(public, "lab-b")
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=private, publisher="lab-a")
    assert_one_line_error(cli("verify", root), "'lab-a'", "'lab-b'")


def test_verify_refuses_a_rollback_unless_allowed(cli, tmp_path, publisher):
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=publisher.private)
    old = tmp_path / "crc-v1"
    shutil.copytree(root, old)
    sign_dataset(root, name="crc", key_path=publisher.private)  # version 2

    assert cli("verify", old).code == 0  # nothing newer seen yet
    assert cli("verify", root).code == 0  # now version 2 is remembered
    assert_one_line_error(cli("verify", old), "lab-a/crc@1", "rollback", "--allow-rollback")
    result = cli("verify", old, "--allow-rollback")
    assert result.code == 0, result.err
    assert cli("verify", root).code == 0  # allowing the old one does not forget the new one
    assert_one_line_error(cli("verify", old), "rollback")


def test_verify_refuses_an_expired_manifest(cli, tmp_path, publisher, monkeypatch):
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name="crc", key_path=publisher.private, expires_days=1)
    predicate = json.loads((root / MANIFEST).read_bytes())["predicate"]
    assert datetime.fromisoformat(predicate["expires"]) > datetime.now(timezone.utc)
    assert cli("verify", root).code == 0

    later = datetime.now(timezone.utc) + timedelta(days=2)
    monkeypatch.setattr(_manifest, "_now", lambda: later)
    assert_one_line_error(cli("verify", root), "lab-a/crc@1", "expired")


def test_verify_refuses_a_truncated_parquet_file(cli, signed):
    truncate(signed / "slides" / "s0.parquet")
    assert_one_line_error(cli("verify", signed), "slides/s0.parquet", "truncated")


def test_verify_refuses_an_unsigned_folder(cli, tmp_path):
    root = make_dataset(tmp_path / "crc")
    assert_one_line_error(cli("verify", root), "not signed", "sic-share sign")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "x/../../y"])
def test_sign_refuses_a_dataset_name_that_is_a_path(cli, tmp_path, publisher, name):
    root = make_dataset(tmp_path / "crc")
    assert_one_line_error(cli("sign", root, "--name", name, "--key", publisher.private), "not a valid name")
    assert no_signature_files(root)


# --- sign refuses bad content ------------------------------------------------------------------


def _nan_slide(path: Path, like: Path) -> None:
    """A format-v1 file with one NaN embedding, written with pyarrow (SlideWriter would refuse it)."""
    meta, _ = read_slide_metadata(like)
    n, dim = 10, meta.model.dim
    emb = np.ones((n, dim), np.float16)
    emb[3, 5] = np.nan
    schema = arrow_schema(dim, meta.embedding_dtype, meta)
    table = pa.Table.from_arrays(
        [
            pa.array([path.stem] * n, pa.string()),
            pa.array(np.arange(n, dtype=np.int32) * 128 + 128),
            pa.array(np.full(n, 128, np.int32)),
            pa.array(np.ones(n, np.float32)),
            pa.nulls(n, pa.int8()),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
        ],
        schema=schema,
    )
    pq.write_table(table, path)


def _extra_column_slide(path: Path, like: Path) -> None:
    table = pq.read_table(like)
    table = table.append_column("scanner", pa.array(["aperio"] * table.num_rows))
    pq.write_table(table, path)


@pytest.mark.parametrize(
    "spoil, fragment",
    [
        (lambda root: _extra_column_slide(root / "slides" / "s2.parquet", root / "slides" / "s0.parquet"), "s2.parquet"),
        (lambda root: _nan_slide(root / "slides" / "s2.parquet", root / "slides" / "s0.parquet"), "non-finite"),
        (lambda root: truncate(root / "slides" / "s1.parquet"), "s1.parquet"),
    ],
    ids=["wrong-schema", "nan-embedding", "truncated"],
)
def test_sign_refuses_bad_content_and_leaves_no_manifest(cli, tmp_path, publisher, spoil, fragment):
    root = make_dataset(tmp_path / "crc")
    spoil(root)
    result = cli("sign", root, "--name", "crc", "--key", publisher.private)
    assert_one_line_error(result, fragment)
    assert no_signature_files(root)
    assert sorted(p.name for p in root.iterdir()) == ["slides"]


def test_sign_refusal_keeps_the_previous_signature(cli, tmp_path, signed, publisher):
    before = (signed / MANIFEST).read_bytes(), (signed / ENVELOPE).read_bytes()
    _nan_slide(signed / "slides" / "s2.parquet", signed / "slides" / "s0.parquet")
    assert_one_line_error(cli("sign", signed, "--name", "crc", "--key", publisher.private), "non-finite")
    assert ((signed / MANIFEST).read_bytes(), (signed / ENVELOPE).read_bytes()) == before


def test_sign_refuses_a_folder_without_slides(cli, tmp_path, publisher):
    (tmp_path / "empty").mkdir()
    result = cli("sign", tmp_path / "empty", "--name", "crc", "--key", publisher.private)
    assert_one_line_error(result, "slides")
    assert no_signature_files(tmp_path / "empty")


# --- trust ------------------------------------------------------------------------------------


def test_trust_add_ls_rm_through_the_cli(cli, tmp_path, signed):
    other = make_publisher("lab-z", tmp_path / "keys-z", trust=False)

    result = cli("trust", "add", other.public, "--publisher", "lab-z")
    assert result.code == 0, result.err
    assert other.keyid[:16] in result.out and "lab-z" in result.out

    listed = json.loads(cli("trust", "ls", "--json").out)
    assert {(k["publisher"], k["keyid"]) for k in listed} >= {("lab-z", other.keyid)}
    assert "lab-a" in {k["publisher"] for k in listed}
    table = cli("trust", "ls")
    assert table.code == 0 and "lab-z" in table.out and other.keyid[:16] in table.out

    # Trusting the same key again for the same publisher is harmless.
    assert cli("trust", "add", other.public, "--publisher", "lab-z").code == 0
    assert len(json.loads(cli("trust", "ls", "--json").out)) == len(listed)

    result = cli("trust", "rm", other.keyid[:10])
    assert result.code == 0, result.err
    assert other.keyid[:16] in result.out
    remaining = json.loads(cli("trust", "ls", "--json").out)
    assert other.keyid not in {k["keyid"] for k in remaining}

    # Removing lab-a's key makes its dataset untrusted at once.
    assert cli("verify", signed).code == 0
    assert cli("trust", "rm", "lab-a").code == 0
    assert_one_line_error(cli("verify", signed), "not signed by any key you trust")


def test_trust_refuses_the_same_key_for_a_second_publisher(cli, tmp_path):
    key = make_publisher("lab-z", tmp_path / "keys-z", trust=False)
    assert cli("trust", "add", key.public, "--publisher", "lab-z").code == 0
    result = cli("trust", "add", key.public, "--publisher", "lab-y")
    assert_one_line_error(result, "already trusted", "'lab-z'")
    listed = json.loads(cli("trust", "ls", "--json").out)
    assert [k["publisher"] for k in listed if k["keyid"] == key.keyid] == ["lab-z"]


def test_trust_errors_are_one_line(cli, tmp_path):
    assert_one_line_error(cli("trust", "add", tmp_path / "nope.pub", "--publisher", "lab-z"), "does not exist")
    key = make_publisher("lab-z", tmp_path / "keys-z", trust=False)
    assert_one_line_error(cli("trust", "add", key.private, "--publisher", "lab-z"), "not a PEM public key")
    assert_one_line_error(cli("trust", "rm", "deadbeef"), "no trusted key")
    assert_one_line_error(cli("trust", "add", key.public, "--publisher", "Lab Z"), "not a valid name")


def test_sign_never_makes_a_dataset_its_own_verify_refuses(cli, tmp_path, publisher):
    """A stray file in slides/ is refused by sign, or accepted by verify: never signed then refused."""
    root = make_dataset(tmp_path / "crc")
    (root / "slides" / "notes.txt").write_text("scanned on the Aperio in room 3\n")
    signed = cli("sign", root, "--name", "crc", "--key", publisher.private)
    if signed.code != 0:
        assert_one_line_error(signed, "notes.txt")
        assert no_signature_files(root)
    else:
        result = cli("verify", root)
        assert result.code == 0, f"sign accepted the folder but verify refuses it: {result.err.strip()}"


def test_slides_from_different_scanners_share_one_dataset(tmp_path, publisher):
    """Level-0 µm/px may differ per slide; the manifest then leaves those fields null."""
    from conftest import blobs
    from sic_share.dataset import ModelInfo, Patching, SlideMetadata, write_slide
    from sic_share.signing import verify_dataset

    model = ModelInfo(id="m", dim=8, source="test")
    for slide_id, mpp, size in (("a", 0.25, 512), ("b", 0.5, 256)):
        coords, emb, _ = blobs(20, 8)
        write_slide(tmp_path / "ds" / "slides" / f"{slide_id}.parquet", slide_id=slide_id, coords=coords,
                    embeddings=emb, metadata=SlideMetadata(model, Patching(256, size, mpp, 0.5, 128)))
    manifest = sign_dataset(tmp_path / "ds", name="mixed", key_path=publisher.private)
    assert manifest.predicate["patching"] == {"size_px": 256, "stride_px": 128, "target_mpp": 0.5,
                                              "level0_mpp": None, "level0_size_px": None}
    assert verify_dataset(tmp_path / "ds").version == 1
