"""The annotation app against other web pages: DNS rebinding, cross-site changes, oversized and malformed bodies.

Each test starts ``sic-share app`` as a user would (a subprocess on a free loopback port)
and talks raw HTTP to it, sending the headers a browser on another site would send. The
app's own page still working in Chromium, token and all, is in test_app_browser.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, LOCAL_PUBLISHER, make_dataset, sign_local
from sic_share.app._binary import unpack
from sic_share.dataset import ModelInfo, Patching, SlideMetadata, write_slide
from sic_share.signing import TrustStore

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

ATTACKER = "http://attacker.example"
N_PATCHES = 400


class App:
    """``sic-share app ...`` in a subprocess; ``port`` once it listens, ``pid`` to read its memory."""

    def __init__(self, args: list, home: Path) -> None:
        env = {**os.environ, "SIC_SHARE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "sic_share.cli", "app", *map(str, args),
                                      "--port", "0", "--no-browser"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"the app did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(match.group(1))
        self.pid = self.proc.pid
        self.own = f"127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | str | None = None, *, host: str | None = None,
                **headers: str) -> tuple[int, dict[str, str], bytes]:
        """One request with exactly these headers (``content_type=...`` is ``Content-Type``); Host defaults to the app's."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Host": self.own if host is None else host, **{k.replace("_", "-").title(): v for k, v in headers.items()}}
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def token(self) -> str:
        """The session token, as the page reads it from the app's own index page."""
        status, _, page = self.request("GET", "/")
        assert status == 200
        found = re.search(rb'<meta name="sic-token" content="([^"]+)"', page)
        return found.group(1).decode() if found else ""

    def change(self, path: str, payload: object, **headers: str) -> tuple[int, dict[str, str], bytes]:
        """A change as the app's own page makes it (own Origin, the token, JSON), headers overridable."""
        sent = {"origin": f"http://{self.own}", "content_type": "application/json", "x_sic_token": self.token(),
                **headers}
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.request("POST", path, body, **sent)

    def revision(self) -> tuple[int, list[str], bytes]:
        """The session's change counter, class names and seeds (undo restores the last two, not the first)."""
        status, _, body = self.request("GET", "/api/state.bin")
        assert status == 200
        meta, arrays = unpack(body)
        return meta["revision"], [c["name"] for c in meta["classes"]], arrays["seeds"].tobytes()

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def _home(root: Path, key) -> Path:
    home = root / "home"
    TrustStore(home / "config" / "trust.json").add(key.public, LOCAL_PUBLISHER)
    return home


@pytest.fixture(scope="module")
def app(tmp_path_factory, local_key):
    """The app over a 400-patch slide, without an image."""
    root = tmp_path_factory.mktemp("app-security")
    dataset = sign_local(make_dataset(root / "crc", slides=1, n=N_PATCHES, dim=16), local_key)
    running = App([dataset], _home(root, local_key))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def with_image(tmp_path_factory, local_key):
    """The app over the real slide tests/data/cmu_small_region.svs: tiles are real pixels."""
    pytest.importorskip("openslide")
    root = tmp_path_factory.mktemp("app-security-image")
    xs, ys = np.arange(128, 2220 - 127, 128), np.arange(128, 2967 - 127, 128)
    coords = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.int32)
    truth = (coords[:, 0] > 1100).astype(np.int8)
    emb = np.random.default_rng(0).normal(0, 1, (len(coords), 16)) + truth[:, None] * 4
    meta = SlideMetadata(ModelInfo("test-model", 16, "test"), Patching(256, 256, 0.5, 0.5, 128), ("normal", "tumour"))
    write_slide(root / "cmu" / "slides" / "c0.parquet", slide_id="c0", metadata=meta, coords=coords,
                embeddings=emb, labels=truth)
    running = App([sign_local(root / "cmu", local_key), "--image", DATA / "cmu_small_region.svs"],
                  _home(root, local_key))
    yield running, truth
    running.stop()


def _error(body: bytes) -> str:
    message = json.loads(body)["error"]
    assert isinstance(message, str) and "\n" not in message
    return message


# -- DNS rebinding: a foreign Host reads nothing ---------------------------------------------------


