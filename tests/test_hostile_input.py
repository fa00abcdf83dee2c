"""Hostile content stays inert: what a hub, a dataset folder or a local state file holds is never obeyed.

A hub is untrusted storage: anyone who can write one prefix of it chooses the
model ids and file names every reader's ``ls`` and ``info`` print. Printed, they
must show as text (no Rich markup, no control characters reaching the terminal,
piped or not), and they must not break the command for anyone. Files a user
points sic-share at (``trust add FILE``) and its own state files (trust.json,
verified.json, hubs.json) are read with a size limit, and a file that is not what
sic-share wrote is one line naming it, never a traceback.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import assert_one_line_error, blobs, make_dataset, make_publisher, metadata
from sic_share.dataset import write_slide
from sic_share.signing import ENVELOPE, MANIFEST, TrustStore, load_private_key, sign_dataset, sign_envelope

# Markup that crashed Rich ("[/]" closes no tag), a colour, a window-title OSC ended by BEL,
# a carriage return (overwrites the line), a C1 CSI (clear screen), and a right-to-left override.
HOSTILE = "evil[/]\x1b[31m\x1b]0;owned\x07\r\x9b2J\u202egnp"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def assert_inert(text: str) -> None:
    """No control character from HOSTILE reached the output, and no markup error was raised."""
    for char in RAW:
        assert char not in text, (char, text)
    assert "MarkupError" not in text and "a bug" not in text, text


def hostile_dataset(root: Path, *, model_id: str = HOSTILE) -> Path:
    """An unsigned one-slide dataset whose model id is ``model_id``."""
    coords, embeddings, labels = blobs(50, 16)
    write_slide(root / "slides" / "s0.parquet", slide_id="s0", metadata=metadata(16, model_id=model_id),
                coords=coords, embeddings=embeddings, labels=labels)
    return root


def plant_untrusted(hub: Path, signed: Path, key_dir: Path, *, model_id: str = HOSTILE) -> Path:
    """A co-tenant's envelope on the hub: well placed, signed by a key nobody trusts, hostile model id."""
    stranger = make_publisher("lab-s", key_dir, trust=False)
    statement = json.loads((signed / MANIFEST).read_bytes())
    statement["predicate"].update(publisher="lab-s", name="crc", version=1)
    statement["predicate"]["model"]["id"] = model_id
    envelope = hub / "lab-s" / "crc" / "1" / ENVELOPE
    envelope.parent.mkdir(parents=True)
    envelope.write_bytes(sign_envelope(json.dumps(statement).encode(), load_private_key(stranger.private)))
    return envelope


@pytest.fixture
def hub(tmp_path) -> Path:
    return tmp_path / "hub"


# --- hub-supplied strings in ls and info -----------------------------------------------------


def test_a_hostile_model_id_on_the_hub_shows_as_text_in_ls(cli, tmp_path, hub, signed):
    assert cli("publish", signed, "--hub", hub).code == 0
    plant_untrusted(hub, signed, tmp_path / "keys-s")

    result = cli("ls", "--hub", hub)
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert "evil[/]\\x1b[31m" in result.out  # the reader sees what the planter wrote, as text
    assert "\\u202egnp" in result.out
    assert "lab-a/crc@1" in result.out  # and the rest of the hub is still listed

    listed = cli("ls", "--hub", hub, "--json")  # JSON keeps the value exactly, escaped by JSON itself
    assert listed.code == 0, listed.err
    assert_inert(listed.out)
    assert HOSTILE in [e["model"] for e in json.loads(listed.out)]


@pytest.mark.parametrize("model_id", ["[/]", "[bold]x[/bold", ":warning: [link=file:///etc/passwd]y[/link]"])
def test_markup_in_a_model_id_never_breaks_ls(cli, tmp_path, hub, signed, model_id):
    plant_untrusted(hub, signed, tmp_path / "keys-s", model_id=model_id)
    result = cli("ls", "--hub", hub)
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert model_id in result.out
    assert "\u26a0" not in result.out  # ":warning:" stays text, not an emoji


