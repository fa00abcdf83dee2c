"""CLI conventions: --version, one-line errors from the installed script, --debug, usage errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sic_share import __version__

SCRIPT = shutil.which("sic-share", path=str(Path(sys.executable).parent)) or "sic-share"


def run(*args, home):
    env = {**os.environ, "SIC_SHARE_HOME": str(home)}
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"sic-share {__version__}"


def test_installed_script_prints_one_line_and_no_traceback(tmp_path, home):
    result = run("verify", tmp_path / "nothing-here", home=home)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert "nothing-here" in result.stderr and "does not exist" in result.stderr


def test_debug_shows_the_traceback(tmp_path, home):
    result = run("--debug", "verify", tmp_path / "nothing-here", home=home)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "VerificationError" in result.stderr


def test_usage_errors_exit_2(cli):
    assert cli("no-such-command").code == 2
    assert cli("sign").code == 2  # missing argument