def test_a_foreign_host_reads_no_page_tile_array_or_export(with_image):
    app, truth = with_image
    seeds = [int(np.flatnonzero(truth == 0)[0]), int(np.flatnonzero(truth == 1)[0])]
    for cls, patch in enumerate(seeds):  # so that an export has something to give
        assert app.change("/api/seeds", {"op": "add", "class": cls, "indices": [patch]})[0] == 200
    paths = ["/", "/tiles/slide_files/12/0_0.jpeg", "/tiles/slide.dzi", "/api/arrays.bin", "/api/state.bin",
             "/api/info", "/api/export?format=geojson", "/api/seeds/save?format=csv", "/map.png", "/static/app.js"]
    for path in paths:  # the app's own address answers...
        status, headers, body = app.request("GET", path)
        assert status == 200, (path, body[:200])
    assert app.request("GET", "/tiles/slide_files/12/0_0.jpeg")[2][:3] == b"\xff\xd8\xff"  # real pixels
    rebound = f"rebind.attacker.example:{app.port}"
    for host in (rebound, f"127.0.0.1:{app.port + 1}", "127.0.0.1", f"localhost.:{app.port}",
                 f"127.0.0.2:{app.port}", "", "a b"):
        for path in paths:  # ...a page that points its own name at 127.0.0.1 gets none of it
            status, headers, body = app.request("GET", path, host=host)
            assert status == 400, (host, path, status)
            assert "is not this app's address" in _error(body) and "--allow-remote" in _error(body)
            assert headers["content-type"] == "application/json" and b"\xff\xd8" not in body
    for host in (f"localhost:{app.port}", f"[::1]:{app.port}", f"LOCALHOST:{app.port}"):  # loopback, with the port
        assert app.request("GET", "/tiles/slide_files/12/0_0.jpeg", host=host)[0] == 200, host
    for path in paths:  # and no other site may even embed what it answers (an <img> of a tile)
        assert app.request("GET", path)[1]["cross-origin-resource-policy"] == "same-origin"


def test_allow_remote_adds_the_names_it_is_given(tmp_path, local_key):
    dataset = sign_local(make_dataset(tmp_path / "crc", slides=1, n=100, dim=16), local_key)
    app = App([dataset, "--allow-remote", "workstation.lab", "--allow-remote", "localhost:9000"],
              _home(tmp_path, local_key))
    try:
        for host in (f"workstation.lab:{app.port}", "WORKSTATION.lab:%d" % app.port, "localhost:9000",
                     f"localhost:{app.port}"):
            assert app.request("GET", "/api/arrays.bin", host=host)[0] == 200, host
        for host in (f"workstation.lab:{app.port + 1}", "workstation.lab", f"evil.workstation.lab:{app.port}",
                     f"workstation.lab.attacker.example:{app.port}", "127.0.0.1:9000"):
            assert app.request("GET", "/api/arrays.bin", host=host)[0] == 400, host
        # a change through such a name comes from that name's origin
        own = f"workstation.lab:{app.port}"
        status, _, _ = app.change("/api/undo", {}, host=own, origin=f"http://{own}")
        assert status == 200
    finally:
        app.stop()


def test_a_refused_host_changes_nothing_either(app):
    before = app.revision()
    status, _, body = app.change("/api/seeds", {"op": "add", "class": 0, "indices": [1]},
                                 host=f"rebind.attacker.example:{app.port}",
                                 origin=f"http://rebind.attacker.example:{app.port}")
    assert status == 400 and "is not this app's address" in _error(body)
    assert app.revision() == before


# -- cross-site changes: refused, the session unchanged ---------------------------------------------


def test_a_cross_site_post_changes_neither_seeds_nor_classes(app):
    before = app.revision()
    seeds = json.dumps({"op": "add", "class": 0, "indices": [0, 1, 2]})
    classes = json.dumps({"op": "add", "name": "pwned"})
    for path, body in (("/api/seeds", seeds), ("/api/classes", classes), ("/api/undo", "{}")):
        # what a form or a no-cors fetch on another site sends: its Origin, text/plain, no token
        status, _, answer = app.request("POST", path, body, origin=ATTACKER, content_type="text/plain")
        assert status == 403 and "a change from 'http://attacker.example' is refused" in _error(answer)
        # even with the token (which no other site can read) and JSON
        status, _, answer = app.change(path, body, origin=ATTACKER)
        assert status == 403 and "only the app's own page" in _error(answer)
    for method in ("PUT", "DELETE", "PATCH"):
        assert app.request(method, "/api/seeds", seeds, origin=ATTACKER, content_type="text/plain")[0] == 403
    # another origin on this machine (another local app's page), a sandboxed page, and no Origin but
    # Sec-Fetch-Site saying another site sent it
    for headers in ({"origin": f"http://127.0.0.1:{app.port + 1}"}, {"origin": f"http://localhost:{app.port}"},
                    {"origin": "null"}, {"origin": None, "sec_fetch_site": "cross-site"},
                    {"origin": None, "sec_fetch_site": "same-site"}):
        sent = {k: v for k, v in headers.items() if v is not None}
        token = app.token()
        status, _, answer = app.request("POST", "/api/seeds", seeds, content_type="application/json",
                                        x_sic_token=token, **sent)
        assert status == 403 and "is refused" in _error(answer), headers
    assert app.revision() == before
    assert "pwned" not in app.revision()[1]


