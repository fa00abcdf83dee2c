"""The consumer install (`pip install sic-share`) must not need torch, timm or OpenSlide."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from conftest import REPO

HEAVY = ("torch", "timm", "openslide", "torchvision")


def test_core_dependencies_exclude_the_exporter_stack():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for name in HEAVY:
        assert name not in core
    assert "torch" in " ".join(project["optional-dependencies"]["export"])


def test_consumer_modules_and_cli_do_not_import_the_exporter_stack():
    code = (
        "import sys, sic_share.cli, sic_share.dataset, sic_share.signing, sic_share.hub, sic_share.interop;"
        "from typer.testing import CliRunner;"
        "r = CliRunner().invoke(sic_share.cli.app, ['--help']); assert r.exit_code == 0, r.output;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
