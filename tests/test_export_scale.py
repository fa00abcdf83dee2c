"""Export at cohort scale (issue 22): --devices, --ray, slides from URLs, shard parts merged at sign.

The three ways to run (one process, one process per device, Ray tasks) must
write the same bytes for the same slide; a killed Ray worker's slide is redone
elsewhere; slides on S3 (moto on loopback, authentication enforced) or HTTP are
staged within a byte budget and removed; ``sign`` after ``--shard`` runs signs
only a complete dataset cut with one set of settings.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("openslide")

from conftest import BUCKET, DATA, assert_one_line_error, slide_image, write_pyramid  # noqa: E402
from sic_share.dataset import slide_files  # noqa: E402

CMU = DATA / "cmu_small_region.svs"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """The real Aperio slide and two synthetic pyramids of different sizes (largest first matters)."""
    folder = tmp_path_factory.mktemp("cohort")
    (folder / CMU.name).symlink_to(CMU)
    for i, side in enumerate((1536, 2560)):
        image = slide_image((side, side), (256, 256, side - 256, side - 256), seed=i)
        write_pyramid(folder / f"patient-{i}.tif", image, levels=3, mpp=0.5)
    return folder


def parquet_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in slide_files(folder)}


def signed_digests(folder: Path) -> list[tuple[str, int, str]]:
    import json

    predicate = json.loads((folder / "manifest.json").read_text())["predicate"]
    return sorted((f["name"], f["size"], f["sha256"]) for f in predicate["files"])


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> str:
    """One holder secret for the module, so that every path gives the slides the same pseudonyms."""
    from sic_share.privacy import holder_secret

    path = tmp_path_factory.mktemp("secret") / "holder.secret"
    holder_secret(path)
    return str(path)


@pytest.fixture(scope="module")
def reference(cohort, secret, tmp_path_factory) -> dict[str, bytes]:
    """The single-process export of the cohort: what every other path must reproduce byte for byte."""
    from sic_share.export import ExportOptions, export_slides

    out = tmp_path_factory.mktemp("reference") / "ds"
    report = export_slides([cohort], out, ExportOptions(workers=0, batch_size=16, secret_path=secret))
    assert report.exported == 3 and not report.problems
    return parquet_bytes(out)


# --- the three paths give one dataset -----------------------------------------------------------


def assert_busy_lines_add_up(out: str, workers: int) -> None:
    """Each worker's "busy X% of Y s" is a share of a time within the run's own "in Z s"."""
    total = float(re.search(r" in ([0-9.]+) s on ", out)[1])
    lines = re.findall(r"busy (\d+)% of ([0-9.]+) s, start-up ([0-9.]+) s", out)
    assert len(lines) == workers, out
    for share, wall, startup in lines:
        assert 0 < int(share) <= 100 and 0 < float(wall) <= total and float(startup) <= total, out


def test_devices_write_the_same_bytes_and_sign_the_same_files(tmp_path, cli, cohort, reference, secret):
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    one = cli("export", cohort, "--out", tmp_path / "one", "--workers", "0", "--batch-size", "16", "--secret", secret)
    assert one.code == 0, one.err
    two = cli("export", cohort, "--out", tmp_path / "two", "--workers", "0", "--batch-size", "16",
              "--devices", "cpu,cpu", "--secret", secret)
    assert two.code == 0, two.err
    assert "signed lab-a/two@1" in two.out and "on cpu,cpu" in two.out
    assert "cpu#0:" in two.out and "cpu#1:" in two.out  # each device worker says what it did
    assert_busy_lines_add_up(two.out, 2)
    assert parquet_bytes(tmp_path / "two") == reference == parquet_bytes(tmp_path / "one")
    # the manifests list the same files, sizes and digests (manifest.json itself differs by name and time)
    assert signed_digests(tmp_path / "two") == signed_digests(tmp_path / "one")
    again = cli("export", cohort, "--out", tmp_path / "two", "--workers", "0", "--batch-size", "16",
                "--devices", "cpu,cpu", "--secret", secret)
    assert again.code == 0 and "skipped 3 already done" in again.out


def test_ray_writes_the_same_bytes_and_the_driver_signs_once(tmp_path, cli, cohort, reference, secret, ray_cluster):
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    args = ("--workers", "0", "--batch-size", "16", "--ray", "local", "--secret", secret)
    result = cli("export", cohort, "--out", tmp_path / "r", *args)
    assert result.code == 0, result.err
    assert "signed lab-a/r@1" in result.out and "exported 3 slides" in result.out
    assert_busy_lines_add_up(result.out, len(re.findall(r"busy \d+%", result.out)) or 1)
    assert parquet_bytes(tmp_path / "r") == reference
    again = cli("export", cohort, "--out", tmp_path / "r", *args)
    assert again.code == 0 and "skipped 3 already done" in again.out and "signed" not in again.out


@pytest.fixture(scope="module")
def scratch_user(dev_hub) -> str:
    """A user that may also delete under lab-a/ray-out/ (a hub's publishers may not): a --via scratch prefix."""
    import json

    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    endpoint, credentials = dev_hub
    resource = f"arn:aws:s3:::{BUCKET}/lab-a/ray-out/*"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], "Resource": [resource]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{BUCKET}"]}]}
    previous = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # moto's setup window, as the dev hub opens it
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="scratch")
        iam.put_user_policy(UserName="scratch", PolicyName="scratch", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="scratch")["AccessKey"]
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = previous
    credentials["scratch"] = (key["AccessKeyId"], key["SecretAccessKey"])
    return "scratch"


