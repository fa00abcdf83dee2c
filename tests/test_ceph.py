"""The hub on a production S3 server: Ceph's RADOS Gateway (Debian's 16.2 Pacific) over HTTP.

One throw-away cluster per session, started the way docs/hub.md's operator
walkthrough starts it: the walkthrough's commands run as written (``hub/rgw/
start.sh``, users made with ``radosgw-admin``, the bucket and its policy with
``hub/rgw/make_hub.py``, ``sic-share hub add``, ``publish``, ``ls``, ``query``,
``pull``) and their output is compared with the doc's; its last command,
``hub/rgw/stop.sh``, ends the session. The tests then build on that hub as an
operator would: ``lab-b`` and ``outsider`` are added with ``radosgw-admin``
and the policy is made again with the whole list. So the operator
``sic-admin`` owns bucket ``sic-hub``; publishers ``lab-a`` and ``lab-b`` may
write under their own prefix only (a bucket policy with user principals);
``reader`` reads; ``outsider`` is a user of the same server that the policy
does not name.

What moto cannot show and this suite does: a true race of two publishers of
one version (the server's conditional create is atomic, exactly one wins), a
412 without ``<Condition>`` (RGW's) still read as "already published", and a
versioned bucket (where RGW ignores If-None-Match) refused with one line.

The suite skips only when the Ceph binaries (or jq, which the walkthrough
uses) are absent; ``.ci/run`` installs them. Deselect it with ``-m 'not ceph'``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
import pytest
import s3fs
from botocore.exceptions import ClientError

from conftest import REPO, assert_one_line_error, make_dataset, make_publisher, published_objects, rewritten
from sic_share.signing import ENVELOPE, MANIFEST, sign_dataset

pytestmark = pytest.mark.ceph

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "ceph-authtool", "monmaptool", "jq")
INSTALL = "apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw jq"
BUCKET = "sic-hub"
OPERATOR = "sic-admin"
PUBLISHERS = ("lab-a", "lab-b")
READER = "reader"
OUTSIDER = "outsider"
REGION = "us-east-1"


def _load_make_hub():
    spec = importlib.util.spec_from_file_location("sic_hub_make_hub", REPO / "hub" / "rgw" / "make_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_hub = _load_make_hub()


# --- docs/hub.md's walkthrough, run as written ----------------------------------------------

DOC = REPO / "docs" / "hub.md"
DOC_SECTION = "## Operator: a Ceph RGW hub"
DOC_CWD = "/tmp/rgw-demo"  # where the walkthrough was run: its output names that folder

# What differs from run to run: ports, timings, pids, times, digests and pseudonyms, keys, table widths.
_VARIABLE = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
    (r"\[\d+\.\d{3}s\]", "[T]"),
    (r"\(pid \d+, (SIG\w+)\) in \d+ ms", r"(pid P, \1) in T ms"),
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?", "TIME"),
    (r"\b[0-9a-f]{16,64}\b", "HEX"),
    (r"\b[A-Z0-9]{20}\b", "ACCESS_KEY"),
    (r"\b[A-Za-z0-9]{40}\b", "SECRET"),
    (r"([━─═])\1+", r"\1"),
    (r" +", " "),
]]


def _normal(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, replacement in _VARIABLE:
            line = pattern.sub(replacement, line)
        if line.strip():
            out.append(line.rstrip())
    return out


def console_steps(markdown: str, heading: str) -> list[tuple[str, list[str]]]:
    """``(command, output lines)`` for every ``$ `` line of the console blocks under ``heading``."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return steps


def run_steps(steps: list[tuple[str, list[str]]], cwd: Path, env: dict[str, str]) -> list[tuple[int, list[str]]]:
    """Run the commands in one bash session (exports carry over); each one's rc and output (stderr too).

    The daemons that start.sh leaves running inherit bash's stdout, so it is a file, not a pipe.
    """
    script = []
    for i, (command, _) in enumerate(steps):
        script += [f"echo '@@step {i}'", f"{{ {command} ; }} 2>&1", 'echo "@@rc $?"']
    log = cwd.parent / f"steps-{secrets.token_hex(3)}.log"
    with open(log, "w") as out:
        subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=300, check=False)
    results = []
    for chunk in log.read_text().split("@@step ")[1:]:
        body, _, rc = chunk.partition("@@rc ")
        results.append((int(rc.split()[0]), body.split("\n")[1:]))
    assert len(results) == len(steps), log.read_text()
    return results


