"""What a new user sees in the first hour of the command line (issue 21): one key id length
everywhere, messages that name what was typed, ``--json`` where a table is printed, help
examples that copy-paste, errors before heavy imports."""

from __future__ import annotations

import json
import re

from conftest import assert_one_line_error, make_publisher


# --- key ids: 16 hex characters everywhere, any unique prefix of 4+ in 'trust rm' ---------------


def test_keys_generate_prints_the_key_id_keys_ls_shows(cli, tmp_path, home):
    result = cli("keys", "generate", "--publisher", "lab-k")
    assert result.code == 0, result.err
    fingerprint = result.out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert f"key id:      {fingerprint[:16]}" in result.err
    listed = cli("keys", "ls")
    assert listed.code == 0 and fingerprint[:16] in listed.out and fingerprint[:17] not in listed.out


def test_trust_ls_and_errors_show_16_characters_of_a_key_id(cli, tmp_path):
    lab = make_publisher("lab-t", tmp_path / "keys-t", trust=False)
    added = cli("trust", "add", lab.public, "--publisher", "lab-t")
    assert added.out.strip() == f"trusted {lab.keyid[:16]} for publisher lab-t"
    table = cli("trust", "ls").out
    assert lab.keyid[:16] in table and lab.keyid[:17] not in table
    result = cli("trust", "add", lab.public, "--publisher", "lab-other")
    assert_one_line_error(result, f"key {lab.keyid[:16]} is already trusted", f"'trust rm {lab.keyid[:16]}' first")
    assert lab.keyid[:17] not in result.err


def test_trust_rm_takes_a_unique_prefix_and_says_when_one_is_too_short_or_ambiguous(cli, tmp_path):
    labs = [make_publisher(f"lab-{i}", tmp_path / f"keys-{i}") for i in range(2)]
    short = cli("trust", "rm", labs[0].keyid[:3])
    assert_one_line_error(short, "at least 4 characters")
    result = cli("trust", "rm", labs[0].keyid[:5])
    assert result.code == 0, result.err
    assert result.out.strip() == f"removed {labs[0].keyid[:16]} (lab-0)"
    assert labs[0].keyid not in {k["keyid"] for k in json.loads(cli("trust", "ls", "--json").out)}


def test_trust_rm_refuses_a_prefix_two_keys_share(cli, tmp_path, monkeypatch):
    from sic_share.signing import _trust

    a = make_publisher("lab-a1", tmp_path / "ka")
    b = make_publisher("lab-b1", tmp_path / "kb")
    store = _trust.TrustStore()
    keys = store.keys()
    # Give both keys the same first 8 characters (the store checks only the id's form).
    forged = [k.__class__("abcd1234" + k.keyid[8:], k.publisher, k.public_pem, k.added) for k in keys]
    store._save(forged)
    result = cli("trust", "rm", "abcd12")
    assert_one_line_error(result, "'abcd12' starts 2 trusted key ids", "give more characters")
    assert len(store.keys()) == 2 and a and b
