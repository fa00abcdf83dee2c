"""The hub on S3: publish, list, pull over HTTP against moto's server with authentication enforced.

One dev hub (``hub/dev_server.py``: bucket ``sic-hub``, publishers lab-a and lab-b,
a read-only ``reader``) runs for the whole test session (moto's backend is process-global). Tests reach it through the
same code users run: the hub URL ``s3://sic-hub/``, the endpoint from
``AWS_ENDPOINT_URL`` and credentials from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``. The publisher policies cover ``<publisher>/*`` of the
bucket, so the hub is the bucket root and each test publishes a dataset name of
its own (``crc<random>``) rather than a prefix of its own.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from conftest import BUCKET, assert_one_line_error, make_dataset, make_publisher, published_objects
from sic_share.signing import ENVELOPE, MANIFEST, sign_dataset

pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

@pytest.fixture
def hub(as_user) -> str:
    """The hub, as lab-a sees it until a test switches users."""
    return f"s3://{BUCKET}/"


@pytest.fixture
def name() -> str:
    """This test's dataset name, unique on the shared bucket."""
    return f"crc{secrets.token_hex(4)}"


@pytest.fixture
def signed(tmp_path, publisher, name) -> Path:
    """A signed, trusted dataset lab-a/<name>@1 with two slides."""
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name=name, key_path=publisher.private)
    return root


def raw_fs(dev_hub, user: str) -> "s3fs.S3FileSystem":
    """An s3fs filesystem of its own (not sic-share's), for arranging and inspecting objects."""
    endpoint, credentials = dev_hub
    key_id, secret = credentials[user]
    return s3fs.S3FileSystem(key=key_id, secret=secret, endpoint_url=endpoint, skip_instance_cache=True,
                             client_kwargs={"region_name": "us-east-1"})


def objects(fs, *prefixes: str) -> dict[str, bytes]:
    """Every object under ``sic-hub/<prefix>`` (e.g. ``lab-a/<name>``) with its bytes, keyed below the bucket."""
    found = {}
    for prefix in prefixes:
        for path in sorted(fs.find(f"{BUCKET}/{prefix}/")):
            found[path.removeprefix(f"{BUCKET}/")] = fs.cat_file(path)
    return found


def mine(entries: list[dict], *names: str) -> list[tuple]:
    """The ``ls --json`` entries of this test's datasets."""
    return [(e["publisher"], e["name"], e["version"], e["trusted"]) for e in entries if e["name"] in names]


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flipped(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0xFF
    return bytes(out)


def version_key(name: str, publisher: str = "lab-a", version: int = 1) -> str:
    """A version's key prefix, below the bucket."""
    return f"{publisher}/{name}/{version}"


def data_key(folder: Path, name: str) -> str:
    """Where the data of the version published from ``folder`` lies (hub layout 1.1), below the bucket."""
    import hashlib

    return f"{version_key(name)}/{hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()}"


# --- what the library relies on from S3 --------------------------------------------------------


def client(dev_hub, user: str, secret: str | None = None):
    """A boto3 S3 client of its own, for arranging objects the way a broken upload would."""
    endpoint, credentials = dev_hub
    key_id, real = credentials[user]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret or real)


