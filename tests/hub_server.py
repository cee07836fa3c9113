"""A small stand-in for the Hugging Face Hub, for tests (127.0.0.1 only).

It serves in-memory repositories through the parts of the Hub HTTP API that
huggingface_hub uses to download files:

  HEAD/GET /{repo}/resolve/{rev}/{path}      file metadata and bytes (Range supported)
  GET      /api/models/{repo}[/revision/{rev}] repo info with the siblings list and commit sha
  GET      /api/models/{repo}/tree/{rev}[/{path}]  the file listing (used by snapshot_download)
  POST     /api/models/{repo}/paths-info/{rev}     metadata for given paths

Large ("LFS") files answer with X-Linked-Etag (their sha256) and X-Linked-Size like the Hub;
small files get a git blob id as ETag. Faults for tests: `drop_once(repo, path, after)` closes
the connection after `after` bytes on the next full GET of that file; `stall_once(repo, path,
after)` sends `after` bytes of the next GET's body (full or ranged), then waits until `release()`
(so a test can stop the client mid-file) and hangs up, or sends the rest with `release(finish=True)`;
`corrupt(repo, path)` changes its last bytes (same size, the real sha256 still advertised); `truncate(repo, path, n)` serves only the first n bytes
(the advertised sha256 stays the real one, like a damaged upload).

`use_cdn(xet=False)` makes it answer like the real Hub for large files: /resolve/ redirects (302,
metadata on the redirect itself) to a second server on another port, a stand-in for the
storage/CDN host, which serves the bytes with Range; `xet=True` adds the headers of a Xet-backed
file (X-Xet-Hash, refresh route) to that redirect.

Every request is recorded in `requests` as (method, path-with-query, Range header), and in
`authorization` with its Authorization header; requests to the CDN also go to `cdn_requests` as
(method, path, Range header, Authorization header).
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 1024  # files at least this big are served as LFS files


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    sha: str = ""
    lfs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.sha:
            h = hashlib.sha1(self.repo_id.encode())
            for name in sorted(self.files):
                h.update(name.encode() + hashlib.sha256(self.files[name]).digest())
            self.sha = h.hexdigest()
        if not self.lfs:
            self.lfs = {p for p, data in self.files.items() if len(data) >= LFS_THRESHOLD}

    def is_lfs(self, path: str) -> bool:
        return path in self.lfs

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def blob_id(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        out = {"type": "file", "path": path, "size": len(data), "oid": self.blob_id(path)}
        if self.is_lfs(path):
            out["lfs"] = {"oid": self.sha256(path), "size": len(data), "pointerSize": 134}
        return out


class FakeHub:
    """Start with `FakeHub().start()` (or as a context manager); `url` is the HF_ENDPOINT to use."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.cdn_requests: list[tuple[str, str, str | None, str | None]] = []
        self.authorization: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self._drops: dict[tuple[str, str], int] = {}
        self._stalls: dict[tuple[str, str], int] = {}
        self._released = threading.Event()
        self._finish_stalled = False
        self._truncated: dict[tuple[str, str], int] = {}
        self._corrupted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._cdn: ThreadingHTTPServer | None = None
        self.xet = False

    # --- set-up -------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], lfs: set[str] | None = None) -> FakeRepo:
        repo = FakeRepo(repo_id, dict(files), lfs=set(lfs or ()))
        self.repos[repo_id] = repo
        return repo

    def drop_once(self, repo_id: str, path: str, after: int) -> None:
        self._drops[(repo_id, path)] = after

    def truncate(self, repo_id: str, path: str, n: int) -> None:
        self._truncated[(repo_id, path)] = n

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve the file with its last bytes changed (same size; the advertised sha256 stays the real one)."""
        self._corrupted.add((repo_id, path))

    def _served(self, repo_id: str, path: str) -> bytes:
        data = self.repos[repo_id].files[path]
        if (repo_id, path) in self._truncated:
            data = data[: self._truncated[(repo_id, path)]]
        if (repo_id, path) in self._corrupted:
            data = data[:-16] + bytes(b ^ 0x5A for b in data[-16:])
        return data

    def stall_once(self, repo_id: str, path: str, after: int) -> None:
        self._released.clear()
        self._stalls[(repo_id, path)] = after

    def release(self, finish: bool = False) -> None:
        """Let stalled responses go on: hang up (default), or send the rest of the body (`finish`)."""
        self._finish_stalled = finish
        self._released.set()

    def use_cdn(self, xet: bool = False) -> None:
        """Serve large files through a redirect to a second server, like the Hub's storage hosts."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub, Handler.is_cdn = hub, True
        self.xet = xet
        self._cdn = _Server(("127.0.0.1", 0), Handler)
        self._cdn.daemon_threads = True
        threading.Thread(target=self._cdn.serve_forever, name="fake-cdn", daemon=True).start()

    @property
    def cdn_url(self) -> str | None:
        if self._cdn is None:
            return None
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def requested_files(self, method: str | None = None) -> list[str]:
        """Paths (inside repos) asked for through /resolve/, as "repo_id:path"."""
        out = []
        for m, p, _ in list(self.requests):
            if method and m != method:
                continue
            parsed = _parse_resolve(urlsplit(p).path, self.repos)
            if parsed:
                out.append(f"{parsed[0]}:{parsed[2]}")
        return out

    # --- life cycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._cdn is not None:
            self._cdn.shutdown()
            self._cdn.server_close()
            self._cdn = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # used by the handler
    def _take_drop(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            return self._drops.pop((repo_id, path), None)

    def _take_stall(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            return self._stalls.pop((repo_id, path), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hangs up mid-transfer is what some tests do on purpose
        super().handle_error(request, client_address)


def _parse_resolve(path: str, repos: dict[str, FakeRepo]) -> tuple[str, str, str] | None:
    """'/{org}/{name}/resolve/{rev}/{file}' -> (repo_id, rev, file)."""
    parts = unquote(path).lstrip("/").split("/")
    for n in (2, 1):  # "org/name" or a bare "name"
        if len(parts) > n + 2 and parts[n] == "resolve":
            repo_id = "/".join(parts[:n])
            if repo_id in repos:
                return repo_id, parts[n + 1], "/".join(parts[n + 2:])
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub
    is_cdn = False

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # --- responses ------------------------------------------------------------------------
    def _record(self) -> None:
        with self.hub._lock:
            self.hub.requests.append((self.command, self.path, self.headers.get("Range")))
            self.hub.authorization.append((self.command, self.path, self.headers.get("Authorization")))
            if self.is_cdn:
                self.hub.cdn_requests.append((self.command, self.path, self.headers.get("Range"),
                                              self.headers.get("Authorization")))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str, head_only: bool = False, repo: FakeRepo | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        if repo is not None:
            headers["X-Repo-Commit"] = repo.sha
        self._send(status, json.dumps({"error": message}).encode(), headers, head_only=head_only)

    # --- API ----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._record()
        if self.is_cdn:
            return self._serve_blob(head_only=True)
        self._resolve(head_only=True)

    def do_GET(self) -> None:
        self._record()
        path = urlsplit(self.path).path
        if self.is_cdn:
            self._serve_blob(head_only=False)
        elif path.startswith("/api/models/"):
            self._api_get(path)
        else:
            self._resolve(head_only=False)

    def do_POST(self) -> None:
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/api/models/") and "/paths-info/" in path:
            repo_id, _, rev = path[len("/api/models/"):].partition("/paths-info/")
            repo = self.hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", f"{repo_id} not found")
            if "json" in (self.headers.get("Content-Type") or ""):
                wanted = json.loads(raw or b"{}").get("paths", [])
            else:
                wanted = parse_qs(raw.decode()).get("paths", [])
            return self._json([repo.entry(p) for p in wanted if p in repo.files])
        self._error(404, "NotFound", "unknown endpoint")

    def _api_get(self, path: str) -> None:
        rest = unquote(path[len("/api/models/"):])
        query = parse_qs(urlsplit(self.path).query)
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_id, _, tail = rest.partition(marker)
                break
        else:
            repo_id, marker, tail = rest, "", ""
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"{repo_id} not found")
        if marker == "/tree/":
            rev, _, folder = tail.partition("/")
            if rev not in ("main", repo.sha):
                return self._error(404, "RevisionNotFound", f"{rev} not found", repo=repo)
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            prefix = folder.rstrip("/") + "/" if folder else ""
            entries, folders = [], set()
            for p in sorted(repo.files):
                if not p.startswith(prefix):
                    continue
                sub = p[len(prefix):]
                if "/" in sub and not recursive:
                    folders.add(prefix + sub.split("/")[0])
                    continue
                if recursive:
                    parts = sub.split("/")[:-1]
                    for i in range(1, len(parts) + 1):
                        folders.add(prefix + "/".join(parts[:i]))
                entries.append(repo.entry(p))
            entries += [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()}
                        for d in sorted(folders)]
            return self._json(entries)
        rev = tail or "main"
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"{rev} not found", repo=repo)
        return self._json({
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha, "private": False,
            "siblings": [{"rfilename": p, **({"size": len(d)} if query.get("blobs") else {})}
                         for p, d in sorted(repo.files.items())],
        })

    def _resolve(self, head_only: bool) -> None:
        parsed = _parse_resolve(urlsplit(self.path).path, self.hub.repos)
        if parsed is None:
            return self._error(404, "RepoNotFound", "repository not found", head_only)
        repo_id, rev, fpath = parsed
        repo = self.hub.repos[repo_id]
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"{rev} not found", head_only, repo)
        if fpath not in repo.files:
            return self._error(404, "EntryNotFound", f"{fpath} not found", head_only, repo)
        data = self.hub._served(repo_id, fpath)
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if repo.is_lfs(fpath):
            headers["ETag"] = f'"{repo.sha256(fpath)}"'
            headers["X-Linked-Etag"] = f'"{repo.sha256(fpath)}"'
            headers["X-Linked-Size"] = str(len(data))
        else:
            headers["ETag"] = f'"{repo.blob_id(fpath)}"'

        if self.hub.cdn_url and repo.is_lfs(fpath):
            # Like the Hub: the metadata rides on the redirect; the bytes come from the storage host.
            headers["Location"] = f"{self.hub.cdn_url}/blobs/{repo.sha256(fpath)}?repo={repo_id}&path={fpath}"
            if self.hub.xet:
                headers["X-Xet-Hash"] = hashlib.sha1(b"xet" + data).hexdigest()
                headers["X-Xet-Refresh-Route"] = f"/api/models/{repo_id}/xet-read-token/{repo.sha}"
            del headers["Accept-Ranges"], headers["Content-Type"]
            return self._send(302, b"", headers, head_only=head_only)
        self._send_bytes(repo_id, fpath, data, headers, head_only)

    def _serve_blob(self, head_only: bool) -> None:
        """The storage host: /blobs/<sha256>?repo=...&path=... (no auth needed, Range supported)."""
        query = parse_qs(urlsplit(self.path).query)
        repo_id, fpath = query.get("repo", [""])[0], query.get("path", [""])[0]
        repo = self.hub.repos.get(repo_id)
        sha = urlsplit(self.path).path.rsplit("/", 1)[-1]
        if repo is None or fpath not in repo.files or repo.sha256(fpath) != sha:
            return self._send(404, b"no such blob", head_only=head_only)
        data = self.hub._served(repo_id, fpath)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", "ETag": f'"{sha}"'}
        self._send_bytes(repo_id, fpath, data, headers, head_only)

    def _send_bytes(self, repo_id: str, fpath: str, data: bytes, headers: dict, head_only: bool) -> None:
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head_only:
            first, _, last = rng[len("bytes="):].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(data) - 1
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            body = data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
            stall_after = self.hub._take_stall(repo_id, fpath)
            if stall_after is not None:
                return self._stall(206, body, headers, stall_after)
            return self._send(206, body, headers)

        if head_only:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return

        stall_after = self.hub._take_stall(repo_id, fpath)
        if stall_after is not None:
            return self._stall(200, data, headers, stall_after)
        drop_after = self.hub._take_drop(repo_id, fpath)
        if drop_after is not None:
            # Promise the whole file, send part of it, then hang up.
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:drop_after])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(200, data, headers)

    def _stall(self, status: int, body: bytes, headers: dict, after: int) -> None:
        """Promise the whole body, send `after` bytes, wait for `release()`, then hang up."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[:after])
            self.wfile.flush()
        except OSError:
            pass
        self.hub._released.wait(timeout=60)
        if self.hub._finish_stalled:
            try:
                self.wfile.write(body[after:])
                self.wfile.flush()
            except OSError:
                pass
            return
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
