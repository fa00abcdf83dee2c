"""Failures from below sic-share (credentials, network, disk, permissions, packages): one line each."""

from __future__ import annotations

import errno
import socket
import sys

import pytest
from conftest import assert_one_line_error

from sic_share._failures import describe_failure


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No credentials anywhere in the AWS chain (env, files, instance metadata)."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches instances with the credentials they found
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_missing_credentials(cli, no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    result = cli("ls", "--hub", "s3://no-such-bucket/x")
    assert_one_line_error(result, "no S3 credentials were found", "AWS_ACCESS_KEY_ID")


def test_unreachable_endpoint_names_it(cli, no_aws, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "reader")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    result = cli("ls", "--hub", "s3://bucket/x")
    assert_one_line_error(result, f"cannot reach http://127.0.0.1:{port}:", "AWS_ENDPOINT_URL")


def test_a_host_that_does_not_resolve(cli, no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "reader")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://no-such-host.invalid:9000")
    result = cli("ls", "--hub", "s3://bucket/x")
    assert_one_line_error(result, "no-such-host.invalid")


def test_debug_after_the_command_shows_the_traceback(cli, no_aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(Exception) as caught:
        cli("ls", "--hub", "s3://no-such-bucket/x", "--debug")
    assert type(caught.value).__name__ == "NoCredentialsError"
    with pytest.raises(Exception):
        cli("--debug", "ls", "--hub", "s3://no-such-bucket/x")


def test_missing_optional_package_names_the_extra_with_brackets(cli, signed, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    result = cli("umap", str(signed), "--slide", "s0", "--method", "umap", "--out", str(tmp_path / "m.png"))
    assert_one_line_error(result, "'sic-share[umap]'")
    assert not (tmp_path / "m.png").exists()
    monkeypatch.setitem(sys.modules, "anndata", None)
    result = cli("to-anndata", str(signed), "--slide", "s0", "--method", "pca", "--out", str(tmp_path / "s.h5ad"))
    assert_one_line_error(result, "'sic-share[anndata]'")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/out"),
         "permission denied on /data/out: choose a folder you can write to, or fix its permissions"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/out/x.parquet"),
         "no space left on the device writing /data/out/x.parquet: free some space or write elsewhere (--out)"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"),
         "/mnt/ro is on a read-only file system: write elsewhere (--out)"),
        (ModuleNotFoundError("No module named 'torch'", name="torch"),
         "this needs torch, which is not installed: pip install 'sic-share[export]'"),
        (ModuleNotFoundError("No module named 'lightly'", name="lightly.loss"),
         "this needs lightly, which is not installed: pip install 'sic-share[pretrain]'"),
    ],
)
def test_failures_from_the_os_and_imports(exc, expected):
    assert describe_failure(exc) == expected


def test_a_failure_in_the_cause_chain_is_found():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert describe_failure(outer).startswith("no space left on the device")


def test_a_bug_says_so_in_one_line():
    message = describe_failure(ZeroDivisionError("division by zero"))
    assert message == ("unexpected ZeroDivisionError: division by zero (a bug in sic-share: rerun with --debug and "
                       "report the traceback)")


@pytest.fixture(scope="module")
def module_state():
    """What a module fixture sees: it runs before the per-test home exists."""
    import os

    from sic_share._paths import cache_dir, config_dir, data_dir
    from sic_share.privacy import holder_secret

    holder_secret()  # creates the holder secret, as an export in a module fixture does
    return os.environ.get("SIC_SHARE_HOME"), [config_dir(), data_dir(), cache_dir()]


def test_module_fixtures_never_reach_the_real_home(module_state, session_home):
    from pathlib import Path

    home, folders = module_state
    assert home is not None and Path(home).is_relative_to(session_home)
    for folder in folders:
        assert folder.is_relative_to(session_home), folder
    assert (Path(home) / "config" / "keys").is_dir()  # the secret went there, not to ~/.config


def test_a_hub_folder_that_does_not_exist_is_named(cli, tmp_path):
    missing = tmp_path / "no-such-hub"
    for args in (("pull", "lab-a/crc", "--hub", str(missing), "--to", str(tmp_path / "out")),
                 ("ls", "--hub", str(missing))):
        result = cli(*args)
        assert_one_line_error(result, f"hub folder {missing} does not exist", "--hub")
    assert not (tmp_path / "out").exists()


def test_verify_of_a_hub_reference_says_pull(cli):
    result = cli("verify", "lab-a/crc@2")
    assert_one_line_error(result, "lab-a/crc@2 is a hub reference, not a folder", "sic-share pull lab-a/crc@2")


def test_verify_of_a_missing_folder(cli, tmp_path):
    result = cli("verify", str(tmp_path / "gone"))
    assert_one_line_error(result, f"dataset folder {tmp_path / 'gone'} does not exist")


def test_umap_default_works_in_the_consumer_install(cli, signed, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    result = cli("umap", str(signed), "--slide", "s0", "--out", str(tmp_path / "m.png"))
    assert result.code == 0, result.err
    assert "coloured by pca" in result.out
    assert "pip install 'sic-share[umap]'" in result.err  # said up front, brackets intact
    assert (tmp_path / "m.png").stat().st_size > 0