def test_exclusive_create_sends_if_none_match_and_412_is_file_exists(dev_hub, name):
    fs = raw_fs(dev_hub, "lab-a")
    key = f"{BUCKET}/{version_key(name)}/{ENVELOPE}"
    sent = []
    fs.s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(
        request.headers.get("If-None-Match")))
    fs.pipe_file(key, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(key, b"second", mode="create")
    assert sent == [b"*", b"*"] or sent == ["*", "*"], sent
    assert fs.cat_file(key) == b"first"


def test_authentication_and_policies_are_enforced(dev_hub, name):
    """What the other tests rely on from the dev hub, checked with boto3 directly."""
    from botocore.exceptions import ClientError

    client(dev_hub, "lab-a").put_object(Bucket=BUCKET, Key=f"lab-a/{name}/ok", Body=b"1")
    for user, key, secret, code in [
        ("reader", f"lab-a/{name}/x", None, "AccessDenied"),
        ("lab-a", f"lab-b/{name}/x", None, "AccessDenied"),
        ("lab-a", f"lab-a/{name}/x", "wrong", "SignatureDoesNotMatch"),
    ]:
        with pytest.raises(ClientError) as info:
            client(dev_hub, user, secret).put_object(Bucket=BUCKET, Key=key, Body=b"1")
        assert info.value.response["Error"]["Code"] == code, (user, key)
    assert client(dev_hub, "reader").get_object(Bucket=BUCKET, Key=f"lab-a/{name}/ok")["Body"].read() == b"1"
    with pytest.raises(ClientError):  # lab-b reads only its own prefix
        client(dev_hub, "lab-b").get_object(Bucket=BUCKET, Key=f"lab-a/{name}/ok")


# --- the happy path ---------------------------------------------------------------------------


def test_publish_ls_pull_round_trip(cli, tmp_path, dev_hub, as_user, hub, name, signed):
    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    assert f"s3://{BUCKET}/lab-a/{name}/1" in result.out
    stored = objects(raw_fs(dev_hub, "reader"), f"lab-a/{name}")
    assert stored == published_objects(signed, f"lab-a/{name}/1")

    as_user("reader")
    entries = json.loads(cli("ls", "--hub", hub, "--json").out)
    assert mine(entries, name) == [("lab-a", name, 1, True)]
    entry = next(e for e in entries if e["name"] == name)
    assert (entry["model"], entry["slides"], entry["patches"]) == ("test-model", 2, 400)
    assert f"lab-a/{name}@1" in cli("ls", "--hub", hub).out

    dest = tmp_path / "pulled" / "crc"
    result = cli("pull", f"lab-a/{name}", "--hub", hub, "--to", dest)
    assert result.code == 0, result.err
    assert f"lab-a/{name}@1" in result.out
    assert snapshot(dest) == snapshot(signed)
    assert cli("verify", dest).code == 0
    assert [p.name for p in dest.parent.iterdir()] == ["crc"]


def test_sic_share_hub_names_an_s3_hub(cli, tmp_path, dev_hub, as_user, name, monkeypatch):
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    root = make_dataset(tmp_path / "ds")
    sign_dataset(root, name=name, key_path=lab_b.private)
    monkeypatch.setenv("SIC_SHARE_HUB", f"s3://{BUCKET}")
    as_user("lab-b")
    result = cli("publish", root)
    assert result.code == 0, result.err
    as_user("reader")
    assert f"lab-b/{name}@1" in cli("ls").out
    dest = tmp_path / "pulled"
    assert cli("pull", f"lab-b/{name}", "--to", dest).code == 0
    assert snapshot(dest) == snapshot(root)


# --- immutability, commit-last, two publishers ------------------------------------------------


def test_publishing_a_published_version_again_changes_nothing(cli, dev_hub, hub, name, signed, publisher):
    assert cli("publish", signed, "--hub", hub).code == 0
    fs = raw_fs(dev_hub, "reader")
    before = objects(fs, f"lab-a/{name}")
    assert_one_line_error(cli("publish", signed, "--hub", hub), "already published", "--version 2")
    # A different dataset signed with the same version cannot replace it either.
    make_dataset(signed, slides=3, seed=11)
    sign_dataset(signed, name=name, key_path=publisher.private, version=1)
    assert_one_line_error(cli("publish", signed, "--hub", hub), "already published")
    assert objects(fs, f"lab-a/{name}") == before


def test_the_second_of_two_publishers_of_one_version_is_refused(dev_hub, hub, tmp_path, name, signed, publisher):
    """Both pass the existence check; the first commits; the second's exclusive create is refused.

    moto's conditional create is not locked, so this tests the logic (the
    second commit after the first), not a true race.
    """
    import hashlib

    from sic_share.errors import AlreadyPublishedError
    from sic_share.hub import publish, pull

    other = make_dataset(tmp_path / "other", slides=1, seed=5)
    sign_dataset(other, name=name, key_path=publisher.private, version=1)
    from sic_share.hub import _hub

    real_check = _hub._refuse_versioned_bucket
    raced = []

    def checked_then_the_other_publisher_commits(fs, base):
        real_check(fs, base)
        if not raced:  # after 'other' found no envelope, before it uploads anything
            raced.append(base)
            publish(signed, hub)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_hub, "_refuse_versioned_bucket", checked_then_the_other_publisher_commits)
        with pytest.raises(AlreadyPublishedError, match="already published"):
            publish(other, hub)
    assert raced
    stored = objects(raw_fs(dev_hub, "reader"), f"lab-a/{name}")
    # The winner's objects, all of them, byte for byte; the loser's data (which the publisher policy does not
    # let it delete) lies only under its own manifest's sha256, where no reader looks.
    winner = published_objects(signed, f"lab-a/{name}/1")
    assert {k: stored[k] for k in winner} == winner
    loser = f"lab-a/{name}/1/{hashlib.sha256((other / MANIFEST).read_bytes()).hexdigest()}/"
    assert all(k.startswith(loser) for k in set(stored) - set(winner))
    _, dest = pull(f"lab-a/{name}", hub, to=tmp_path / "pulled")
    assert (dest / MANIFEST).read_bytes() == (signed / MANIFEST).read_bytes()


def test_an_interrupted_publish_is_invisible_and_re_publish_completes_it(cli, tmp_path, dev_hub, as_user, hub, name,
                                                                         signed):
    s3 = client(dev_hub, "lab-a")
    for path, data in snapshot(signed).items():
        if path != ENVELOPE:  # the upload stopped before the commit
            s3.put_object(Bucket=BUCKET, Key=f"{version_key(name)}/{path}", Body=data)

    as_user("reader")
    assert mine(json.loads(cli("ls", "--hub", hub, "--json").out), name) == []
    dest = tmp_path / "pulled"
    assert_one_line_error(cli("pull", f"lab-a/{name}", "--hub", hub, "--to", dest), f"no dataset lab-a/{name}")
    assert_one_line_error(cli("pull", f"lab-a/{name}@1", "--hub", hub, "--to", dest), f"no dataset lab-a/{name}")
    assert not dest.exists()

    as_user("lab-a")
    result = cli("publish", signed, "--hub", hub)
    assert result.code == 0, result.err
    as_user("reader")
    assert mine(json.loads(cli("ls", "--hub", hub, "--json").out), name) == [("lab-a", name, 1, True)]
    assert cli("pull", f"lab-a/{name}", "--hub", hub, "--to", dest).code == 0
    assert snapshot(dest) == snapshot(signed)