def test_ray_via_s3_uploads_then_the_driver_collects_and_signs(tmp_path, cli, cohort, reference, secret,
                                                                ray_cluster, as_user, scratch_user, home):
    """Workers without the driver's disk put slides under an s3:// prefix; the driver downloads and signs them."""
    import fsspec

    as_user(scratch_user)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    via = f"s3://{BUCKET}/lab-a/ray-out/{tmp_path.name}"
    first = sorted(reference)[0]
    fs.pipe_file(f"{via}/slides/{first}", b"half an upload from nowhere")  # not a slide file: redone, not taken
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    args = ("--workers", "0", "--batch-size", "16", "--secret", secret, "--via", via, "--ray")  # a bare --ray
    result = cli("export", cohort, "--out", tmp_path / "r", *args)
    assert result.code == 0, result.err
    assert "exported 3 slides" in result.out and "signed lab-a/r@1" in result.out
    assert parquet_bytes(tmp_path / "r") == reference
    fs.invalidate_cache()
    assert not fs.exists(f"{via}/slides") or fs.ls(f"{via}/slides") == []  # collected: removed
    assert sorted(p.name for p in (tmp_path / "r" / "slides").iterdir()) == sorted(reference)  # no leftovers
    assert cli("trust", "add", home / "config" / "keys" / "lab-a.pub", "--publisher", "lab-a").code == 0
    assert cli("verify", tmp_path / "r").code == 0
    # a driver that died after the workers uploaded: a rerun into a new folder collects them, no Ray task runs
    for name, body in reference.items():
        fs.pipe_file(f"{via}/slides/{name}", body)
    again = cli("export", cohort, "--out", tmp_path / "r2", *args)
    assert again.code == 0, again.err
    assert "exported 3 slides" in again.out and "--via (earlier run): 3 slides" in again.out
    assert parquet_bytes(tmp_path / "r2") == reference
    assert cli("verify", tmp_path / "r2").code == 0
    fs.invalidate_cache()
    assert not fs.exists(f"{via}/slides") or fs.ls(f"{via}/slides") == []


