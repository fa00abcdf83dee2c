"""What a holder and a consumer look up: info, keys ls, the private slide map, and the consistent CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import DATA, assert_one_line_error, make_dataset, metadata, sign_local

from sic_share.dataset import write_slide
from sic_share.privacy import SlideMap, holder_secret, pseudonym

SLIDE = DATA / "cmu_small_region.svs"


# ------------------------------------------------------------------ info
def test_info_of_a_hub_dataset_reads_no_data(cli, signed, tmp_path):
    hub = tmp_path / "hub"
    assert cli("publish", signed, "--hub", hub).code == 0
    result = cli("info", "lab-a/crc", "--hub", hub, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert (info["publisher"], info["name"], info["version"]) == ("lab-a", "crc", 1)
    assert info["trusted"] is True and info["signed"] is True
    assert info["model"]["id"] == "test-model" and info["model"]["dim"] == 16
    assert info["patching"]["size_px"] == 256 and info["classes"] == ["normal", "tumour"]
    assert [(s["slide_id"], s["patches"]) for s in info["slides"]] == [("s0", 200), ("s1", 200)]
    assert info["n_patches"] == 400
    text = cli("info", "lab-a/crc", "--hub", hub).out
    assert "lab-a/crc@1" in text and "yes" in text and "s1" in text


def test_info_says_when_the_signer_is_not_trusted(cli, signed, monkeypatch, tmp_path):
    monkeypatch.setenv("SIC_SHARE_HOME", str(tmp_path / "stranger"))  # a consumer who trusts nobody
    info = json.loads(cli("info", str(signed), "--json").out)
    assert info["trusted"] is False and "not signed by any key you trust" in info["trust_note"]
    assert info["publisher"] == "lab-a"


def test_info_of_an_unsigned_folder(cli, tmp_path):
    root = make_dataset(tmp_path / "raw", slides=1, n=50)
    info = json.loads(cli("info", str(root), "--json").out)
    assert info["signed"] is False and info["publisher"] is None and info["n_patches"] == 50


def test_info_of_a_missing_dataset(cli, tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    assert_one_line_error(cli("info", "lab-a/none", "--hub", hub), "no dataset lab-a/none")


# ------------------------------------------------------------------ keys ls
def test_keys_ls_shows_the_pub_file_to_hand_out(cli, home):
    assert cli("keys", "generate", "--publisher", "demo-lab").code == 0
    result = cli("keys", "ls", "--json")
    (key,) = json.loads(result.out)
    assert key["publisher"] == "demo-lab" and len(key["keyid"]) == 64
    assert Path(key["public"]).is_file() and key["public"].endswith("demo-lab.pub")
    # the README tour's next step, as written with that path
    assert cli("trust", "add", key["public"], "--publisher", "demo-lab").code == 0


def test_keys_ls_with_no_keys_says_how_to_make_one(cli):
    result = cli("keys", "ls")
    assert result.code == 0 and "sic-share keys generate --publisher NAME" in result.err


# ------------------------------------------------------------------ the private slide map
@pytest.fixture
def exported(cli, tmp_path) -> Path:
    out = tmp_path / "ds"
    result = cli("export", SLIDE, "--out", out, "--no-sign")
    assert result.code == 0, result.err
    return out


def test_export_records_the_slide_map_and_lookup_answers_both_ways(cli, exported, home):
    (parquet,) = (exported / "slides").glob("*.parquet")
    slide_id = parquet.stem
    by_id = json.loads(cli("slides", "lookup", slide_id[:6], "--json").out)
    assert [(e["slide_id"], e["name"], e["path"]) for e in by_id] == [(slide_id, "cmu_small_region", str(SLIDE))]
    by_name = json.loads(cli("slides", "lookup", "cmu_small_region.svs", "--json").out)
    assert [e["slide_id"] for e in by_name] == [slide_id]
    assert slide_id == pseudonym("cmu_small_region", holder_secret())
    path = home / "config" / "keys" / "slide-map.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # the map never enters the dataset
    assert all("slide-map" not in p.name for p in exported.rglob("*"))
    assert b"cmu_small_region" not in b"".join(p.read_bytes() for p in exported.rglob("*") if p.is_file())


def test_lookup_of_an_unknown_slide(cli):
    assert_one_line_error(cli("slides", "lookup", "nothing-like-it"), "no slide 'nothing-like-it' in the slide map")


def test_import_records_the_slide_map(cli, tmp_path):
    import numpy as np

    src = tmp_path / "feats"
    src.mkdir()
    np.save(src / "HOSP-042.features.npy", np.ones((4, 8), np.float32))
    np.save(src / "HOSP-042.coords.npy", np.array([[128, 128], [256, 128], [128, 256], [256, 256]], np.int32))
    result = cli("import", src, "--out", tmp_path / "imp", "--model-id", "my-net", "--patch-size", "256",
                 "--mpp", "0.5")
    assert result.code == 0, result.err
    (entry,) = SlideMap().lookup("HOSP-042")
    assert entry.slide_id == pseudonym("HOSP-042", holder_secret())


def test_audit_finds_any_name_in_the_slide_map(cli, tmp_path):
    SlideMap().record([("0123456789abcdef", "PATIENT-SMITH-2024", "/data/PATIENT-SMITH-2024.svs")])
    root = tmp_path / "leaky"
    meta = metadata(8, model_id="trained-on-PATIENT-SMITH-2024")  # a name smuggled into the metadata
    write_slide(root / "slides" / "s0.parquet", slide_id="s0", metadata=meta,
                coords=[[128, 128]], embeddings=[[0.0] * 8])
    result = cli("audit", root)
    assert result.code == 1 and "PATIENT-SMITH-2024" in result.err


# ------------------------------------------------------------------ one spelling per idea
def test_sign_defaults_the_name_to_the_folder(cli, publisher, tmp_path):
    root = make_dataset(tmp_path / "crc-resnet50", slides=1, n=20)
    result = cli("sign", root, "--key", publisher.private)
    assert result.code == 0, result.err
    assert "lab-a/crc-resnet50@1" in result.out


def test_pull_takes_out_and_to_and_prints_json(cli, signed, tmp_path):
    hub = tmp_path / "hub"
    assert cli("publish", signed, "--hub", hub).code == 0
    result = cli("pull", "lab-a/crc", "--hub", hub, "--out", tmp_path / "a", "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["dataset"] == "lab-a/crc@1" and body["slides"] == 2 and Path(body["folder"]) == tmp_path / "a"
    assert cli("pull", "lab-a/crc", "--hub", hub, "--to", tmp_path / "b").code == 0
    assert (tmp_path / "b" / "manifest.json").exists()
    verified = json.loads(cli("verify", tmp_path / "b", "--json").out)
    assert verified == {"verified": True, "dataset": "lab-a/crc@1", "publisher": "lab-a", "files_held": 2, "files": 2}


# ------------------------------------------------------------------ silent wrong results, refused
def test_export_into_a_folder_made_with_other_settings_is_refused(cli, exported, tmp_path):
    before = sorted(p.name for p in (exported / "slides").iterdir())
    for args, fragment in (
        (("--patch-size", "128"), "patch size 256, this run asks for 128"),
        (("--stride", "64"), "stride 128, this run asks for 64"),
        (("--dtype", "float32"), "embedding dtype float16, this run asks for float32"),
        (("--target-mpp", "1.0"), "target µm/px 0.5, this run asks for 1.0"),
        (("--secret", str(tmp_path / "another.secret")), "holds slides this holder secret did not make"),
    ):
        result = cli("export", SLIDE, "--out", exported, "--no-sign", *args)
        assert_one_line_error(result, str(exported), fragment, "--force")
    assert sorted(p.name for p in (exported / "slides").iterdir()) == before  # untouched
    result = cli("export", SLIDE, "--out", exported, "--no-sign")  # same settings: resumes (nothing to do)
    assert result.code == 0 and "skipped 1 already done" in result.out


def test_export_with_another_model_is_refused_and_force_replaces(cli, exported, tmp_path):
    import timm
    import torch

    weights = tmp_path / "resnet18.pt"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), weights)
    result = cli("export", SLIDE, "--out", exported, "--no-sign", "--model", "resnet18", "--weights", weights)
    assert_one_line_error(result, "model handcrafted, this run asks for resnet18")
    result = cli("export", SLIDE, "--out", exported, "--no-sign", "--patch-size", "128", "--force")
    assert result.code == 0, result.err
    from sic_share.dataset import read_slide_metadata

    (parquet,) = (exported / "slides").glob("*.parquet")
    assert read_slide_metadata(parquet)[0].patching.size_px == 128


def test_similarity_refuses_datasets_on_different_grids(cli, tmp_path, trust_local):
    from sic_share.dataset import Patching, SlideMetadata
    from conftest import blobs

    coords, emb, _ = blobs(100, 8)
    for name, size in (("a", 256), ("b", 128)):
        meta = SlideMetadata(metadata(8).model, Patching(size, size, 0.5, 0.5, 128), (), "float16")
        write_slide(tmp_path / name / "slides" / "s0.parquet", slide_id="s0", metadata=meta, coords=coords,
                    embeddings=emb)
        sign_local(tmp_path / name, trust_local, name)  # similarity verifies local folders
    result = cli("similarity", tmp_path / "a", tmp_path / "b")
    assert_one_line_error(result, "were cut on different grids", "256 px patches", "128 px patches")


def test_help_shows_types_people_read(cli):
    import re

    from sic_share.cli import app

    commands = [name for name in (c.name for c in app.registered_commands) if name]
    commands += [f"{group.name} {c.name}" for group in app.registered_groups for c in group.typer_instance.registered_commands]
    assert {"export", "info", "models", "keys ls", "slides lookup"} <= set(commands)
    for command in commands:
        result = cli(*command.split(), "--help")
        assert result.code == 0, command
        assert not re.search(r"<(bool|str|int|float|path|list\[)", result.out, re.I), (command, result.out)
    assert "SLIDES" in cli("export", "--help").out and "INT" in cli("export", "--help").out


def test_shell_completion_is_offered(cli):
    assert "--show-completion" in cli("--help").out


def test_choices_are_case_insensitive_everywhere(cli, tmp_path, trust_local):
    root = sign_local(make_dataset(tmp_path / "ds", slides=1, n=100), trust_local)  # sic verifies local folders
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("index,label\n0,normal\n1,tumour\n2,normal\n3,tumour\n")
    for method in ("SPREADING", "Sic"):
        result = cli("sic", root, "--seeds", seeds, "--out", tmp_path / f"{method}.csv", "--method", method,
                     "--classes", "normal,tumour")
        assert result.code == 0, result.err
    result = cli("export", SLIDE, "--out", tmp_path / "e", "--no-sign", "--dtype=FLOAT32")
    assert result.code == 0, result.err


def test_cache_clear_removes_what_the_app_derived(cli, home):
    from sic_share._paths import cache_dir

    derived = cache_dir() / "sha256" / "ab" / (".ab" + "0" * 62 + ".app")
    derived.mkdir(parents=True)
    (derived / "embeddings.npy").write_bytes(b"x" * 1000)
    result = cli("cache", "clear")
    assert result.code == 0, result.err
    assert not derived.exists()
