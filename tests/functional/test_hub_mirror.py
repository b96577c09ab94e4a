"""Downloads through a hub mirror: real huggingface_hub calls against a loopback server.

tests/hub_mirror.py serves the shipped tiny model and a one-file dataset the way a Hugging
Face mirror (HF_ENDPOINT) does; nothing here reaches the network. Each call passes
`endpoint=mirror.url` itself, since huggingface_hub reads HF_ENDPOINT only at import.
The error tests pin which exception huggingface_hub 2.4 raises for each failure, so the
messages tui_lora shows can be mapped from them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, set_client_factory, snapshot_download
from huggingface_hub.errors import (
    DryRunError,
    EntryNotFoundError,
    HfHubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._http import default_client_factory

from conftest import REPO
from hub_mirror import MirrorServer, bounded_client_factory

MODEL_ID = "tui-test/tiny-chat"
DATASET_ID = "tui-test/belle-sample"
MODEL_DIR = REPO / "tui_lora" / "assets" / "tiny-chat"
DATA_FILE = REPO / "tui_lora" / "assets" / "data" / "belle_sample.jsonl"

pytestmark = pytest.mark.timeout(120)  # a hang here is a bug in the test server, not a slow test


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("belle-repo")
    (folder / "belle_sample.jsonl").write_bytes(DATA_FILE.read_bytes())
    return folder


@pytest.fixture(scope="module")
def repos(dataset_dir):
    return {("model", MODEL_ID): MODEL_DIR, ("dataset", DATASET_ID): dataset_dir}


@pytest.fixture(autouse=True)
def online(monkeypatch):
    # tests/conftest.py sets HF_HUB_OFFLINE=1 for the whole run; huggingface_hub read it at import.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, repos):
    """One snapshot_download of the tiny model through the mirror, which is stopped afterwards."""
    cache = tmp_path_factory.mktemp("hub-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        with MirrorServer(repos) as mirror:
            folder = snapshot_download(MODEL_ID, revision="main", endpoint=mirror.url, cache_dir=cache)
    return SimpleNamespace(folder=Path(folder), cache=cache, url=mirror.url, sha=mirror.sha(MODEL_ID),
                           requests=mirror.requests)


def raised(call) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        call()
    return info.value, time.monotonic() - start


# --- downloads that work ---------------------------------------------------------------

def test_snapshot_is_byte_identical_and_loads(downloaded):
    assert downloaded.folder.name == downloaded.sha
    assert downloaded.folder.is_relative_to(downloaded.cache)
    assert tree(downloaded.folder) == tree(MODEL_DIR)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(downloaded.folder)
    assert model.num_parameters() > 0
    assert AutoTokenizer.from_pretrained(downloaded.folder)("hello")["input_ids"]


def test_request_log_shows_the_mirror_was_used(downloaded):
    sha, names = downloaded.sha, sorted(tree(MODEL_DIR))
    assert downloaded.requests[0] == ("GET", f"/api/models/{MODEL_ID}/revision/main")
    assert downloaded.requests[1][1].startswith(f"/api/models/{MODEL_ID}/tree/{sha}?")
    for name in names:
        assert ("HEAD", f"/{MODEL_ID}/resolve/{sha}/{name}") in downloaded.requests
        assert ("GET", f"/{MODEL_ID}/resolve/{sha}/{name}") in downloaded.requests
    assert len(downloaded.requests) == 2 + 2 * len(names)


def test_cached_snapshot_needs_no_server(downloaded):
    with pytest.raises(httpx2.ConnectError):  # the mirror is gone
        httpx2.get(downloaded.url + f"/api/models/{MODEL_ID}", timeout=5)
    folder = snapshot_download(MODEL_ID, revision="main", cache_dir=downloaded.cache, local_files_only=True)
    assert Path(folder) == downloaded.folder
    assert tree(Path(folder)) == tree(MODEL_DIR)


def test_repo_info_reports_file_sizes(repos, dataset_dir):
    with MirrorServer(repos) as mirror:
        api = HfApi(endpoint=mirror.url)
        model = api.model_info(MODEL_ID, files_metadata=True)
        dataset = api.dataset_info(DATASET_ID, revision="main", files_metadata=True)
        bare = api.model_info(MODEL_ID)
    assert model.id == MODEL_ID and model.sha == mirror.sha(MODEL_ID)
    assert {s.rfilename: s.size for s in model.siblings} == {n: len(b) for n, b in tree(MODEL_DIR).items()}
    weights = next(s for s in model.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == hashlib.sha256((MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert {s.rfilename: s.size for s in dataset.siblings} == {"belle_sample.jsonl": DATA_FILE.stat().st_size}
    assert dataset.sha == mirror.sha(DATASET_ID, "dataset")
    assert {s.size for s in bare.siblings} == {None}  # sizes come only with files_metadata, as on the hub
    assert mirror.requests[0] == ("GET", f"/api/models/{MODEL_ID}?blobs=true")
    assert mirror.requests[1] == ("GET", f"/api/datasets/{DATASET_ID}/revision/main?blobs=true")


def test_dataset_repo_downloads(repos, tmp_path):
    with MirrorServer(repos) as mirror:
        folder = snapshot_download(DATASET_ID, repo_type="dataset", revision="main", endpoint=mirror.url,
                                   cache_dir=tmp_path)
        single = hf_hub_download(DATASET_ID, "belle_sample.jsonl", repo_type="dataset", endpoint=mirror.url,
                                 cache_dir=tmp_path / "other")
    assert Path(folder).parent.parent.name == "datasets--tui-test--belle-sample"
    assert tree(Path(folder)) == {"belle_sample.jsonl": DATA_FILE.read_bytes()}
    assert Path(single).read_bytes() == DATA_FILE.read_bytes()
    assert mirror.requests[0] == ("GET", f"/api/datasets/{DATASET_ID}/revision/main")
    assert ("GET", f"/datasets/{DATASET_ID}/resolve/{mirror.sha(DATASET_ID, 'dataset')}/belle_sample.jsonl") \
        in mirror.requests


# --- what huggingface_hub raises -------------------------------------------------------

def test_unknown_repo(repos, tmp_path):
    with MirrorServer(repos) as mirror:
        error, _ = raised(lambda: snapshot_download("tui-test/no-such-model", endpoint=mirror.url,
                                                    cache_dir=tmp_path))
        assert type(error) is RepositoryNotFoundError
        assert str(error).splitlines()[0] == "404 Client Error."
        assert "Repository Not Found for url" in str(error)
        # a model id asked for as a dataset is not found either
        assert type(raised(lambda: snapshot_download(MODEL_ID, repo_type="dataset", endpoint=mirror.url,
                                                     cache_dir=tmp_path))[0]) is RepositoryNotFoundError
        assert type(raised(lambda: HfApi(endpoint=mirror.url).model_info("tui-test/no-such-model"))[0]) \
            is RepositoryNotFoundError
        assert type(raised(lambda: hf_hub_download("tui-test/no-such-model", "config.json", endpoint=mirror.url,
                                                   cache_dir=tmp_path))[0]) is RepositoryNotFoundError


def test_unknown_revision(repos, tmp_path):
    with MirrorServer(repos) as mirror:
        error, _ = raised(lambda: snapshot_download(MODEL_ID, revision="v9", endpoint=mirror.url,
                                                    cache_dir=tmp_path))
        assert type(error) is RevisionNotFoundError
        assert str(error).splitlines()[0] == "404 Client Error."
        assert "Revision Not Found for url" in str(error)
        assert type(raised(lambda: hf_hub_download(MODEL_ID, "config.json", revision="v9", endpoint=mirror.url,
                                                   cache_dir=tmp_path))[0]) is RevisionNotFoundError
        assert type(raised(lambda: snapshot_download(MODEL_ID, revision="0" * 40, endpoint=mirror.url,
                                                     cache_dir=tmp_path))[0]) is RevisionNotFoundError


def test_unknown_file(repos, tmp_path):
    with MirrorServer(repos) as mirror:
        error, _ = raised(lambda: hf_hub_download(MODEL_ID, "pytorch_model.bin", endpoint=mirror.url,
                                                  cache_dir=tmp_path))
    assert type(error) is RemoteEntryNotFoundError and isinstance(error, EntryNotFoundError)
    assert "Entry Not Found for url" in str(error)


def test_hang_times_out_where_a_timeout_is_set(repos, tmp_path):
    with MirrorServer(repos, mode="hang") as mirror:
        error, elapsed = raised(lambda: HfApi(endpoint=mirror.url).model_info(MODEL_ID, timeout=1))
        assert type(error) is httpx2.ReadTimeout and elapsed < 30
        assert str(error) == "timed out"

        # snapshot_download gives its first call (repo_info) no timeout: bound it through the client
        set_client_factory(bounded_client_factory(1))
        try:
            error, elapsed = raised(lambda: snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path))
            dry, _ = raised(lambda: snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path,
                                                      dry_run=True))
        finally:
            set_client_factory(default_client_factory)
        assert type(error) is LocalEntryNotFoundError and elapsed < 30
        assert str(error).splitlines()[0] == "Got: ReadTimeout: timed out"
        assert type(error.__cause__) is httpx2.ReadTimeout
        assert type(dry) is DryRunError and type(dry.__cause__) is httpx2.ReadTimeout
        assert mirror.requests[0] == ("GET", f"/api/models/{MODEL_ID}")
        start = time.monotonic()
    assert time.monotonic() - start < 5  # parked handlers do not hold up the shutdown


def test_hang_without_a_timeout_blocks_until_the_server_stops(repos, tmp_path):
    """What tui_lora's fetch() gets from a hung mirror today: snapshot_download waits indefinitely."""
    outcome: list[BaseException | str] = []

    def download():
        try:
            outcome.append(snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    with MirrorServer(repos, mode="hang") as mirror:
        worker = threading.Thread(target=download, daemon=True)
        worker.start()
        worker.join(2)
        assert worker.is_alive() and not outcome
    worker.join(10)  # stopping the server cuts the connection
    assert not worker.is_alive()
    assert type(outcome[0]) is httpx2.RemoteProtocolError
    assert str(outcome[0]) == "Server disconnected without sending a response."


def test_dropped_connection_fails_and_leaves_nothing_truncated(repos, tmp_path):
    with MirrorServer(repos, mode="drop") as mirror:
        error, elapsed = raised(lambda: snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path))
    assert type(error) is httpx2.RemoteProtocolError, repr(error)
    assert str(error).startswith("peer closed connection without sending complete message body (received ")
    big = {n for n, b in tree(MODEL_DIR).items() if len(b) > mirror.drop_threshold}
    assert big == {"model.safetensors", "tokenizer.json"}
    gets = [p for m, p in mirror.requests if m == "GET" and p.endswith("/model.safetensors")]
    assert len(gets) == 6  # huggingface_hub retried 5 times (1 s apart) before giving up
    storage = tmp_path / "models--tui-test--tiny-chat"
    snapshot = storage / "snapshots" / mirror.sha(MODEL_ID)
    shipped = tree(MODEL_DIR)
    kept = tree(snapshot)
    assert kept and not big & kept.keys()  # the small files landed, the cut ones did not
    assert all(kept[n] == shipped[n] for n in kept)
    assert not list(tmp_path.rglob("*.incomplete"))
    sizes = {len(b) for b in shipped.values()}
    assert all(blob.stat().st_size in sizes for blob in (storage / "blobs").iterdir())
    with pytest.raises(IncompleteSnapshotError):  # and the cache knows the snapshot is partial
        snapshot_download(MODEL_ID, cache_dir=tmp_path, local_files_only=True)