def test_via_downloads_are_bounded_and_objects_stay_when_they_cannot_be_removed(tmp_path, cohort, reference,
                                                                                 as_user, scratch_user):
    """The driver takes no more than a worker uploaded (nor less); a prefix it may not clean is one warning."""
    import fsspec

    from sic_share.export import ExportOptions
    from sic_share.export import _engine
    from sic_share.export._pipeline import _Job

    pytest.importorskip("ray")
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    via = f"s3://{BUCKET}/lab-a/ray-out/{tmp_path.name}"
    name, body = sorted(reference.items())[0]
    slide_id = name[: -len(".parquet")]
    fs.pipe_file(f"{via}/slides/{name}", body)
    out = tmp_path / "ds"
    run = _engine.EngineRun([], ExportOptions(ray="local", via=via), [out], None, None)
    job = _Job("s3://wsi/a.svs", "a.svs", "a", slide_id, None, 1)
    root = [_engine._via_fs(via)[1]]
    for sizes, fragment in (([len(body) - 10], f"sent more than the {len(body) - 10} bytes the worker uploaded"),
                            ([len(body) + 10], f"holds {len(body)} bytes, not the {len(body) + 10} expected")):
        result = run._fetch(fs, root, job, sizes, check=False)
        assert result.status == "failed" and fragment in result.message and "\n" not in result.message
        assert not out.exists()  # nothing half-written: no folder, no temporary file
    assert run._fetch(fs, root, job, [len(body) - 10], check=True) is None  # changed since listed: redone
    assert run._fetch(fs, root, job, [len(body)], check=False).status == "exported"
    assert (out / "slides" / name).read_bytes() == body

    run._clean_via(fs, root, [slide_id])  # lab-a, a hub publisher, may not delete
    assert run.leftovers.startswith(f"1 object(s) stay under --via {via}") and "AccessDenied" in run.leftovers
    assert fs.cat_file(f"{via}/slides/{name}") == body  # kept: a rerun can still collect it
    as_user(scratch_user)
    scratch = fsspec.filesystem("s3", skip_instance_cache=True)
    run.leftovers = ""
    run._clean_via(scratch, root, [slide_id])
    assert not run.leftovers and not scratch.exists(f"{via}/slides/{name}")


def test_ray_via_refuses_slides_cut_with_other_settings(tmp_path, cli, cohort, reference, secret, as_user):
    pytest.importorskip("ray")
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    via = f"s3://{BUCKET}/lab-a/ray-out/{tmp_path.name}"
    for name, body in reference.items():
        fs.pipe_file(f"{via}/slides/{name}", body)
    result = cli("export", cohort, "--out", tmp_path / "ds", "--ray", "--via", via, "--stride", "64", "--no-sign",
                 "--secret", secret)
    assert_one_line_error(result, f"--via {via} holds slide", "made with stride 128, this run asks for 64")
    assert not list((tmp_path / "ds").glob("slides/*"))


def test_bad_via_or_out_url_is_one_line(tmp_path, cli, as_user, monkeypatch):
    import s3fs

    pytest.importorskip("ray")
    via = f"s3://{BUCKET}/lab-a/ray-out/{tmp_path.name}"
    out = tmp_path / "ds"
    cases = [
        (("--via", via), "give it with --ray"),
        (("--ray", "--via", str(tmp_path / "shared")), "should be a URL prefix"),
    ]
    for extra, fragment in cases:
        assert_one_line_error(cli("export", CMU, "--out", out, "--no-sign", *extra), fragment)
    url_out = cli("export", CMU, "--out", f"s3://{BUCKET}/lab-a/ds", "--ray", "--no-sign")
    assert_one_line_error(url_out, f"--out s3://{BUCKET}/lab-a/ds is a URL", "--via")
    as_user("reader")
    assert_one_line_error(cli("export", CMU, "--out", out, "--ray", "--via", via, "--no-sign"),
                          f"--via {via} cannot be written", "AccessDenied")
    as_user("lab-a", secret="wrong")
    assert_one_line_error(cli("export", CMU, "--out", out, "--ray", "--via", via, "--no-sign"),
                          f"--via {via} cannot be written", "credentials")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    assert_one_line_error(cli("export", CMU, "--out", out, "--ray", "--via", via, "--no-sign"),
                          f"--via {via} cannot be written", "no S3 credentials")
    as_user("lab-a")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    assert_one_line_error(cli("export", CMU, "--out", out, "--ray", "--via", via, "--no-sign"),
                          f"--via {via} cannot be written", "cannot reach")
    assert not out.exists()


