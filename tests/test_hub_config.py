"""Named hubs: `hub add/ls/rm`, and `--hub NAME` resolving to a URL without credentials."""

from __future__ import annotations

import json

from conftest import assert_one_line_error
from sic_share.hub import resolve_hub


def test_hub_add_ls_rm_and_resolve(cli, home):
    result = cli("hub", "add", "minio", "s3://sic-hub/prod", "--endpoint-url", "http://127.0.0.1:9000",
                 "--region", "eu-west-1")
    assert result.code == 0, result.err
    assert "minio" in cli("hub", "ls").out
    url, options = resolve_hub("minio")
    assert url == "s3://sic-hub/prod"
    assert options["endpoint_url"] == "http://127.0.0.1:9000"
    assert options["client_kwargs"] == {"region_name": "eu-west-1"}
    assert options["default_cache_type"] == "none"  # no 50 MiB read-ahead
    stored = (home / "config" / "hubs.json").read_text()
    assert "secret" not in stored.lower() and "key" not in json.loads(stored)["hubs"][0]
    assert cli("hub", "rm", "minio").code == 0
    assert_one_line_error(cli("hub", "rm", "minio"), "no hub named 'minio'")


def test_urls_and_folders_pass_through(tmp_path):
    assert resolve_hub(str(tmp_path)) == (str(tmp_path), {})
    url, options = resolve_hub("s3://bucket/x")
    assert url == "s3://bucket/x" and options["default_block_size"] == 1 << 20


def test_unknown_hub_name_and_credentials_in_urls_are_refused(cli, tmp_path):
    assert_one_line_error(cli("ls", "--hub", "nosuchhub"), "no hub named 'nosuchhub'")
    assert_one_line_error(cli("hub", "add", "bad", "s3://AKIA:secret@bucket/x"), "must not carry credentials")
