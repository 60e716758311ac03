"""`phonecli data download --corpus librispeech` against a real HTTP server on 127.0.0.1: resumable
after a dropped connection, SHA-256 checked, idempotent, lexicons fetched beside the audio."""

from __future__ import annotations

import hashlib
import io
import random
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phonecli.data.librispeech import LEXICONS, MARKER, download_librispeech
from phonecli.errors import DownloadError


class _Files(BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` with Range support; ``server.cut`` bytes then hang up, once."""

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut and self.path.endswith(".tar.gz"):
            self.wfile.write(body[:srv.cut])
            srv.cut = 0
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _tarball(part: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in (("19/100/19-100.trans.txt", f"19-100-0000 HELLO {part}\n".encode()),
                              ("19/100/19-100-0000.flac", random.Random(part).randbytes(20000))):  # incompressible
            info = tarfile.TarInfo(f"LibriSpeech/{part}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.files = {f"/12/{p}.tar.gz": _tarball(p) for p in ("dev-clean", "test-clean")}
    srv.files.update({f"/lex/{name}": f"HELLO HH AH0 L OW1 {i}\n".encode() for i, name in enumerate(LEXICONS)})
    srv.log, srv.cut = [], 0
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_resumes_checks_sha256_and_is_idempotent(server, tmp_path):
    sums = {p: hashlib.sha256(server.files[f"/12/{p}.tar.gz"]).hexdigest() for p in ("dev-clean", "test-clean")}
    server.cut = 700                     # the first archive's connection drops after 700 bytes
    root = download_librispeech(tmp_path, parts=("dev-clean", "test-clean"), mirror=f"{server.base}/12",
                                lexicon_mirror=f"{server.base}/lex", sha256=sums, backoff=0.01)
    assert root == (tmp_path / "LibriSpeech").resolve()
    assert (root / "dev-clean" / "19" / "100" / "19-100.trans.txt").exists()
    assert [r for p, r in server.log if p == "/12/dev-clean.tar.gz"] == [None, "bytes=700-"]   # resumed
    assert all((root / name).exists() for name in LEXICONS)
    assert not list(tmp_path.glob("*.tar.gz*"))                 # archives removed once extracted
    n = len(server.log)
    download_librispeech(tmp_path, parts=("dev-clean", "test-clean"), mirror=f"{server.base}/12",
                         lexicon_mirror=f"{server.base}/lex", sha256=sums)
    assert len(server.log) == n                                 # a re-run fetches nothing
    assert '"sha256_checked": true' in (tmp_path / MARKER).read_text()


def test_download_refuses_a_checksum_mismatch(server, tmp_path):
    with pytest.raises(DownloadError, match=r"SHA-256 .* does not match the expected 0+; .*re-run"):
        download_librispeech(tmp_path, parts=("dev-clean",), mirror=f"{server.base}/12",
                             lexicon_mirror=f"{server.base}/lex", sha256={"dev-clean": "0" * 64})
    assert not (tmp_path / "dev-clean.tar.gz").exists()


def test_download_cli_points_at_the_published_checksums():
    from click.testing import CliRunner

    from phonecli.cli import main
    from phonecli.data.librispeech import ARCHIVE_SHA256

    assert set(ARCHIVE_SHA256) == {"train-clean-100", "dev-clean", "test-clean"}
    res = CliRunner().invoke(main, ["data", "download", "--help"])
    assert "--corpus" in res.output and "librispeech" in res.output
