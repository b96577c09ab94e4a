"""A Hugging Face hub mirror on 127.0.0.1, for tests that must download through a real server.

    with MirrorServer({("model", "tui-test/tiny-chat"): Path("tui_lora/assets/tiny-chat"),
                       ("dataset", "tui-test/belle-sample"): jsonl_folder}, mode="ok") as mirror:
        snapshot_download("tui-test/tiny-chat", endpoint=mirror.url, cache_dir=tmp)
        mirror.requests  # [("GET", "/api/models/tui-test/tiny-chat/revision/main"), ...]

Every file under a repo's folder (recursively) is a file of that repo, all at one commit whose
sha is derived from the repo type and id (`MirrorServer.commit_sha`). The revisions "main"
and that sha exist; any other revision is unknown until a branch of that name is created.
Repos can also be created and pushed to (see "Writing" below); pushed files live in memory.

What huggingface_hub 2.4 (httpx2 underneath) asks for, and what is answered:

    GET  /api/{models|datasets}[?limit=N]                               the served repos (list_models)
    GET  /api/{models|datasets}/{repo}[/revision/{rev}][?blobs=True]   repo info: id, sha, siblings
         (siblings carry size / blobId / lfs only with blobs=True, i.e. files_metadata=True)
    GET  /api/{models|datasets}/{repo}/tree/{rev}[/{path}]?recursive=..  file + directory entries
         (snapshot_download lists the tree after repo_info; no pagination Link header)
    POST /api/{models|datasets}/{repo}/paths-info/{rev}                 form field `paths` (repeated)
    HEAD|GET /{repo}/resolve/{rev}/{file}, /datasets/{repo}/resolve/{rev}/{file}
         X-Repo-Commit, ETag (git blob sha1; sha256 for LFS files), Content-Length, Accept-Ranges;
         LFS files (weights suffixes, or >= 10 MiB) also get X-Linked-Etag / X-Linked-Size, as
         the hub sends. No redirects and no X-Xet-* headers, so the plain HTTP path is used
         whether hf_xet is installed or not. GET honours `Range: bytes=N-[M]` (206 +
         Content-Range; 416 when unsatisfiable), which huggingface_hub uses to resume (see below).
    404 + X-Error-Code: RepoNotFound (unknown repo), RevisionNotFound (unknown revision),
         EntryNotFound (unknown file or tree path; carries X-Repo-Commit like the hub).

Writing, as huggingface_hub 2.4's HfApi.create_repo / create_branch / preupload_lfs_files / create_commit
(and upload_folder) ask for it; each needs an `Authorization: Bearer …` header (else 401):
    GET  /api/whoami-v2                                 {"name": "tui-test-user", ...} (USER)
    POST /api/repos/create {name, organization, visibility, type}
         a new repo holding .gitattributes (its namespace USER when no organization); 409 when it exists
    POST /api/{models|datasets}/{repo}/branch/{name}    a branch from main; 409 when it exists
    POST /api/validate-yaml                             no errors, no warnings (create_commit asks for README.md)
    POST /api/{models|datasets}/{repo}/preupload/{rev}  every file "regular" (base64 in the commit, so no LFS
         batch and no xet transfer, whether hf_xet is installed or not: it is used only for "lfs" files), with
         `oid` the blob id of the file already at that revision, which create_commit uses to leave out
         files that have not changed
    POST /api/{models|datasets}/{repo}/commit/{rev}     NDJSON: a header line, then "file" (base64) and
         "deletedFile" / "deletedFolder" lines; an "lfsFile" line or create_pr=1 is a 400. Answers
         commitUrl and commitOid; recorded in `commits` (PushedCommit: files and bytes added, paths
         deleted, the Authorization header), and `files_of(repo)` reads the repo back.

Modes (`mode=` or the `mode` attribute, which can be changed while the server runs):
    "ok"         normal.
    "hang"       reads the request, logs it, then never answers (until the server stops).
    "drop"       API and HEAD answered normally; a GET of a file larger than `drop_threshold`
                 (16 KiB) bytes sends headers (with the full length) and the body only up to the
                 middle of the file, then closes the connection. The cut is at an absolute
                 offset, so a Range resume gets no further either: huggingface_hub gives up after
                 its 5 retries (~5 s) with httpx2.RemoteProtocolError.
    "drop-once"  like "drop" for the first GET of each file only; later GETs are served, so a
                 client that retries ends with byte-identical files.
    "drop-commit"  everything answered normally except a commit POST: half of its body is read, then the
                 connection is closed without an answer (nothing is committed). create_commit sends it
                 once (no retries), so the client sees an httpx2 transport error at once.
    "error"      every request gets HTTP 500 (JSON body {"error": ...}).
    "unauthorized"  every request gets HTTP 401, as the hub answers a token it does not accept.
    Note: huggingface_hub's http_get counts received bytes only in whole
    constants.DOWNLOAD_CHUNK_SIZE (10 MiB) pieces, so a file under 10 MiB cut short is
    fetched again from byte 0 (no Range header); it resumes with `Range: bytes=N-` only past
    whole pieces (tests shrink DOWNLOAD_CHUNK_SIZE to see it).

Timeouts in huggingface_hub 2.4 (found in its source and checked by tests/functional/test_hub_mirror.py):
  * The shared httpx2 client has timeout=None, and HfApi calls pass their `timeout` argument
    explicitly, default None: model_info / dataset_info / repo_info / list_repo_tree without
    `timeout=` wait forever on a hung server. `HfApi.model_info(..., timeout=2)` is honoured
    (raises httpx2.ReadTimeout).
  * snapshot_download calls repo_info with no timeout and has no argument to give it one, so
    against a hung mirror it blocks forever (dry_run=True as well). Its `etag_timeout` only
    bounds the per-file HEAD of hf_hub_download. A bound that works: a client factory whose
    transport fills in missing timeouts (see `bounded_client_factory`), installed with
    `huggingface_hub.set_client_factory`; snapshot_download then raises LocalEntryNotFoundError
    after one timeout.
  * HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT are read once at import, into
    huggingface_hub.constants; setting the env var later changes nothing (tests monkeypatch
    the constants). HF_HUB_ETAG_TIMEOUT, when not 10, overrides `etag_timeout`.
    HF_HUB_DOWNLOAD_TIMEOUT bounds each read of a file GET (http_get retries 5 times, 1 s apart,
    resetting the count whenever a retry got a whole 10 MiB piece).
  * hf_hub_download on a hung or failing (5xx) server retries its HEAD with a fixed 60 s timeout
    (file_download._ETAG_RETRY_TIMEOUT) and 5 backoff retries (1+2+4+8+8 s sleeps): ~23 s of
    sleeping even with a capped timeout (measured: 23 s against "error"; against "hang" with
    etag_timeout=1 still running after 90 s, ~6.5 min by the source). Tests of hang/error use
    snapshot_download or HfApi, which do not retry that way.
  * tests/conftest.py sets HF_HUB_OFFLINE=1; tests using the mirror must set
    huggingface_hub.constants.HF_HUB_OFFLINE = False (monkeypatch), or every request raises
    OfflineModeIsEnabled before leaving the process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

MODES = ("ok", "hang", "drop", "drop-once", "drop-commit", "error", "unauthorized")
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".ot",
                ".tflite", ".npz", ".parquet", ".arrow", ".zip", ".gz", ".tar")
LFS_MIN_SIZE = 10 * 1024 * 1024
TIMESTAMP = "2024-01-01T00:00:00.000Z"
CHUNK = 64 * 1024
# what a repo made by POST /api/repos/create holds, as on the hub (which writes a longer list)
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
USER = "tui-test-user"  # whoami's answer: the namespace of a repo created without an organization


@dataclass(frozen=True)
class PushedCommit:
    """A commit the mirror took: where it went, what it added (path -> bytes) and deleted, who sent it."""
    repo_type: str
    repo_id: str
    revision: str
    summary: str
    added: dict[str, bytes]
    deleted: list[str]
    authorization: str  # the Authorization header it came with


class ServedFile:
    """One file of a served repo: its bytes stay on disk (a served folder) or in memory (a pushed commit);
    its hashes are taken once."""

    def __init__(self, path: str, source: Path | None = None, data: bytes | None = None, lfs: bool | None = None):
        self.path, self.source, self.data = path, source, data
        content = source.read_bytes() if data is None else data
        self.size = len(content)
        self.blob_id = hashlib.sha1(b"blob %d\0" % self.size + content).hexdigest()
        self.sha256 = hashlib.sha256(content).hexdigest()
        # a pushed file is a plain git blob: the mirror's preupload asks for every file in "regular" mode
        self.lfs = (path.endswith(LFS_SUFFIXES) or self.size >= LFS_MIN_SIZE) if lfs is None else lfs

    def read(self) -> bytes:
        return self.source.read_bytes() if self.data is None else self.data

    def chunks(self, start: int, stop: int):
        """The bytes from `start` up to `stop`, in pieces of at most CHUNK."""
        if self.data is not None:
            for at in range(start, stop, CHUNK):
                yield self.data[at:min(at + CHUNK, stop)]
            return
        with open(self.source, "rb") as src:
            src.seek(start)
            position = start
            while position < stop:
                chunk = src.read(min(CHUNK, stop - position))
                if not chunk:
                    break
                yield chunk
                position += len(chunk)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def entry(self) -> dict:
        """A tree / paths-info entry."""
        info = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            info["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(pointer)}
        return info

    def sibling(self, blobs: bool) -> dict:
        """A `siblings` item of repo info (size and hashes only with ?blobs=True, like the hub)."""
        if not blobs:
            return {"rfilename": self.path}
        info = {"rfilename": self.path, "size": self.size, "blobId": self.blob_id}
        if self.lfs:
            info["lfs"] = {"size": self.size, "sha256": self.sha256, "pointerSize": self.entry()["lfs"]["pointerSize"]}
        return info


class ServedRepo:
    """A repo at one revision: its files and commit sha. A branch is another ServedRepo of the same id."""

    def __init__(self, repo_type: str, repo_id: str, files: dict[str, ServedFile], sha: str, private: bool = False):
        self.repo_type, self.repo_id, self.sha, self.private = repo_type, repo_id, sha, private
        self.files = dict(files)
        self.branches: dict[str, ServedRepo] = {}  # name -> the branch's own state (main is this object)
        self._index_folders()

    @classmethod
    def from_folder(cls, repo_type: str, repo_id: str, folder: Path) -> ServedRepo:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{repo_type} {repo_id}: {folder} is not a folder")
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        return cls(repo_type, repo_id, {name: ServedFile(name, folder / name) for name in names},
                   MirrorServer.commit_sha(repo_type, repo_id))

    @classmethod
    def created(cls, repo_type: str, repo_id: str, private: bool) -> ServedRepo:
        """A new repo as the hub makes it: one commit holding .gitattributes."""
        attributes = ServedFile(".gitattributes", data=GITATTRIBUTES, lfs=False)
        return cls(repo_type, repo_id, {".gitattributes": attributes},
                   hashlib.sha1(f"created:{repo_type}/{repo_id}".encode()).hexdigest(), private)

    def _index_folders(self) -> None:
        self.folders = sorted({"/".join(name.split("/")[:i]) for name in self.files
                               for i in range(1, name.count("/") + 1)})

    def branch(self, name: str) -> ServedRepo:
        """A new branch starting from this revision's files."""
        branch = ServedRepo(self.repo_type, self.repo_id, self.files, self.sha, self.private)
        self.branches[name] = branch
        return branch

    def apply(self, added: dict[str, bytes], deleted: list[str], summary: str) -> str:
        """Commit: files added or replaced, files (or folders, ending in /) deleted; returns the new sha."""
        for path in deleted:
            folder = path.rstrip("/") + "/"
            for name in [n for n in self.files if n == path or n.startswith(folder)]:
                del self.files[name]
        for path, data in added.items():
            self.files[path] = ServedFile(path, data=data, lfs=False)
        self._index_folders()
        listing = "".join(f"{name}:{f.blob_id}\n" for name, f in sorted(self.files.items()))
        self.sha = hashlib.sha1(f"{self.sha}\n{summary}\n{listing}".encode()).hexdigest()
        return self.sha

    def info(self, blobs: bool) -> dict:
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        info = {"_id": self.sha[:24], "id": self.repo_id, "author": author, "sha": self.sha,
                "lastModified": TIMESTAMP, "createdAt": TIMESTAMP, "private": self.private, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "siblings": [f.sibling(blobs) for f in self.files.values()],
                "usedStorage": sum(f.size for f in self.files.values())}
        if self.repo_type == "model":
            info["modelId"] = self.repo_id
        return info

    def folder_entry(self, path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(f"tree {self.sha} {path}".encode()).hexdigest(),
                "size": 0, "path": path}

    def tree(self, base: str, recursive: bool) -> list[dict] | None:
        """Entries under `base` ("" = root); None when `base` is neither the root nor a folder."""
        if base and base not in self.folders:
            return None
        prefix = f"{base}/" if base else ""

        def wanted(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        return ([self.folder_entry(p) for p in self.folders if wanted(p)]
                + [f.entry() for name, f in self.files.items() if wanted(name)])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, mirror: MirrorServer):
        self.mirror = mirror
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a bug here: print it
        # else: a client that went away mid-answer (timeouts, drops) is expected


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence stderr
        pass

    def do_GET(self):
        self._serve()

    def do_HEAD(self):
        self._serve()

    def do_POST(self):
        self._serve()

    # --- plumbing -----------------------------------------------------------------------
    def _serve(self):
        mirror = self.server.mirror
        body = b""
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if mirror.mode == "drop-commit" and "/commit/" in urlsplit(self.path).path:
                # half the upload arrives, then the line goes dead: no answer, nothing committed
                self.rfile.read(length // 2)
                mirror._log(self.command, self.path, dict(self.headers))
                self.close_connection = True
                return
            body = self.rfile.read(length)
        if mirror._stopping.is_set():
            self.close_connection = True
            return
        mirror._log(self.command, self.path, dict(self.headers))
        mode = mirror.mode
        if mode == "hang":
            self.close_connection = True
            mirror._stopping.wait()
            return
        if mode == "error":
            return self._error(500, None, "Internal Error - We're working hard to fix this as soon as possible!")
        if mode == "unauthorized":
            return self._error(401, None, "Invalid credentials in Authorization header")
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        if parts == ["api", "whoami-v2"]:
            return self._whoami()
        if parts == ["api", "validate-yaml"] and self.command == "POST":
            return self._json({"errors": [], "warnings": []})  # the card's metadata is the client's business here
        if parts == ["api", "repos", "create"] and self.command == "POST":
            return self._create_repo(body)
        if parts[:1] == ["api"] and len(parts) == 2 and parts[1] in REPO_TYPES and self.command != "POST":
            return self._listing(REPO_TYPES[parts[1]], query)
        if parts[:1] == ["api"] and len(parts) >= 3 and parts[1] in REPO_TYPES:
            return self._api(REPO_TYPES[parts[1]], parts[2:], query, body)
        if "resolve" in parts:
            i = parts.index("resolve")
            prefix = parts[:i]
            repo_type = "model"
            if prefix and prefix[0] in REPO_TYPES and len(prefix) > 1:
                repo_type = REPO_TYPES[prefix.pop(0)]
            if prefix and len(parts) > i + 2:
                return self._resolve(repo_type, "/".join(prefix), parts[i + 1], "/".join(parts[i + 2:]))
        return self._error(404, None, "Not Found")

    def _send(self, status: int, headers: dict, body: bytes = b""):
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, payload, headers: dict | None = None):
        self._send(200, {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
                   json.dumps(payload).encode())

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None):
        extra = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": message, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        self._send(status, extra, json.dumps({"error": message}).encode())

    def _find(self, repo_type: str, repo_id: str, revision: str):
        """The repo at `revision` (main, a branch, or a branch's commit sha), else None with the 404 sent."""
        repo = self.server.mirror._repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if revision in ("main", repo.sha):
            return repo
        for name, branch in repo.branches.items():
            if revision in (name, branch.sha):
                return branch
        self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        return None

    def _authorized(self) -> bool:
        """Writes need a token, as on the hub; False (with the 401 sent) when the request carries none."""
        if self.headers.get("Authorization", "").startswith("Bearer ") and len(self.headers["Authorization"]) > 7:
            return True
        self._error(401, None, "Invalid credentials in Authorization header")
        return False

    # --- writing: whoami, repo creation, branches, preupload, commit -----------------------
    def _whoami(self):
        if self._authorized():
            self._json({"type": "user", "name": USER, "fullname": "tui-lora tests", "orgs": [],
                        "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def _create_repo(self, body: bytes):
        """POST /api/repos/create {name, organization, visibility, type}: 409 when it exists, as the hub."""
        if not self._authorized():
            return
        mirror = self.server.mirror
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        with mirror._lock:
            if (repo_type, repo_id) in mirror._repos:  # the hub's 409 carries the url, which exist_ok returns
                message = "You already created this model repo"
                return self._send(409, {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": message},
                                  json.dumps({"error": message, "url": f"{mirror.url}/{prefix}{repo_id}"}).encode())
            private = payload.get("visibility") == "private" or payload.get("private") is True
            mirror._repos[(repo_type, repo_id)] = ServedRepo.created(repo_type, repo_id, private)
        self._json({"url": f"{mirror.url}/{prefix}{repo_id}", "name": repo_id})

    def _create_branch(self, repo: ServedRepo, name: str):
        if name == "main" or name in repo.branches:
            return self._error(409, None, "Reference already exists")
        with self.server.mirror._lock:
            repo.branch(name)
        self._json({})

    def _preupload(self, repo: ServedRepo, body: bytes):
        """Every file is to go as a regular git blob (base64 in the commit), so no LFS or xet transfer is
        needed; oid is the file's blob id at that revision, which lets the client skip identical files."""
        files = json.loads(body or b"{}").get("files", [])
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": repo.files[f["path"]].blob_id if f["path"] in repo.files else None}
                              for f in files], "commitOid": repo.sha})

    def _commit(self, repo: ServedRepo, revision: str, body: bytes, query: dict):
        """POST .../commit/{rev}: NDJSON, a header line then one line per file added (base64) or deleted."""
        if _true(query.get("create_pr")):
            return self._error(400, None, "this mirror takes no pull requests")
        summary, added, deleted = "", {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"].rstrip("/") + ("/" if key == "deletedFolder" else ""))
            else:  # lfsFile: never asked for, since preupload answers "regular"
                return self._error(400, None, f"this mirror takes regular files only, not {key!r}")
        gone = [p for p in deleted if p.rstrip("/") not in repo.files and p.rstrip("/") not in repo.folders]
        if gone:
            return self._error(404, "EntryNotFound", f"A file with this name doesn't exist: {gone[0]}")
        mirror = self.server.mirror
        with mirror._lock:
            sha = repo.apply(added, deleted, summary)
            mirror._commits.append(PushedCommit(repo.repo_type, repo.repo_id, revision, summary, added, deleted,
                                                self.headers.get("Authorization", "")))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._json({"commitUrl": f"{mirror.url}/{prefix}{repo.repo_id}/commit/{sha}", "commitOid": sha,
                    "pullRequestUrl": None, "success": True})

    # --- /api/{type}s/... ---------------------------------------------------------------
    def _listing(self, repo_type: str, query: dict):
        """GET /api/models (list_models & co): the served repos of that type; `limit` honoured."""
        with self.server.mirror._lock:  # a push may be creating a repo meanwhile
            served = list(self.server.mirror._repos.values())
        found = [{"_id": r.sha[:24], "id": r.repo_id, **({"modelId": r.repo_id} if repo_type == "model" else {})}
                 for r in served if r.repo_type == repo_type]
        limit = query.get("limit", [""])[-1]
        self._json(found[:int(limit)] if limit.isdigit() else found)

    def _api(self, repo_type: str, rest: list[str], query: dict, body: bytes):
        repos = self.server.mirror._repos
        # a repo id has one or two segments; prefer the one that names a served repo
        if len(rest) >= 2 and ((repo_type, "/".join(rest[:2])) in repos or (repo_type, rest[0]) not in repos):
            repo_id, tail = "/".join(rest[:2]), rest[2:]
        else:
            repo_id, tail = rest[0], rest[1:]
        if self.command in ("GET", "HEAD") and (not tail or (tail[0] == "revision" and len(tail) == 2)):
            repo = self._find(repo_type, repo_id, tail[1] if tail else "main")
            if repo:
                self._json(repo.info(blobs=_true(query.get("blobs"))))
            return
        if self.command in ("GET", "HEAD") and tail[:1] == ["tree"] and len(tail) >= 2:
            repo = self._find(repo_type, repo_id, tail[1])
            if repo:
                entries = repo.tree("/".join(tail[2:]), recursive=_true(query.get("recursive")))
                if entries is None:
                    self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
                else:
                    self._json(entries, {"X-Repo-Commit": repo.sha})
            return
        if self.command == "POST" and tail[:1] in (["preupload"], ["commit"], ["branch"]) and len(tail) == 2:
            if not self._authorized():
                return
            repo = self._find(repo_type, repo_id, "main" if tail[0] == "branch" else tail[1])
            if repo is None:
                return
            if tail[0] == "preupload":
                return self._preupload(repo, body)
            if tail[0] == "commit":
                return self._commit(repo, tail[1], body, query)
            return self._create_branch(repo, tail[1])
        if self.command == "POST" and tail[:1] == ["paths-info"] and len(tail) == 2:
            repo = self._find(repo_type, repo_id, tail[1])
            if repo:
                paths = parse_qs(body.decode()).get("paths", [])
                found = [repo.files[p].entry() if p in repo.files else repo.folder_entry(p)
                         for p in paths if p in repo.files or p in repo.folders]
                self._json(found, {"X-Repo-Commit": repo.sha})
            return
        if (repo_type, repo_id) not in repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        return self._error(404, None, "Not Found")

    # --- /[datasets/]{repo}/resolve/{rev}/{file} ----------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, filename: str):
        repo = self._find(repo_type, repo_id, revision)
        if not repo:
            return
        file = repo.files.get(filename)
        if file is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                               {"X-Repo-Commit": repo.sha})
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{file.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{filename.rsplit("/", 1)[-1]}"'}
        if file.lfs:
            headers.update({"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(file.size)})
        start, end, status = 0, file.size - 1, 200
        wanted = self.headers.get("Range") if self.command == "GET" else None
        span = _parse_range(wanted, file.size) if wanted else False
        if span is None:
            return self._send(416, {**headers, "Content-Range": f"bytes */{file.size}"})
        if span:
            (start, end), status = span, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(end - start + 1)}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        stop = end + 1
        if self.server.mirror._should_drop(repo, file):
            stop = min(stop, file.size // 2)  # the connection always dies at the middle of the file
            self.close_connection = True
        for chunk in file.chunks(start, stop):
            self.wfile.write(chunk)
        self.wfile.flush()


def _true(values) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """(first, last) byte of a single `bytes=` range; None when unsatisfiable (416); False when
    the header is malformed or asks for several ranges (ignored: the whole file, as servers do)."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or "," in spec or not dash:
        return False
    try:
        if not first:  # suffix: the last N bytes
            n = int(last)
            return (max(size - n, 0), size - 1) if n > 0 and size else None
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return False
    return (start, end) if start <= end and start < size else None


class MirrorServer:
    """A loopback hub mirror serving local folders; a context manager (start on enter, stop on exit).

    repos:           {(repo_type, repo_id): folder}; repo_type is "model", "dataset" or "space".
    mode:            one of MODES (see the module docstring); may be reassigned while running.
    drop_threshold:  in "drop"/"drop-once", GETs of files larger than this many bytes are cut.

    url:       "http://127.0.0.1:PORT" (the HF_ENDPOINT / endpoint= value), set once started.
    commits:   a copy of the PushedCommit list so far; files_of(repo_id, repo_type, revision) -> {path: bytes};
               is_private(repo_id, repo_type)
    requests:  a copy of [(method, raw path incl. query string)] received so far, in order
               (logged on arrival, before the mode acts: hung and failed requests are in it too).
    request_headers: the headers of those requests, same order.
    clear_requests(): empty both logs.
    sha(repo_id, repo_type="model"): the commit sha the repo is served at.
    """

    def __init__(self, repos: Mapping[tuple[str, str], Path | str], mode: str = "ok", *,
                 drop_threshold: int = 16 * 1024):
        self._repos = {(t, i): ServedRepo.from_folder(t, i, Path(folder)) for (t, i), folder in repos.items()}
        self.mode = mode
        self.drop_threshold = drop_threshold
        self._requests: list[tuple[str, str]] = []
        self._headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._dropped: set[tuple[str, str, str]] = set()
        self._commits: list[PushedCommit] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {value!r}")
        self._mode = value

    @staticmethod
    def commit_sha(repo_type: str, repo_id: str) -> str:
        return hashlib.sha1(f"tui-lora-mirror:{repo_type}/{repo_id}".encode()).hexdigest()

    def sha(self, repo_id: str, repo_type: str = "model") -> str:
        return self.commit_sha(repo_type, repo_id)

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of each request, parallel to `requests` (e.g. to see a `Range` resume)."""
        with self._lock:
            return [dict(h) for h in self._headers]

    @property
    def commits(self) -> list[PushedCommit]:
        """Every commit pushed so far, in order."""
        with self._lock:
            return list(self._commits)

    def files_of(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """{path: bytes} of a repo at main or a branch (pushed or served); {} for a repo that does not exist."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is not None and revision != "main":
                repo = repo.branches.get(revision)
            return {path: f.read() for path, f in repo.files.items()} if repo else {}

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return self._repos[(repo_type, repo_id)].private

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._headers.clear()

    def _log(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append((method, path))
            self._headers.append(headers)

    def _should_drop(self, repo: ServedRepo, file: ServedFile) -> bool:
        mode = self.mode
        if mode not in ("drop", "drop-once") or file.size <= self.drop_threshold:
            return False
        if mode == "drop":
            return True
        key = (repo.repo_type, repo.repo_id, file.path)
        with self._lock:
            first = key not in self._dropped
            self._dropped.add(key)
        return first

    def start(self) -> MirrorServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hub-mirror-{self._server.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (hung and keep-alive ones too); idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # releases handlers parked by "hang"
        server.shutdown()
        with server.connections_lock:
            open_connections = list(server.connections)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes handlers blocked reading a keep-alive socket
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def bounded_client_factory(seconds: float):
    """A huggingface_hub client factory whose requests time out after `seconds` when the caller set no timeout.

    huggingface_hub.set_client_factory(bounded_client_factory(2)) makes snapshot_download's repo_info
    (which passes timeout=None) fail on a hung server; restore with set_client_factory(default_client_factory).
    """
    import httpx2
    from huggingface_hub.utils._http import hf_request_event_hook

    class Transport(httpx2.HTTPTransport):
        def handle_request(self, request):
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {key: (given.get(key) if given.get(key) is not None else seconds)
                                             for key in ("connect", "read", "write", "pool")}
            return super().handle_request(request)

    def factory():
        return httpx2.Client(transport=Transport(), event_hooks={"request": [hf_request_event_hook]},
                             follow_redirects=True, timeout=None)

    return factory