def _ray_task_pids() -> list[int]:
    """Ray workers of an export busy on a slide (Ray titles an actor's process after its class and method)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::_ExportWorker.slide"):  # an actor on a slide (an idle one is ray::_ExportWorker)
                pids.append(int(entry.name))
    return pids


def _device_pids() -> list[int]:
    """This test process's spawned children (the --devices processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == \
                    os.getpid() and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _kill_mid_slide(run, out: Path, workers) -> object:
    """Call ``run()`` in a thread; once a slide is being written under ``out``, SIGKILL the first of ``workers()``.

    Returns what ``run`` returned (it must not raise) after checking a worker was killed.
    """
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = run()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    killed = None
    deadline = time.time() + 60
    while time.time() < deadline and killed is None and thread.is_alive():
        pids = workers()
        if pids and list(out.glob("slides/.*.tmp")):  # a worker is writing a slide: kill it
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.02)
    thread.join(timeout=240)
    assert killed, "no worker was seen writing a slide"
    assert "error" not in outcome, outcome.get("error")
    return outcome["result"]


def test_a_killed_ray_worker_still_gives_a_complete_verifying_dataset(tmp_path, cli, cohort, reference, secret,
                                                                      ray_cluster, home):
    from sic_share.export import ExportOptions, export_and_sign

    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    out = tmp_path / "killed"
    options = ExportOptions(workers=0, batch_size=16, ray="local", secret_path=secret)
    report = _kill_mid_slide(lambda: export_and_sign([cohort], out, options), out, _ray_task_pids).report
    assert report.exported == 3 and not report.problems, report.problems
    assert parquet_bytes(out) == reference
    assert sorted(p.name for p in (out / "slides").iterdir()) == sorted(reference)  # no temporary leftovers
    assert cli("trust", "add", home / "config" / "keys" / "lab-a.pub", "--publisher", "lab-a").code == 0
    assert cli("verify", out).code == 0


def test_a_ray_worker_killed_without_retries_fails_only_its_slide(tmp_path, cohort, reference, secret, ray_cluster,
                                                                   home):
    """With retries=0 the slide whose worker is killed is not retried: it alone is reported failed, a fresh worker
    and the other one do the rest, and a rerun redoes the one slide."""
    from sic_share.export import ExportOptions, export_slides

    out = tmp_path / "no-retry"
    options = ExportOptions(workers=0, batch_size=16, ray="local", secret_path=secret, retries=0)
    report = _kill_mid_slide(lambda: export_slides([cohort], out, options), out, _ray_task_pids)
    assert report.exported == 2 and len(report.problems) == 1, report.problems
    assert "its Ray worker was lost 1 time(s)" in report.problems[0].problem, report.problems
    assert not list((out / "slides").glob(".*.tmp"))  # the killed slide left nothing half-written
    again = export_slides([cohort], out, options)
    assert again.exported == 1 and again.skipped == 2 and not again.problems
    assert parquet_bytes(out) == reference


def test_a_killed_device_process_fails_only_its_slide(tmp_path, cohort, reference, secret, home):
    """--devices: a process that dies (killed, out of memory) loses its slide only, leaves no partial file, and a
    rerun redoes that slide."""
    from sic_share.export import ExportOptions, export_slides

    out = tmp_path / "devices"
    options = ExportOptions(workers=0, batch_size=16, devices="cpu,cpu", secret_path=secret)
    report = _kill_mid_slide(lambda: export_slides([cohort], out, options), out, _device_pids)
    assert report.exported == 2 and len(report.problems) == 1, report.problems
    assert "died (exit code -9) while exporting it; run the export again" in report.problems[0].problem
    assert not list((out / "slides").glob(".*.tmp"))
    again = export_slides([cohort], out, options)
    assert again.exported == 1 and again.skipped == 2 and not again.problems
    assert parquet_bytes(out) == reference