def test_info_shows_a_hostile_model_id_as_text(cli, tmp_path, hub, publisher):
    root = hostile_dataset(tmp_path / "evil")
    sign_dataset(root, name="evil", key_path=publisher.private)

    result = cli("info", root)
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert "evil[/]\\x1b[31m" in result.out


def test_info_of_a_hub_dataset_shows_a_hostile_model_id_as_text(cli, tmp_path, hub, publisher):
    root = hostile_dataset(tmp_path / "evil")
    sign_dataset(root, name="evil", key_path=publisher.private)
    assert cli("publish", root, "--hub", hub).code == 0
    result = cli("info", "lab-a/evil@1", "--hub", hub)
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert "evil[/]\\x1b[31m" in result.out


def test_trust_ls_shows_stored_text_as_text(cli, tmp_path, publisher, home):
    store = TrustStore()
    data = json.loads(store.path.read_text())
    data["keys"][0]["added"] = "[/]\x1b[2J"
    store.path.write_text(json.dumps(data))

    result = cli("trust", "ls")
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert "[/]\\x1b[2J" in result.out and "lab-a" in result.out


def test_keys_ls_shows_a_key_file_name_as_text(cli, home):
    from sic_share._paths import keys_dir

    folder = keys_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ev[b]il\x1b[5m.key").write_bytes(b"not a key")
    result = cli("keys", "ls")
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert "ev[b]il\\x1b[5m" in result.out


def test_slides_ls_shows_a_slide_name_as_text(cli, home):
    from sic_share.privacy import SlideMap

    slide_map = SlideMap()
    slide_map.record([("4356d3d39c40a6b4", "case\x1b]8;;http://x\x07[/]", "/slides/case\r.svs")])
    result = cli("slides", "ls")
    assert result.code == 0, result.err
    assert_inert(result.out + result.err)
    assert "case\\x1b]8;;http://x\\x07[/]" in result.out


def test_an_error_quoting_a_hostile_name_is_one_line_without_controls(cli, tmp_path):
    result = cli("verify", tmp_path / "no\x1b[31m[/]such\nfolder")
    assert_one_line_error(result)
    assert_inert(result.err)
    assert "no\\x1b[31m[/]such\\nfolder" in result.err


# --- names with a newline or control characters ------------------------------------------------


def test_trust_add_refuses_a_publisher_name_with_a_final_newline(cli, publisher):
    before = TrustStore().path.read_bytes()
    result = cli("trust", "add", publisher.public, "--publisher", "lab-a\n")
    assert_one_line_error(result, "'lab-a\\n' is not a valid name")
    assert_inert(result.err)
    assert TrustStore().path.read_bytes() == before


def test_keys_generate_refuses_a_name_with_a_final_newline(cli, tmp_path):
    result = cli("keys", "generate", "--publisher", "lab-x\n", "--out", tmp_path / "keys")
    assert_one_line_error(result, "is not a valid name")
    assert not (tmp_path / "keys").exists() or not any((tmp_path / "keys").iterdir())


# --- files too large, or not files -------------------------------------------------------------


@pytest.mark.parametrize("what", ["dev-zero", "folder", "10-mb-file"])
def test_trust_add_reads_a_bounded_amount(cli, tmp_path, home, what):
    if what == "dev-zero":
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero here")
        fragment = "larger than"
    elif what == "folder":
        path = tmp_path / "keys.pub"
        path.mkdir()
        fragment = "is a folder"
    else:
        path = tmp_path / "big.pub"
        path.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 10_000_000)
        fragment = "larger than"
    result = cli("trust", "add", path, "--publisher", "lab-a")
    assert_one_line_error(result, fragment, str(path))
    assert not TrustStore().path.exists()


