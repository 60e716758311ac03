"""`data download` against a real HTTP server on 127.0.0.1 serving a tarball of the bundled sample.

The handler honours ``Range`` (206 + Content-Range) and can drop the connection after N bytes
of a response, which is how an interrupted download is produced.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from phonecli.cli import main
from phonecli.data import DownloadError, download_corpus
from phonecli.data.download import MARKER
from phonecli.data.prepare import sample_corpus_dir


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.log.append(self.headers.get("Range"))
        if self.path != "/speechocean762.tar.gz":
            self.send_error(404)
            return
        data = srv.payload
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and srv.honour_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/gzip")
        self.end_headers()
        if srv.cuts:
            self.wfile.write(body[: srv.cuts.pop(0)])   # announce everything, send a part, hang up
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tarball():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(sample_corpus_dir(), arcname="speechocean762")
    return buf.getvalue()


@pytest.fixture
def server(tarball):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload, srv.log, srv.cuts, srv.honour_range = tarball, [], [], True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/speechocean762.tar.gz"
    yield srv
    srv.shutdown()
    srv.server_close()


def _same_tree_as_sample(root) -> None:
    src = sample_corpus_dir()
    assert (root / "resource/scores.json").read_bytes() == (src / "resource/scores.json").read_bytes()
    assert (root / "train/wav.scp").read_bytes() == (src / "train/wav.scp").read_bytes()
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_download_extracts_and_rerun_is_a_no_op(server, tarball, tmp_path):
    to = tmp_path / "corpora"
    md5 = hashlib.md5(tarball).hexdigest()
    root = download_corpus(to, server.url, md5=md5, progress=False)
    assert root == (to / "speechocean762").resolve()
    _same_tree_as_sample(root)
    marker = json.loads((to / MARKER).read_text())
    assert marker == {"url": server.url, "md5": md5, "md5_checked": True, "bytes": len(tarball),
                      "size_checked": True, "root": "speechocean762"}
    assert not (to / "speechocean762.tar.gz").exists() and not (to / "speechocean762.tar.gz.part").exists()
    assert server.log == [None]
    assert download_corpus(to, server.url, progress=False) == root     # no request at all
    assert server.log == [None]
    with pytest.raises(DownloadError, match="came from an archive with MD5"):
        download_corpus(to, server.url, md5="0" * 32, progress=False)


def test_interrupted_download_resumes_with_range(server, tarball, tmp_path):
    to = tmp_path / "d"
    cut = len(tarball) // 3
    server.cuts = [cut]
    with pytest.raises(DownloadError, match=rf"interrupted at {cut} bytes .*re-run the same command to resume"):
        download_corpus(to, server.url, retries=0, progress=False)
    part = to / "speechocean762.tar.gz.part"
    assert part.stat().st_size == cut and not (to / MARKER).exists()
    root = download_corpus(to, server.url, md5=hashlib.md5(tarball).hexdigest(), retries=0, progress=False)
    assert server.log == [None, f"bytes={cut}-"]                       # the second request only asked for the rest
    _same_tree_as_sample(root)


def test_dropped_connections_are_resumed_automatically(server, tarball, tmp_path):
    server.cuts = [1000, 5000]
    root = download_corpus(tmp_path / "d", server.url, retries=3, backoff=0, progress=False)
    assert server.log == [None, "bytes=1000-", "bytes=6000-"]
    marker = json.loads((tmp_path / "d" / MARKER).read_text())
    assert marker["md5"] == hashlib.md5(tarball).hexdigest() and marker["md5_checked"] is False
    _same_tree_as_sample(root)


def test_server_ignoring_range_restarts_from_zero(server, tarball, tmp_path):
    server.honour_range = False
    server.cuts = [4096]
    root = download_corpus(tmp_path / "d", server.url, retries=1, backoff=0, progress=False)
    assert server.log == [None, "bytes=4096-"]   # asked to resume, got 200: started over, no corruption
    _same_tree_as_sample(root)


def test_complete_part_file_is_recognized(server, tarball, tmp_path):
    to = tmp_path / "d"
    to.mkdir()
    (to / "speechocean762.tar.gz.part").write_bytes(tarball)          # crashed right before the rename
    root = download_corpus(to, server.url, progress=False)
    assert server.log == [f"bytes={len(tarball)}-"]                   # 416 with the full size: nothing to fetch
    _same_tree_as_sample(root)


def test_checksum_mismatch_and_http_errors(server, tmp_path):
    with pytest.raises(DownloadError, match=r"MD5 [0-9a-f]{32} does not match the expected 0{32}"):
        download_corpus(tmp_path / "a", server.url, md5="0" * 32, progress=False)
    assert not (tmp_path / "a" / MARKER).exists() and not (tmp_path / "a" / "speechocean762.tar.gz").exists()
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_corpus(tmp_path / "b", server.url.replace(".tar.gz", ".zip"), progress=False)


def test_cli_download_then_prepare(server, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["data", "download", "--to", str(tmp_path / "c"), "--url", server.url])
    assert r.exit_code == 0, r.output
    root = r.stdout.strip().splitlines()[-1]
    assert root == str((tmp_path / "c" / "speechocean762").resolve())
    r = runner.invoke(main, ["data", "prepare", root, "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["data", "download", "--to", str(tmp_path / "x"), "--url", "http://127.0.0.1:9/none.tar.gz",
                             "--retries", "0"])
    assert r.exit_code == 1 and "download interrupted at 0 bytes" in r.output