# --- shard parts, merged by one sign ------------------------------------------------------------


def test_shards_sign_once_when_every_part_is_in(tmp_path, cli, cohort, reference, secret):
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    out = tmp_path / "sharded"
    first = cli("export", cohort, "--out", out, "--shard", "0/2", "--workers", "0", "--batch-size", "16",
                "--secret", secret)
    assert first.code == 0, first.err
    assert (tmp_path / "sharded.parts" / "0-of-2.json").exists()
    early = cli("sign", out)
    assert_one_line_error(early, "shard 1/2 has not finished", "--shard 1/2")
    assert not (out / "manifest.json").exists()
    second = cli("export", cohort, "--out", out, "--shard", "1/2", "--workers", "0", "--batch-size", "16",
                 "--secret", secret)
    assert second.code == 0, second.err
    signed = cli("sign", out)
    assert signed.code == 0, signed.err
    assert "3 slides" in signed.out
    assert parquet_bytes(out) == reference
    names = set(os.listdir(tmp_path / "sharded.parts"))
    assert names == {"0-of-2.json", "1-of-2.json"}
    # the parts hold pseudonyms and statuses, never a slide's name
    blob = b"".join((tmp_path / "sharded.parts" / n).read_bytes() for n in names)
    assert b"cmu_small_region" not in blob and b"patient-" not in blob


def test_a_shard_that_lost_the_race_for_the_slide_map_still_resumes(tmp_path, cli, cohort, home):
    """Shards that start together each rewrite slide-map.json, and the last write wins; a rerun must not then
    take the other shards' slides for slides made with another secret."""
    out = tmp_path / "ds"
    assert cli("export", cohort, "--out", out, "--shard", "0/2", "--workers", "0").code == 0
    (home / "config" / "keys" / "slide-map.json").unlink()  # as if shard 1's write had replaced shard 0's
    result = cli("export", cohort, "--out", out, "--shard", "1/2", "--workers", "0")
    assert result.code == 0, result.err
    assert len(slide_files(out)) == 3


def test_sign_refuses_a_shard_cut_with_other_settings(tmp_path, cli, cohort):
    out = tmp_path / "mixed"
    assert cli("export", cohort, "--out", out, "--shard", "0/2", "--workers", "0").code == 0
    # the second shard starts before the first wrote anything it could check against: simulate by a new folder
    other = tmp_path / "other"
    assert cli("export", cohort, "--out", other, "--shard", "1/2", "--workers", "0", "--stride", "64").code == 0
    for path in (other / "slides").iterdir():
        path.rename(out / "slides" / path.name)
    (tmp_path / "other.parts" / "1-of-2.json").rename(tmp_path / "mixed.parts" / "1-of-2.json")
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    result = cli("sign", out)
    assert_one_line_error(result, "shard 1/2 was cut with stride 64", "shard 0/2 with 128")
    assert not (out / "manifest.json").exists()


def test_sign_refuses_a_slide_of_a_shard_that_failed(tmp_path, cli, cohort):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in cohort.iterdir():
        (folder / p.name).symlink_to(p.resolve())
    (folder / "broken.svs").write_text("not a slide")
    out = tmp_path / "ds"
    for i in range(2):
        cli("export", folder, "--out", out, "--shard", f"{i}/2", "--workers", "0")  # broken.svs fails: exit 1
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    result = cli("sign", out)
    assert_one_line_error(result, "failed in that run", "rerun export --shard")
    assert not (out / "manifest.json").exists()
    # the slide's pseudonym is what the line names; 'slides lookup' tells the holder which file it is
    slide_id = result.err.split("slide ")[1].split()[0]
    assert "broken" in cli("slides", "lookup", slide_id).out


# --- slides from URLs ---------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request on stderr
        pass