def test_a_signing_key_that_is_a_huge_file_or_a_folder_is_refused(cli, tmp_path):
    root = make_dataset(tmp_path / "ds")
    big = tmp_path / "big.key"
    big.write_bytes(b"x" * 1_000_000)
    big.chmod(0o600)
    assert_one_line_error(cli("sign", root, "--name", "crc", "--key", big), "larger than", str(big))
    folder = tmp_path / "folder.key"
    folder.mkdir()
    assert_one_line_error(cli("sign", root, "--name", "crc", "--key", folder), "is a folder", str(folder))
    assert not (root / ENVELOPE).exists()


# --- corrupt local state -----------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    "[]",
    '{"keys": 3}',
    '{"keys": [3]}',
    '{"keys": [{"keyid": "abc"}]}',
    '{"keys": [{"keyid": "%s", "publisher": "lab-a\\n", "public_pem": "x", "added": "now"}]}' % ("0" * 64),
    "[" * 100_000,
    "{not json",
])
def test_a_corrupt_trust_store_is_one_line_naming_it(cli, tmp_path, hub, signed, content):
    assert cli("publish", signed, "--hub", hub).code == 0
    store = TrustStore().path
    store.write_text(content)
    for args in (("trust", "ls"), ("ls", "--hub", hub), ("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "p")):
        assert_one_line_error(cli(*args), str(store), "is not a trust store sic-share wrote", "fix or delete it")
    assert not (tmp_path / "p").exists()


def test_a_huge_trust_store_is_refused_without_reading_it_whole(cli, home, tmp_path):
    store = TrustStore().path
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store, "wb") as handle:
        handle.truncate(17 << 20)  # sparse: 17 MiB of zeros
    assert_one_line_error(cli("trust", "ls"), str(store), "larger than 16 MiB", "fix or delete it")


@pytest.mark.parametrize("content", ["[]", '{"lab-a/crc": "two"}', '{"lab-a/crc": [1]}', '{"lab-a/crc": true}', "{"])
def test_a_corrupt_record_of_verified_versions_is_one_line_naming_it(cli, signed, home, content):
    from sic_share.signing import VersionRecord

    record = VersionRecord().path
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(content)
    assert_one_line_error(cli("verify", signed), str(record), "is not a record of verified versions sic-share wrote",
                          "fix or delete it")
    assert record.read_text() == content  # never silently replaced


@pytest.mark.parametrize("content", ["[]", '{"hubs": {}}', '{"hubs": [{"name": "x"}]}', '{"hubs": [{"name": 1, "url": "/x"}]}'])
def test_a_corrupt_hub_config_is_one_line_naming_it(cli, home, content):
    from sic_share._paths import config_dir

    config = config_dir() / "hubs.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(content)
    for args in (("hub", "ls"), ("ls", "--hub", "somewhere")):
        assert_one_line_error(cli(*args), str(config), "is not a hub config sic-share wrote", "fix or delete it")


# --- private key permissions -------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_private_key_other_users_can_read_refuses_to_sign(cli, tmp_path, publisher, mode):
    publisher.private.chmod(mode)
    root = make_dataset(tmp_path / "ds")
    result = cli("sign", root, "--name", "crc", "--key", publisher.private)
    assert_one_line_error(result, str(publisher.private), f"mode {mode:04o}", f"chmod 600 {publisher.private}")
    assert not (root / ENVELOPE).exists() and not (root / MANIFEST).exists()

    publisher.private.chmod(0o600)
    assert cli("sign", root, "--name", "crc", "--key", publisher.private).code == 0
    assert stat.S_IMODE(publisher.private.stat().st_mode) == 0o600


# --- the helper the query table uses -------------------------------------------------------------


def test_escaped_table_renders_untrusted_cells_as_text():
    from rich.console import Console

    from sic_share._terminal import escaped_table

    console = Console(file=open(os.devnull, "w"), record=True, width=120, emoji=False)  # noqa: SIM115
    console.print(escaped_table(["[/]", "x"], [["[/]", HOSTILE], [None, 3]]))
    text = console.export_text()
    assert_inert(text)
    assert "[/]" in text and "evil[/]\\x1b[31m" in text and "None" in text
