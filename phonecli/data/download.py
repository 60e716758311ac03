"""``phonecli data download``: fetch and unpack SpeechOcean762 (OpenSLR resource 101).

* Resumable: bytes go to ``DIR/<archive>.part``; a re-run (or an automatic retry after a
  dropped connection) asks for the rest with an HTTP ``Range`` request and appends. A server
  that ignores ``Range`` (answers 200) makes us start over rather than corrupt the file.
* Checked: the final size must equal the server's ``Content-Length`` / ``Content-Range`` total;
  the MD5 must equal ``--md5`` when given (OpenSLR publishes none for resource 101, so by
  default the MD5 is computed, printed and recorded, not compared).
* Extracted in place with tarfile's ``data`` filter (no absolute paths, no links out of DIR).
* Idempotent: ``DIR/.phonecli-download.json`` is written last; when it exists for the same URL
  a re-run returns at once.

urllib is enough here (one file, Range, Content-Length); no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from phonecli.errors import DownloadError  # noqa: F401  (re-exported)

DEFAULT_URL = "https://www.openslr.org/resources/101/speechocean762.tar.gz"
MARKER = ".phonecli-download.json"
CHUNK = 1 << 20


class _Short(Exception):
    """The connection ended before the announced size."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/1000"`` -> (100, 1000); ``"bytes */1000"`` -> (None, 1000)."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _fetch(url: str, part: Path, *, timeout: float, retries: int, backoff: float, progress: bool | None) -> int | None:
    """Download ``url`` into ``part`` (resuming what is there). Returns the verified total size
    in bytes, or None when the server announced no length."""
    from tqdm import tqdm

    from phonecli import __version__

    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"phonecli/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                if offset and resp.status == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != offset:
                        raise DownloadError(f"{url}: server resumed at byte {start}, not {offset}; "
                                            f"delete {part} and re-run")
                    mode = "ab"
                else:  # fresh download, or a server that ignores Range: start over
                    offset, mode = 0, "wb"
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                disable = not sys.stderr.isatty() if progress is None else not progress
                with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                 unit_divisor=1024, desc=part.name, disable=disable) as bar:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
            size = part.stat().st_size
            if total is not None and size != total:
                raise _Short(f"connection closed at {size} of {total} bytes")
            return total
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                _, total = _content_range(e.headers.get("Content-Range"))
                if total == offset:  # the .part was already complete
                    return total
                part.unlink()
                attempt += 1
                if attempt > retries:
                    raise DownloadError(f"{url}: server refused to resume (HTTP 416); re-run to start over") from e
                continue
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check --url") from e
        except (_Short, urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                socket.timeout) as e:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                raise DownloadError(f"{url}: download interrupted at {have} bytes ({reason}); "
                                    f"re-run the same command to resume from {part}") from e
            time.sleep(backoff * min(2 ** (attempt - 1), 30))


def file_md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _find_root(directory: Path) -> Path | None:
    """The extracted corpus root: the directory (DIR or up to two levels below) with resource/scores.json."""
    from phonecli.data.openslr import SCORES

    for candidate in [directory, *sorted(directory.glob("*")), *sorted(directory.glob("*/*"))]:
        if candidate.is_dir() and (candidate / SCORES).exists():
            return candidate
    return None


def _extract(archive: Path, to: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(to, filter="data")
            else:  # Python < 3.11.4: no filters; refuse members that escape DIR ourselves
                for m in tar.getmembers():
                    target = (to / m.name).resolve()
                    if not target.is_relative_to(to.resolve()) or m.issym() or m.islnk():
                        raise DownloadError(f"{archive}: unsafe member {m.name!r}; not extracting")
                tar.extractall(to)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"{archive}: cannot extract ({e}); delete it and re-run to download again") from e


def download_corpus(to: str | Path, url: str = DEFAULT_URL, md5: str | None = None, *, retries: int = 3,
                    timeout: float = 60.0, backoff: float = 1.0, keep_archive: bool = False,
                    progress: bool | None = None) -> Path:
    """Download, verify and extract the corpus into ``to``; returns the corpus root (the
    directory holding ``resource/scores.json``) to pass to ``phonecli data prepare``."""
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    md5 = md5.lower() if md5 else None
    marker = to / MARKER
    if marker.exists():
        done = json.loads(marker.read_text())
        root = to / done.get("root", ".")
        if done.get("url") == url and (root / "resource" / "scores.json").exists():
            if md5 and done.get("md5") != md5:
                raise DownloadError(f"{to}: the corpus there came from an archive with MD5 {done.get('md5')}, "
                                    f"not {md5}; delete {to} to download again")
            return root.resolve()
    name = Path(urllib.parse.urlparse(url).path).name or "corpus.tar.gz"
    archive = to / name
    part = to / (name + ".part")
    total = None
    if not archive.exists():
        total = _fetch(url, part, timeout=timeout, retries=retries, backoff=backoff, progress=progress)
        os.replace(part, archive)
    digest = file_md5(archive)
    if md5 and digest != md5:
        archive.unlink()
        raise DownloadError(f"{url}: MD5 {digest} does not match the expected {md5}; "
                            "the download is corrupt or the URL changed; re-run to download again")
    _extract(archive, to)
    root = _find_root(to)
    if root is None:
        raise DownloadError(f"{archive}: extracted, but no resource/scores.json inside; is --url the SpeechOcean762 archive?")
    size = archive.stat().st_size
    if not keep_archive:
        archive.unlink()
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "md5": digest, "md5_checked": bool(md5), "bytes": size,
                               "size_checked": total is not None, "root": os.path.relpath(root, to)}, indent=1))
    os.replace(tmp, marker)
    return root.resolve()