@pytest.mark.parametrize("workers", [0, 1])  # 1: the loader reads ahead while the budget holds one slide
def test_slides_on_s3_are_staged_within_the_budget_and_removed(tmp_path, as_user, cohort, reference, secret,
                                                                monkeypatch, workers):
    import fsspec

    from sic_share.export import ExportOptions, export_slides
    from sic_share.export import _engine

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    for path in sorted(cohort.iterdir()):
        fs.put_file(str(path.resolve()), f"{BUCKET}/lab-a/cohort/{path.name}")
    as_user("reader")
    peaks = []
    real_close = _engine.Stager.close

    def close(self):
        peaks.append((self.peak, self.max_bytes, self.root))
        real_close(self)

    monkeypatch.setattr(_engine.Stager, "close", close)
    budget = 1 << 20  # 1 MiB, less than any slide: each is staged alone, the next once the last is released
    sizes = [p.stat().st_size for p in cohort.iterdir()]
    stage = tmp_path / "stage"
    report = export_slides([f"s3://{BUCKET}/lab-a/cohort/"], tmp_path / "s3", ExportOptions(
        workers=workers, batch_size=16, stage_dir=str(stage), stage_bytes=budget, secret_path=secret))
    assert report.exported == 3 and not report.problems, report.problems
    assert parquet_bytes(tmp_path / "s3") == reference
    [(peak, limit, root)] = peaks
    assert 0 < peak <= max(sizes) and limit == budget
    assert not root.exists() and list(stage.iterdir()) == []  # every staged file removed


def test_slides_over_http_and_on_devices(tmp_path, cohort, reference, secret):
    from sic_share.export import ExportOptions, export_slides

    handler = functools.partial(_QuietHandler, directory=str(cohort))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = [f"{base}/{p.name}" for p in sorted(cohort.iterdir())]
        report = export_slides(urls, tmp_path / "web", ExportOptions(workers=0, batch_size=16, devices="cpu,cpu",
                                                                    stage_dir=str(tmp_path / "stage"),
                                                                    secret_path=secret))
    finally:
        server.shutdown()
    assert report.exported == 3 and not report.problems, report.problems
    assert parquet_bytes(tmp_path / "web") == reference
    assert list((tmp_path / "stage").iterdir()) == []


def test_a_url_that_is_no_slide_is_named_by_its_url(tmp_path, cohort, secret):
    """A staged file OpenSlide cannot read fails alone, told by its URL (not the staged copy's path)."""
    from sic_share.export import ExportOptions, export_slides

    web = tmp_path / "web"
    web.mkdir()
    (web / "good.svs").symlink_to(CMU)
    (web / "broken.svs").write_bytes(b"not a slide" * 100)
    handler = functools.partial(_QuietHandler, directory=str(web))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        report = export_slides([f"{base}/broken.svs", f"{base}/good.svs"], tmp_path / "ds", ExportOptions(
            workers=1, batch_size=16, stage_dir=str(tmp_path / "stage"), secret_path=secret))
    finally:
        server.shutdown()
        server.server_close()
    assert report.exported == 1
    [problem] = report.problems
    assert problem.problem.startswith(f"{base}/broken.svs is not an image OpenSlide can read")
    assert "sic-share-stage" not in problem.problem and list((tmp_path / "stage").iterdir()) == []


# --- bad input: one clear line, non-zero exit, nothing half-written -------------------------------


@pytest.mark.parametrize("value, fragment", [
    ("gpu0", "should be all, GPU indices"),
    ("0,0", "names a GPU twice"),
    ("all", "found no GPU"),
    ("7", "GPU 7 does not exist"),
    ("cpu,0", "mixes GPUs and CPU"),
])
def test_bad_devices_are_one_line(tmp_path, cli, value, fragment):
    import torch

    if torch.cuda.is_available() and value in ("all", "7"):
        pytest.skip("this machine has GPUs")
    result = cli("export", CMU, "--out", tmp_path / "ds", "--devices", value, "--no-sign")
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "ds").exists()