def skip_without_ceph() -> None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"the Ceph RGW tests need {', '.join(missing)}, not found here: {INSTALL}")


def stop_rgw(state: Path) -> None:
    subprocess.run([str(REPO / "hub" / "rgw" / "stop.sh"), str(state), "--wipe"], stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60, check=False)


def radosgw_admin(conf: str, *args: str) -> dict:
    done = subprocess.run(["radosgw-admin", "--conf", conf, *args], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Walkthrough:
    """docs/hub.md's RGW session: its steps, what each printed, and where it ran."""

    steps: list[tuple[str, list[str]]]
    results: list[tuple[int, list[str]]]
    cwd: Path
    transcript: Path


@pytest.fixture(scope="session")
def walkthrough(tmp_path_factory, session_home) -> Walkthrough:
    """Run the doc's commands up to the stop (which runs at the end of the session), in a folder of their own.

    The folder holds what the doc says it does: the repository's ``hub/``, a
    dataset ``crc`` signed by lab-a and ``lab-a.pub``. The commands get a
    sic-share home and XDG folders of their own, set before anything is written.
    """
    skip_without_ceph()
    root = tmp_path_factory.mktemp("walkthrough")
    state = {"SIC_SHARE_HOME": str(root / "home")} | {v: str(root / v.lower()) for v in (
        "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CEPH_", "SIC_SHARE_"))} | state
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    cwd = root / "rgw-demo"
    cwd.mkdir()
    (cwd / "hub").symlink_to(REPO / "hub")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in state.items():
            mp.setenv(var, value)
        lab_a = make_publisher("lab-a", root / "keys", trust=False)
        shutil.copy(lab_a.public, cwd / "lab-a.pub")
        make_dataset(cwd / "crc")
        sign_dataset(cwd / "crc", name="crc", key_path=lab_a.private)

    steps = console_steps(DOC.read_text(), DOC_SECTION)
    stop = next(i for i, (command, _) in enumerate(steps) if command.startswith("hub/rgw/stop.sh"))
    transcript = root / "transcript.txt"  # this run's session, to paste into the doc when it changes
    try:
        results = run_steps(steps[:stop], cwd, env)
        transcript.write_text("\n".join(f"$ {command}\n" + "\n".join(out).rstrip().replace(str(cwd), DOC_CWD)
                                        for (command, _), (_, out) in zip(steps, results)))
        yield Walkthrough(steps, results, cwd, transcript)
    finally:
        try:
            run_steps(steps[stop:], cwd, env)  # the doc's own stop
        finally:
            stop_rgw(cwd / "rgw-state")  # in case it did not stop everything
            s3fs.S3FileSystem.clear_instance_cache()


def test_the_rgw_walkthrough_in_docs_runs_as_written(walkthrough):
    """Start, users, bucket and policy, hub add, publish, ls, query, pull: the doc's commands and output."""
    for (command, expected), (rc, out) in zip(walkthrough.steps, walkthrough.results):
        actual = [line.replace(str(walkthrough.cwd), DOC_CWD) for line in out]
        assert _normal(actual) == _normal(expected), f"{command}: this run's session is in {walkthrough.transcript}"
        failed = any(line.startswith("error: ") for line in expected)
        assert (rc != 0) == failed, (command, rc, out)


# --- the hub the tests share -----------------------------------------------------------------


@dataclass
class Rgw:
    endpoint: str
    conf: str
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)
    clients: dict[str, object] = field(default_factory=dict)
    session: object = field(default_factory=botocore.session.get_session)  # loads botocore's S3 model once

    def client(self, user: str):
        """A botocore S3 client of its own, to arrange and inspect objects the way sic-share does not."""
        if user not in self.clients:
            key_id, secret = self.credentials[user]
            self.clients[user] = self.session.create_client(
                "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key_id,
                aws_secret_access_key=secret)
        return self.clients[user]

    def fs(self, user: str) -> s3fs.S3FileSystem:
        key_id, secret = self.credentials[user]
        return s3fs.S3FileSystem(key=key_id, secret=secret, endpoint_url=self.endpoint, skip_instance_cache=True,
                                 client_kwargs={"region_name": REGION})

    def objects(self, prefix: str, bucket: str = BUCKET) -> dict[str, bytes]:
        """Every object under ``bucket/prefix/`` with its bytes, keyed below the bucket, as the reader sees it.

        Not as the owner: on RGW (as on S3 without BucketOwnerEnforced) an object
        belongs to whoever uploaded it, and the bucket's owner may not read it
        unless the bucket policy names them.
        """
        s3 = self.client(READER)
        found = {}
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found