def test_dropped_connection_once_is_retried(repos, tmp_path, monkeypatch):
    # huggingface_hub counts received bytes in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces: a smaller file cut
    # short is fetched again from the start; with small pieces it resumes with a Range request.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    with MirrorServer(repos, mode="drop-once") as mirror:
        folder = snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path)
    assert tree(Path(folder)) == tree(MODEL_DIR)
    ranges = [{k.lower(): v for k, v in h.items()}.get("range")
              for (m, p), h in zip(mirror.requests, mirror.request_headers) if p.endswith("/model.safetensors")]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")


def test_server_error(repos, tmp_path):
    with MirrorServer(repos, mode="error") as mirror:
        error, elapsed = raised(lambda: snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path))
        assert type(error) is LocalEntryNotFoundError and elapsed < 10
        assert str(error).splitlines()[0] == (
            "Got: HfHubHTTPError: Server error '500 Internal Server Error' for url "
            f"'{mirror.url}/api/models/{MODEL_ID}/revision/main'")
        assert type(error.__cause__) is HfHubHTTPError and error.__cause__.response.status_code == 500

        info_error, _ = raised(lambda: HfApi(endpoint=mirror.url).model_info(MODEL_ID))
        assert type(info_error) is HfHubHTTPError and info_error.response.status_code == 500
        dry, _ = raised(lambda: snapshot_download(MODEL_ID, endpoint=mirror.url, cache_dir=tmp_path, dry_run=True))
        assert type(dry) is DryRunError and type(dry.__cause__) is HfHubHTTPError
    assert not (tmp_path / "models--tui-test--tiny-chat" / "snapshots").exists()