def test_devices_with_masks_need_the_class_list(tmp_path, cli):
    result = cli("export", CMU, "--out", tmp_path / "ds", "--devices", "cpu,cpu", "--no-sign",
                 "--masks", str(DATA / "{stem}_epidermis.png"))
    assert_one_line_error(result, "need --classes")
    assert not list((tmp_path / "ds").glob("slides/*"))


def test_ray_without_ray_names_the_extra(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as when it is not installed
    result = cli("export", CMU, "--out", tmp_path / "ds", "--ray", "local", "--no-sign")
    assert_one_line_error(result, "pip install 'sic-share[ray]'")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("args", [
    ("--ray",),  # last on the line
    ("--ray", "--no-sign"),  # followed by an option
    ("--ray", str(CMU)),  # followed by a slide: a path is no Ray address
])
def test_bare_ray_means_a_local_ray(tmp_path, cli, monkeypatch, args):
    monkeypatch.setitem(sys.modules, "ray", None)  # proves --ray was taken as given: the Ray check runs
    rest = [a for a in ("--out", tmp_path / "ds", "--no-sign") if a not in args]
    result = cli("export", *([] if str(CMU) in args else [CMU]), *rest, *args)
    assert_one_line_error(result, "pip install 'sic-share[ray]'")
    assert not (tmp_path / "ds").exists()


def test_bare_ray_is_local_and_explicit_forms_stay(tmp_path, cli):
    pytest.importorskip("ray")
    bare = cli("export", CMU, "--out", tmp_path / "ds", "--ray", "--devices", "cpu,cpu", "--no-sign")
    assert_one_line_error(bare, "--devices or --ray, not both")  # parsed as --ray local, not --ray --devices
    explicit = cli("export", CMU, "--out", tmp_path / "ds", "--ray=127.0.0.1:1", "--no-sign")
    assert_one_line_error(explicit, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert "bare --ray or local" in " ".join(cli("export", "--help").out.split())
    assert not (tmp_path / "ds").exists()


def test_a_model_that_does_not_load_under_ray_is_one_line(tmp_path, cli):
    """Ray's workers start loading the models early; a model the driver cannot load still stops it in one line."""
    ray = pytest.importorskip("ray")
    before = ray.is_initialized()
    out = tmp_path / "ds"
    missing = tmp_path / "nope.pt"
    result = cli("export", CMU, "--out", out, "--ray", "--model", "resnet18", "--weights", missing, "--no-sign")
    assert_one_line_error(result, str(missing))
    assert not out.exists()
    assert ray.is_initialized() == before  # a Ray the export started for itself is shut down again


def test_unreachable_ray_address_is_one_line(tmp_path, cli):
    pytest.importorskip("ray")
    result = cli("export", CMU, "--out", tmp_path / "ds", "--ray", "127.0.0.1:1", "--no-sign")
    assert_one_line_error(result, "cannot reach the Ray cluster at 127.0.0.1:1")
    bad = cli("export", CMU, "--out", tmp_path / "ds", "--ray", "not an address", "--no-sign")
    assert_one_line_error(bad, "should be auto, HEAD:6379")
    both = cli("export", CMU, "--out", tmp_path / "ds", "--ray", "local", "--devices", "cpu,cpu", "--no-sign")
    assert_one_line_error(both, "--devices or --ray, not both")
    assert not (tmp_path / "ds").exists()


def test_s3_slides_with_bad_credentials_or_a_dead_endpoint_are_one_line(tmp_path, cli, as_user, monkeypatch):
    import s3fs

    as_user("lab-a", secret="wrong")
    refused = cli("export", f"s3://{BUCKET}/lab-a/cohort/", "--out", tmp_path / "ds", "--no-sign")
    assert_one_line_error(refused, f"s3://{BUCKET}/lab-a/cohort/", "credentials")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    missing = cli("export", f"s3://{BUCKET}/lab-a/cohort/x.svs", "--out", tmp_path / "ds", "--no-sign")
    assert_one_line_error(missing, "no S3 credentials")
    as_user("lab-a")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    dead = cli("export", f"s3://{BUCKET}/lab-a/cohort/", "--out", tmp_path / "ds", "--no-sign")
    assert_one_line_error(dead, "cannot reach")
    assert not (tmp_path / "ds").exists()


def test_unreachable_or_missing_http_slide_is_one_line(tmp_path, cli, cohort):
    handler = functools.partial(_QuietHandler, directory=str(cohort))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        missing = cli("export", f"http://127.0.0.1:{port}/nope.svs", "--out", tmp_path / "ds", "--no-sign")
        assert_one_line_error(missing, f"http://127.0.0.1:{port}/nope.svs does not exist")
    finally:
        server.shutdown()
        server.server_close()
    dead = cli("export", f"http://127.0.0.1:{port}/nope.svs", "--out", tmp_path / "ds", "--no-sign")
    assert_one_line_error(dead, f"cannot reach http://127.0.0.1:{port}")
    assert not (tmp_path / "ds").exists()


def test_missing_shard_part_at_sign_is_one_line(tmp_path, cli, cohort):
    out = tmp_path / "ds"
    assert cli("export", cohort, "--out", out, "--shard", "1/3", "--workers", "0").code == 0
    assert cli("keys", "generate", "--publisher", "lab-a").code == 0
    assert_one_line_error(cli("sign", out), "shard 0/3 has not finished")
    assert not (out / "manifest.json").exists()


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """A broken or hostile slide server: no size in its answer, then bytes without end."""

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            for _ in range(64):  # 64 MiB, far more than the bound below
                self.wfile.write(b"\0" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_server_that_sends_without_end_cannot_fill_the_disk(tmp_path, monkeypatch):
    from sic_share.errors import SlideError
    from sic_share.export import _engine
    from sic_share.export._pipeline import _Job

    monkeypatch.setattr(_engine, "_UNSIZED_LIMIT", 1 << 20)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/slide.svs"
        job = _Job(url, "slide.svs", "slide", "0123456789abcdef", None, 0)
        with pytest.raises(SlideError, match="sent more than the 1048576 bytes"):
            _engine._download(job, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert list(tmp_path.iterdir()) == []  # nothing half-written stays


def test_a_ray_cluster_too_small_for_one_worker_is_one_line(tmp_path, cli, ray_cluster):
    """Workers asking for more CPUs than any node has would wait for ever: refused at once, naming the fix."""
    result = cli("export", CMU, "--out", tmp_path / "ds", "--ray", "--workers", "8", "--no-sign")
    assert_one_line_error(result, "no node of the Ray cluster has 9 CPU(s)", "lower --workers")
    assert not (tmp_path / "ds").exists()


def test_ray_fail_fast_stops_every_worker_and_leaves_no_partial_file(tmp_path, cli, cohort, ray_cluster):
    """--fail-fast on Ray: the first failed slide stops the run in one line; the slides other workers were on are
    abandoned whole (their workers removed, nothing half-written), and no worker of ours lingers in the cluster."""
    folder = tmp_path / "in"
    folder.mkdir()
    for slide in cohort.iterdir():
        (folder / slide.name).symlink_to(slide)
    (folder / "broken.svs").write_bytes(b"\0" * (64 << 20))  # the largest: handed out first, fails at once
    out = tmp_path / "ds"
    result = cli("export", folder, "--out", out, "--ray", "--workers", "0", "--fail-fast", "--no-sign")
    assert_one_line_error(result, "broken.svs")
    assert not list(out.glob("slides/.*.tmp"))
    time.sleep(1)  # ray.kill is asynchronous
    assert not _ray_task_pids()


def test_devices_refuse_gpus_of_two_precisions(monkeypatch):
    """An Ampere GPU embeds in bf16, an older one in float32: one --devices run must not mix their rows."""
    import torch

    from sic_share.errors import SicShareError
    from sic_share.export._engine import resolve_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (8, 0) if torch.device(d).index == 0 else (7, 0))
    with pytest.raises(SicShareError, match="mixes GPUs that compute in bf16"):
        resolve_devices("0,1")
    assert resolve_devices("0") == ["cuda:0"]