def test_a_change_needs_this_sessions_token_and_json(app):
    before = app.revision()
    seeds = {"op": "add", "class": 0, "indices": [3]}
    own = f"http://{app.own}"
    status, _, body = app.request("POST", "/api/seeds", json.dumps(seeds), origin=own, content_type="application/json")
    assert status == 403 and "without the session token" in _error(body)
    status, _, body = app.change("/api/seeds", seeds, x_sic_token="x" * 43)
    assert status == 403 and "is not this app's: reload the page" in _error(body)
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        status, _, body = app.change("/api/seeds", seeds, content_type=media)
        assert status == 415 and "must be sent as application/json" in _error(body), media
    assert app.revision() == before
    # the page's own change: its Origin, the token, JSON (a charset is fine)
    status, _, body = app.change("/api/seeds", seeds, content_type="application/json; charset=utf-8")
    assert status == 200 and unpack(body)[0]["revision"] == before[0] + 1
    # and a change without Origin or Sec-Fetch-Site (curl, a script) still needs the token
    assert app.request("POST", "/api/undo", "{}", content_type="application/json")[0] == 403
    status, _, _ = app.request("POST", "/api/undo", "{}", content_type="application/json", x_sic_token=app.token())
    assert status == 200 and app.revision()[1:] == before[1:]


def test_a_seeds_file_is_loaded_as_json_text(app):
    before = app.revision()
    csv = "x,y,label\n128,128,stroma\n"
    status, _, body = app.request("POST", "/api/seeds/load?name=s.csv", csv, origin=f"http://{app.own}",
                                  content_type="text/csv", x_sic_token=app.token())
    assert status == 415 and app.revision() == before
    status, _, body = app.change("/api/seeds/load", {"name": "s.csv", "text": csv})
    assert status == 200 and "stroma" in [c["name"] for c in unpack(body)[0]["classes"]]
    status, _, body = app.change("/api/seeds/load", {"name": "s.geojson", "text": "[" * 100_000})
    assert status == 400 and "nested too deeply" in _error(body)
    assert app.request("POST", "/api/undo", "{}", content_type="application/json", x_sic_token=app.token())[0] == 200
    assert app.revision()[1:] == before[1:]


# -- bodies: bounded before they are held -----------------------------------------------------------


def _send_and_read(app: App, head: bytes, chunks, seconds: float = 60) -> tuple[bytes, float]:
    """Send ``head`` then each chunk (until the server stops reading) while reading its answer; (answer, seconds)."""
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=seconds)
    answer = bytearray()
    done = threading.Event()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                answer.extend(data)
        except OSError:
            pass
        done.set()

    start = time.perf_counter()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        sock.sendall(head)
        for chunk in chunks:
            if done.is_set() or b"\r\n\r\n" in answer:
                break
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the server answered and closed while the rest was on its way
        pass
    done.wait(seconds)
    elapsed = time.perf_counter() - start
    sock.close()
    return bytes(answer), elapsed


def _head(app: App, path: str, token: str, length: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {app.own}\r\nOrigin: http://{app.own}\r\n"
            f"Content-Type: application/json\r\nX-Sic-Token: {token}\r\n{length}\r\n").encode()