@pytest.fixture(scope="session")
def rgw(walkthrough) -> Rgw:
    """The walkthrough's RGW and hub, with lab-b and a user the policy does not name added."""
    env_file = walkthrough.cwd / "rgw-state" / "env"
    if not env_file.exists():
        pytest.fail(f"docs/hub.md's walkthrough did not start RGW: see {walkthrough.transcript}")
    env = dict(line.split("=", 1) for line in env_file.read_text().split() if "=" in line)
    server = Rgw(env["AWS_ENDPOINT_URL"], env["CEPH_CONF"])
    for user in (OPERATOR, "lab-a", READER):  # made by the walkthrough
        keys = json.loads((walkthrough.cwd / f"{user}.json").read_text())["keys"][0]
        server.credentials[user] = (keys["access_key"], keys["secret_key"])
    for user in ("lab-b", OUTSIDER):
        keys = radosgw_admin(server.conf, "user", "create", f"--uid={user}", f"--display-name={user}")["keys"][0]
        server.credentials[user] = (keys["access_key"], keys["secret_key"])
    make_hub.make_hub(server.client(OPERATOR), BUCKET, list(PUBLISHERS), [READER])
    return server


@pytest.fixture
def as_user(rgw, monkeypatch):
    """Act as an RGW user through the usual AWS variables: ``as_user("reader")``, or a wrong secret."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", rgw.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")

    def switch(user: str, *, secret: str | None = None) -> None:
        key_id, real = rgw.credentials[user]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret if secret is not None else real)
        s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches instances, and their credentials

    switch("lab-a")
    yield switch
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def hub(as_user) -> str:
    return f"s3://{BUCKET}"


@pytest.fixture
def name() -> str:
    """This test's dataset name, unique on the session's bucket."""
    return f"crc{secrets.token_hex(4)}"


@pytest.fixture
def signed(tmp_path, publisher, name) -> Path:
    """A signed dataset lab-a/<name>@1 with two slides, whose key this test's home trusts."""
    root = make_dataset(tmp_path / "crc")
    sign_dataset(root, name=name, key_path=publisher.private)
    return root


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_code(exc: ClientError) -> tuple[str, int, str | None]:
    error = exc.response["Error"]
    return error.get("Code"), exc.response["ResponseMetadata"]["HTTPStatusCode"], error.get("Condition")


# --- the round trip a hub exists for -----------------------------------------------------------