# --- who may write where -------------------------------------------------------------------


def test_a_reader_cannot_publish(cli, dev_hub, as_user, hub, name, signed):
    as_user("reader")
    assert_one_line_error(cli("publish", signed, "--hub", hub), "AccessDenied", "lab-a/")
    assert objects(raw_fs(dev_hub, "reader"), f"lab-a/{name}") == {}


def test_a_publisher_cannot_publish_under_another_publisher(cli, tmp_path, dev_hub, as_user, hub, name):
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    root = make_dataset(tmp_path / "crc-b")
    sign_dataset(root, name=name, key_path=lab_b.private)
    as_user("lab-a")
    assert_one_line_error(cli("publish", root, "--hub", hub), "AccessDenied", "lab-b/")
    assert objects(raw_fs(dev_hub, "reader"), f"lab-b/{name}") == {}
    as_user("lab-b")
    assert cli("publish", root, "--hub", hub).code == 0


def test_ls_by_a_publisher_who_may_not_read_other_prefixes_is_one_clear_line(cli, tmp_path, as_user, hub, name):
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    root = make_dataset(tmp_path / "crc-b", slides=1)
    sign_dataset(root, name=name, key_path=lab_b.private)
    as_user("lab-b")
    assert cli("publish", root, "--hub", hub).code == 0
    as_user("lab-a")  # lab-a's policy reads only lab-a/*: the hub is for readers to list
    assert_one_line_error(cli("ls", "--hub", hub), "refused the listing", "AccessDenied")


def test_a_wrong_secret_is_one_clear_line(cli, tmp_path, dev_hub, as_user, hub, name, signed):
    as_user("lab-a", secret="not-the-secret")
    assert_one_line_error(cli("publish", signed, "--hub", hub), "SignatureDoesNotMatch")
    assert_one_line_error(cli("ls", "--hub", hub), "SignatureDoesNotMatch")
    dest = tmp_path / "pulled"
    assert_one_line_error(cli("pull", f"lab-a/{name}", "--hub", hub, "--to", dest), "SignatureDoesNotMatch")
    assert not dest.exists()
    assert objects(raw_fs(dev_hub, "reader"), f"lab-a/{name}") == {}


# --- pull refuses what it cannot verify -----------------------------------------------------


def test_a_slide_tampered_on_the_server_is_caught_and_nothing_lands(cli, tmp_path, dev_hub, as_user, hub, name,
                                                                     signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    fs = raw_fs(dev_hub, "lab-a")
    key = f"{BUCKET}/{data_key(signed, name)}/slides/s0.parquet"
    fs.pipe_file(key, flipped(fs.cat_file(key)))

    as_user("reader")
    parent = tmp_path / "downloads"
    parent.mkdir()
    assert_one_line_error(cli("pull", f"lab-a/{name}", "--hub", hub, "--to", parent / "crc"), "slides/s0.parquet")
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("ref, fragment", [
    ("lab-a/../etc", "not a dataset reference"),
    ("../x/y", "not a dataset reference"),
    ("lab-a/x/y", "not a dataset reference"),
    ("lab-a/..", "not a valid name"),
    ("LAB/x", "not a valid name"),
])
def test_references_with_path_tricks_are_refused(cli, tmp_path, as_user, hub, ref, fragment):
    as_user("reader")
    assert_one_line_error(cli("pull", ref, "--hub", hub, "--to", tmp_path / "out"), fragment)
    assert not (tmp_path / "out").exists()


def test_pull_of_one_slide_over_s3_fetches_only_that_slide_and_caches_it(cli, tmp_path, dev_hub, as_user, hub, name,
                                                                          signed):
    from sic_share.hub import BlobCache

    assert cli("publish", signed, "--hub", hub).code == 0
    as_user("reader")
    dest = tmp_path / "one"
    result = cli("pull", f"lab-a/{name}", "--hub", hub, "--to", dest, "--slides", "s0")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (dest / "slides").iterdir()) == ["s0.parquet"]
    assert cli("verify", dest, "--partial").code == 0
    assert [e.source for e in BlobCache().entries()] == [f"slides/s0.parquet of lab-a/{name}@1"]

    # The second pull of that slide downloads nothing: the server lost it and the pull still works.
    raw_fs(dev_hub, "lab-a").rm(f"{BUCKET}/{data_key(signed, name)}/slides/s0.parquet")
    result = cli("pull", f"lab-a/{name}", "--hub", hub, "--to", tmp_path / "again", "--slides", "s0")
    assert result.code == 0, result.err