def test_an_80_mb_body_is_refused_before_the_server_holds_it(app):
    token = app.token()
    before_revision = app.revision()
    size = 80 << 20
    piece = b"0," * (1 << 19)  # 1 MiB of a valid JSON array's items
    app.request("GET", "/api/state.bin")
    before = app.rss_mib()
    # announced: refused from Content-Length alone, at once
    answer, seconds = _send_and_read(app, _head(app, "/api/seeds", token, f"Content-Length: {size}\r\n"),
                                     [b'{"class":0,"indices":[', *[piece] * 8])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the app's limit" in answer and seconds < 5
    # streamed without a length (chunked): refused once the body passes the limit
    chunks = [b'{"class":0,"indices":[' + piece] + [piece] * 80
    framed = (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    answer, seconds = _send_and_read(app, _head(app, "/api/seeds", token, "Transfer-Encoding: chunked\r\n"), framed)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert seconds < 10
    # a seeds file has its own, larger limit: 80 MB is over it too
    answer, _ = _send_and_read(app, _head(app, "/api/seeds/load", token, f"Content-Length: {size}\r\n"), [piece])
    assert answer.startswith(b"HTTP/1.1 413")
    # without the token the body is not even read
    answer, seconds = _send_and_read(app, _head(app, "/api/seeds", "", f"Content-Length: {size}\r\n"), [piece])
    assert answer.startswith(b"HTTP/1.1 403") and seconds < 5
    grown = app.rss_mib() - before
    assert grown < 40, f"the server grew by {grown:.0f} MiB"
    assert app.revision() == before_revision
    assert app.change("/api/seeds", {"class": 0, "indices": [5]})[0] == 200  # and it still serves changes
    assert app.request("POST", "/api/undo", "{}", content_type="application/json", x_sic_token=token)[0] == 200
    assert app.revision()[1:] == before_revision[1:]


# -- numbers and types: 400 with the reason, never 500 ---------------------------------------------


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/api/seeds", '{"class":0,"indices":[1e308]}', "patch index 1e+308"),
    ("/api/seeds", '{"class":0,"indices":[100000000000000000000000000000000]}', "patch index 1000000000"),
    ("/api/seeds", '{"class":0,"indices":[%s]}' % ("9" * 4000), "patch index 9999"),
    ("/api/seeds", '{"class":0,"indices":[%s]}' % ("9" * 5000), "not JSON"),
    ("/api/seeds", '{"class":0,"indices":[NaN]}', "NaN, which is not a number"),
    ("/api/seeds", '{"class":0,"indices":[-Infinity]}', "-Infinity, which is not a number"),
    ("/api/seeds", '{"class":0,"indices":[-1]}', "patch index -1"),
    ("/api/seeds", '{"class":0,"indices":[400]}', "from 0 to 399"),
    ("/api/seeds", '{"class":0,"indices":[1.5]}', "patch index 1.5"),
    ("/api/seeds", '{"class":0,"indices":[2.0]}', "patch index 2.0"),
    ("/api/seeds", '{"class":0,"indices":[true]}', "patch index True"),
    ("/api/seeds", '{"class":0,"indices":["3"]}', "patch index '3'"),
    ("/api/seeds", '{"class":0,"indices":[null]}', "patch index None"),
    ("/api/seeds", '{"class":0,"indices":[[1]]}', "patch index [1]"),
    ("/api/seeds", '{"class":0,"indices":5}', "should be a list of patch indices"),
    ("/api/seeds", '{"class":0,"indices":[%s]}' % ",".join(["0"] * 401), "401 entries, more than the slide's 400"),
    ("/api/seeds", '{"class":1e308,"indices":[0]}', "class 1e+308"),
    ("/api/seeds", '{"class":100000000000000000000000000000,"indices":[0]}', "is not one of the"),
    ("/api/seeds", '{"class":-1,"indices":[0]}', "class -1 is not one of the 2 classes"),
    ("/api/seeds", '{"class":true,"indices":[0]}', "class True"),
    ("/api/seeds", '{"class":"0","indices":[0]}', "class '0'"),
    ("/api/seeds", '{"op":"explode","indices":[0]}', "op 'explode' is not one of add, remove"),
    ("/api/seeds", "[" * 100_000, "nested too deeply"),
    ("/api/seeds", "[1, 2]", "should be a JSON object"),
    ("/api/seeds", b'{"class":0,"indices":[0]}\xff', "not JSON"),
    ("/api/classes", '{"op":"add","name":123}', "name should be a string"),
    ("/api/classes", '{"op":"add","name":"x","color":[1e308,0,0]}', "color should be a string"),
    ("/api/classes", '{"op":"add","name":"%s"}' % ("x" * 100), "more than 64"),
    ("/api/classes", '{"op":"rename","index":1e308,"name":"x"}', "index 1e+308"),
    ("/api/classes", '{"op":"rename","index":NaN,"name":"x"}', "NaN"),
    ("/api/classes", '{"op":"drop"}', "op 'drop' is not one of add, rename"),
    ("/api/method", '{"method":["sic"]}', "method should be a string"),
    ("/api/method", '{"method":"sic","rule":5}', "rule should be a string"),
    ("/api/seeds/load", '{"name":"s.csv","text":5}', "text should be a string"),
])
def test_bad_numbers_and_types_are_400_with_the_reason(app, path, body, says):
    before = app.revision()
    status, headers, answer = app.change(path, body)
    assert status == 400 and headers["content-type"] == "application/json", (status, answer[:300])
    message = _error(answer)
    assert says in message and len(message) < 300, message
    assert app.revision() == before