def test_publish_ls_query_pull_through_a_named_hub(cli, tmp_path, rgw, as_user, name, signed, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the named hub carries the endpoint
    result = cli("hub", "add", "ceph", f"s3://{BUCKET}", "--endpoint-url", rgw.endpoint)
    assert result.code == 0, result.err
    result = cli("publish", signed, "--hub", "ceph")
    assert result.code == 0, result.err
    assert f"s3://{BUCKET}/lab-a/{name}/1" in result.out
    assert rgw.objects(f"lab-a/{name}") == published_objects(signed, f"lab-a/{name}/1")

    as_user(READER)
    entries = [e for e in json.loads(cli("ls", "--hub", "ceph", "--json").out) if e["name"] == name]
    assert [(e["publisher"], e["version"], e["slides"], e["patches"], e["trusted"]) for e in entries] == [
        ("lab-a", 1, 2, 400, True)]

    sql = (f"SELECT slide_id, count(*) AS n, len(any_value(embedding)) AS dim FROM patches('lab-a/{name}') "
           "GROUP BY 1 ORDER BY 1")
    result = cli("query", sql, "--hub", "ceph", "--json", "--verified-only")
    assert result.code == 0, result.err
    assert json.loads(result.out) == [{"slide_id": "s0", "n": 200, "dim": 16}, {"slide_id": "s1", "n": 200, "dim": 16}]
    result = cli("query", f"SELECT version, trusted FROM datasets WHERE name = '{name}'", "--hub", "ceph", "--json")
    assert json.loads(result.out) == [{"version": 1, "trusted": True}]

    dest = tmp_path / "pulled"
    result = cli("pull", f"lab-a/{name}", "--hub", "ceph", "--to", dest)
    assert result.code == 0, result.err
    assert files(dest) == files(signed)
    assert cli("verify", dest).code == 0


# --- who may write where: RGW's bucket policy ------------------------------------------------


def test_a_reader_cannot_publish(cli, rgw, as_user, hub, name, signed):
    as_user(READER)
    assert_one_line_error(cli("publish", signed, "--hub", hub), "refused the upload (AccessDenied)", "lab-a/")
    assert rgw.objects(f"lab-a/{name}") == {}
    with pytest.raises(ClientError) as info:  # nor delete what others published
        rgw.client(READER).delete_object(Bucket=BUCKET, Key=f"lab-a/{name}/1/{ENVELOPE}")
    assert error_code(info.value)[0] == "AccessDenied"


def test_a_publisher_is_confined_to_its_prefix(cli, tmp_path, rgw, as_user, hub, name):
    lab_b = make_publisher("lab-b", tmp_path / "keys-b")
    root = make_dataset(tmp_path / "crc-b", slides=1)
    sign_dataset(root, name=name, key_path=lab_b.private)
    as_user("lab-a")
    assert_one_line_error(cli("publish", root, "--hub", hub), "refused the upload (AccessDenied)", "lab-b/")
    assert rgw.objects(f"lab-b/{name}") == {}
    with pytest.raises(ClientError) as info:  # nor at the bucket's root
        rgw.client("lab-a").put_object(Bucket=BUCKET, Key=f"{name}.parquet", Body=b"x")
    assert error_code(info.value)[0] == "AccessDenied"

    as_user("lab-b")
    assert cli("publish", root, "--hub", hub).code == 0
    key = f"lab-b/{name}/1/{ENVELOPE}"
    with pytest.raises(ClientError) as info:  # a publisher cannot delete, even its own objects
        rgw.client("lab-b").delete_object(Bucket=BUCKET, Key=key)
    assert error_code(info.value)[0] == "AccessDenied"
    assert key in rgw.objects(f"lab-b/{name}")
    # The bucket's owner reads lab-b's objects only if the policy names it, but may delete them.
    with pytest.raises(ClientError) as info:
        rgw.client(OPERATOR).get_object(Bucket=BUCKET, Key=key)
    assert error_code(info.value)[0] == "AccessDenied"
    rgw.client(OPERATOR).delete_object(Bucket=BUCKET, Key=key)
    assert key not in rgw.objects(f"lab-b/{name}")


def test_users_the_policy_does_not_name_and_wrong_secrets_get_one_line(cli, tmp_path, as_user, hub, name, signed):
    as_user(OUTSIDER)
    assert_one_line_error(cli("ls", "--hub", hub), "refused the listing (AccessDenied)")
    assert_one_line_error(cli("pull", f"lab-a/{name}", "--hub", hub, "--to", tmp_path / "x"), "AccessDenied")
    as_user("lab-a", secret="not-the-secret")
    assert_one_line_error(cli("publish", signed, "--hub", hub), "SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY")
    assert_one_line_error(cli("ls", "--hub", hub), "SignatureDoesNotMatch")
    assert not (tmp_path / "x").exists()


# --- the conditional create the envelope relies on -------------------------------------------


def test_if_none_match_refuses_an_existing_key(rgw, as_user, name):
    """A 412 without <Condition>: s3fs reads it as EINVAL; sic-share's exclusive create as FileExistsError."""
    from sic_share.hub._hub import _create_exclusive

    s3 = rgw.client("lab-a")
    key = f"lab-a/{name}/1/{ENVELOPE}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"second", IfNoneMatch="*")
    assert error_code(info.value) == ("PreconditionFailed", 412, None)

    fs = rgw.fs("lab-a")
    with pytest.raises(OSError) as raw:  # what Pacific's 412 looks like through s3fs
        fs.pipe_file(f"{BUCKET}/{key}", b"third", mode="create")
    assert not isinstance(raw.value, FileExistsError)
    with pytest.raises(FileExistsError):
        _create_exclusive(fs, f"{BUCKET}/{key}", b"fourth")
    _create_exclusive(fs, f"{BUCKET}/lab-a/{name}/2/{ENVELOPE}", b"new")  # a new key is created
    assert rgw.objects(f"lab-a/{name}") == {key: b"first", f"lab-a/{name}/2/{ENVELOPE}": b"new"}


def test_the_envelope_is_one_conditional_put_because_rgw_ignores_it_on_multipart(rgw, as_user, hub, name, signed):
    from sic_share.hub import publish

    # The server fact: CompleteMultipartUpload with If-None-Match overwrites an existing key.
    s3 = rgw.client("lab-a")
    key = f"lab-a/{name}/mpu"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"first")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"second")["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, IfNoneMatch="*",
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"second"

    # So sic-share writes the envelope with one PutObject carrying If-None-Match, nothing else.
    calls = []
    real, real_sync = s3fs.S3FileSystem._call_s3, s3fs.S3FileSystem.call_s3

    def record(method, kwargs):
        if str(kwargs.get("Key", "")).endswith(ENVELOPE):
            calls.append((method, kwargs.get("IfNoneMatch")))

    async def recording(self, method, *args, **kwargs):
        record(method, kwargs)
        return await real(self, method, *args, **kwargs)

    def recording_sync(self, method, *args, **kwargs):
        record(method, kwargs)
        return real_sync(self, method, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s3fs.S3FileSystem, "_call_s3", recording)
        mp.setattr(s3fs.S3FileSystem, "call_s3", recording_sync)
        publish(signed, hub)
    assert [c for c in calls if c[0] not in ("head_object", "get_object")] == [("put_object", "*")], calls


def test_two_concurrent_publishers_of_one_version_exactly_one_wins(tmp_path, rgw, as_user, hub, publisher):
    """20 rounds: two publishers of lab-a/<name>@1 with different data race; one wins, its data intact.

    Both pass the existence check and upload their files, then fire the
    conditional PUT at once (a barrier). The server decides: exactly one gets
    200, the other 412 and ``AlreadyPublishedError``; the envelope on the hub is
    the winner's, every object of the winner is on the hub byte for byte (the
    loser's data went under its own manifest's sha256, which the publisher policy
    does not let it delete), and the version pulls and verifies. Before hub layout
    1.1 the loser's slides overwrote the winner's in about half the rounds.
    """
    from sic_share.errors import AlreadyPublishedError
    from sic_share.hub import _hub, publish, pull

    real_create = _hub._create_exclusive
    barrier = threading.Barrier(2)

    def together(fs, path, data):
        barrier.wait(timeout=30)
        real_create(fs, path, data)

    def attempt(root: Path) -> str:
        try:
            publish(root, hub)
            return "won"
        except AlreadyPublishedError:
            return "refused"

    winners = []
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(max_workers=2) as pool:
        mp.setattr(_hub, "_create_exclusive", together)
        for round_ in range(20):
            name = f"race{secrets.token_hex(4)}"
            roots = []
            for tag, seed in (("a", 2 * round_), ("b", 2 * round_ + 1)):
                root = make_dataset(tmp_path / f"{round_}{tag}", seed=seed)  # same slide ids, other values
                sign_dataset(root, name=name, key_path=publisher.private, version=1)
                roots.append(root)
            barrier.reset()
            outcomes = list(pool.map(attempt, roots))
            assert sorted(outcomes) == ["refused", "won"], (round_, outcomes)
            winner = roots[outcomes.index("won")]
            stored = rgw.objects(f"lab-a/{name}")
            expected = published_objects(winner, f"lab-a/{name}/1")
            assert {k: stored.get(k) for k in expected} == expected, round_
            _, dest = pull(f"lab-a/{name}", hub, to=tmp_path / f"pulled{round_}")
            assert (dest / MANIFEST).read_bytes() == (winner / MANIFEST).read_bytes()
            assert files(dest) == files(winner)
            winners.append(outcomes.index("won"))
    assert len(winners) == 20


# --- a versioned bucket --------------------------------------------------------------------


def test_a_versioned_bucket_is_refused_with_one_line(cli, rgw, as_user, name, signed):
    bucket = f"versioned-{secrets.token_hex(3)}"
    owner = rgw.client(OPERATOR)
    make_hub.make_hub(owner, bucket, ["lab-a"], [READER])
    owner.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    # Why: with versioning enabled RGW ignores If-None-Match and overwrites.
    owner.put_object(Bucket=bucket, Key="probe", Body=b"first")
    owner.put_object(Bucket=bucket, Key="probe", Body=b"second", IfNoneMatch="*")
    assert owner.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"second"

    assert_one_line_error(cli("publish", signed, "--hub", f"s3://{bucket}"),
                          f"the hub bucket {bucket} has versioning enabled", f"suspend versioning on {bucket}")
    assert rgw.objects("lab-a", bucket=bucket) == {}
    with pytest.raises(ValueError, match=f"bucket {bucket} has versioning enabled"):  # the operator's tool too
        make_hub.make_hub(owner, bucket, ["lab-a"], [READER])

    # Suspended, RGW honours the condition again: publish works and stays immutable.
    owner.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert cli("publish", signed, "--hub", f"s3://{bucket}").code == 0
    assert_one_line_error(cli("publish", signed, "--hub", f"s3://{bucket}"), "already published")


# --- attacks on RGW (issue 19): what a co-tenant or a bucket writer can do to a query, a crash mid-publish ---


def test_a_co_tenant_plant_on_rgw_is_ignored_by_query(tmp_path, rgw, as_user, hub, name, signed):
    """lab-b, confined to lab-b/ by the bucket policy, plants lab-b/NAME/99 claiming lab-a/NAME@99."""
    from sic_share.hub import publish
    from sic_share.query import run_query

    publish(signed, hub)
    lab_b = make_publisher("lab-b", tmp_path / "keys-b", trust=False)
    plant = make_dataset(tmp_path / "plant", slides=1, n=7, seed=99)
    sign_dataset(plant, name=name, key_path=lab_b.private, publisher="lab-a", version=99)
    scratch = tmp_path / "scratch"
    publish(plant, str(scratch))
    client = rgw.client("lab-b")
    for path in sorted((scratch / "lab-a" / name / "99").rglob("*")):
        if path.is_file():
            rel = path.relative_to(scratch / "lab-a" / name / "99").as_posix()
            client.put_object(Bucket=BUCKET, Key=f"lab-b/{name}/99/{rel}", Body=path.read_bytes())

    as_user(READER)
    sql = f"SELECT slide_id, count(*) AS n FROM patches('lab-a/{name}') GROUP BY 1 ORDER BY 1"
    assert run_query(sql, hub).to_pylist() == [{"slide_id": "s0", "n": 200}, {"slide_id": "s1", "n": 200}]
    listed = run_query(f"SELECT publisher, version FROM datasets WHERE name = '{name}'", hub, include_untrusted=True)
    assert listed.to_pylist() == [{"publisher": "lab-a", "version": 1}]


def test_a_slide_rewritten_on_rgw_after_publish_is_refused_by_query(cli, rgw, as_user, hub, name, signed):
    from sic_share.hub import publish

    publish(signed, hub)
    key = next(k for k in published_objects(signed, f"lab-a/{name}/1") if k.endswith("slides/s0.parquet"))
    rgw.client("lab-a").put_object(Bucket=BUCKET, Key=key, Body=rewritten(signed / "slides" / "s0.parquet"))
    as_user(READER)
    assert_one_line_error(cli("query", f"SELECT sum(x) FROM patches('lab-a/{name}')", "--hub", hub),
                          f"slides/s0.parquet of lab-a/{name}@1 does not match its signed digests")
    assert_one_line_error(cli("pull", f"lab-a/{name}", "--hub", hub, "--to", str(Path(hub).name) + "-x"),
                          "slides/s0.parquet")


def _publish_then_die(root: str, hub: str, env: dict[str, str]) -> None:
    import signal as signals

    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    from sic_share.hub import _hub

    def die(fs, path, data):  # every data object is up: the process dies before the envelope
        os.kill(os.getpid(), signals.SIGKILL)

    _hub._create_exclusive = die
    _hub.publish(root, hub)


def test_kill_9_during_publish_to_rgw_leaves_nothing_visible_and_the_rerun_completes(tmp_path, rgw, as_user, hub,
                                                                                   name, signed):
    import multiprocessing
    import signal as signals

    from sic_share.hub import list_datasets, publish, pull

    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION", "SIC_SHARE_HOME")}
    worker = multiprocessing.get_context("spawn").Process(target=_publish_then_die, args=(str(signed), hub, env))
    worker.start()
    worker.join(timeout=120)
    assert worker.exitcode == -signals.SIGKILL
    stored = rgw.objects(f"lab-a/{name}")
    assert stored and f"lab-a/{name}/1/{ENVELOPE}" not in stored  # data went up, the commit did not
    assert [e for e in list_datasets(hub) if e.name == name] == []

    publish(signed, hub)
    assert rgw.objects(f"lab-a/{name}") == published_objects(signed, f"lab-a/{name}/1")
    _, dest = pull(f"lab-a/{name}", hub, to=tmp_path / "pulled")
    assert files(dest) == files(signed)
