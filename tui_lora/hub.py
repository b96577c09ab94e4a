"""Where models and data come from: the official hub, a mirror, ModelScope, or local files only.

Every hub id in a run file is fetched into the cache here, before anything loads, and
replaced by the local folder it landed in; transformers and datasets then only ever read
local files. That gives one place for download progress, for offline runs, and for turning
HTTP failures into one line that says which id, which source and what to try.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, when it is first imported, so
the environment is also set before anything imports it (for code we do not call ourselves);
our own calls pass the endpoint explicitly. Tokens come from HF_TOKEN or `hf auth login`,
never from the run file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tui_lora.assets import is_builtin
from tui_lora.config.rules import looks_local
from tui_lora.config.schema import HubSettings, RunConfig
from tui_lora.errors import UserError, first_line

Emit = Callable[..., object]  # EventLog.emit, or a no-op when nobody listens

# Weights come as safetensors in almost every current repo; other formats of the same
# weights (and checkpoints of other frameworks) would multiply the download.
OTHER_WEIGHT_FORMATS = ("*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.onnx", "*.gguf", "*.ot", "*.tflite",
                        "original/*", "onnx/*", "openvino/*")


def apply_hub_environment(settings: HubSettings) -> str:
    """Set the hub environment; returns a warning when it came too late to take effect, else ""."""
    late = "huggingface_hub" in sys.modules and (settings.endpoint or settings.offline)
    if settings.endpoint:
        os.environ["HF_ENDPOINT"] = settings.endpoint.rstrip("/")
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    return ("hub settings were applied after huggingface_hub was imported in this process; "
            "they may not take effect" if late else "")


# The switches that keep the libraries off the network. huggingface_hub (which fetches every model, tokenizer and
# data set for tui-lora) obeys the first and the last; datasets the second, which matters to nothing fetched here.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_switches() -> list[str]:
    """The offline variables set in the environment, as NAME=value, by the libraries' rule (1, ON, YES, TRUE)."""
    true = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES, without importing it
    return [f"{name}={os.environ[name]}" for name in OFFLINE_VARIABLES if os.environ.get(name, "").upper() in true]


def environment_offline() -> str:
    """"HF_HUB_OFFLINE=1" (or TRANSFORMERS_OFFLINE=…) when huggingface_hub itself is offline through the
    environment, else "". Read from huggingface_hub, which took it from the environment at import."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return ""
    named = [s for s in offline_switches() if not s.startswith("HF_DATASETS_OFFLINE")]
    return named[0] if named else "HF_HUB_OFFLINE"


def is_hub_id(ref: str) -> bool:
    return bool(ref) and not is_builtin(ref) and not looks_local(ref)


def source_name(settings: HubSettings) -> str:
    if settings.source == "modelscope":
        return "ModelScope"
    return f"the mirror {settings.endpoint}" if settings.endpoint else "the Hugging Face hub"


@contextmanager
def hub_errors(ref: str, repo_type: str, settings: HubSettings, key: str = "") -> Iterator[None]:
    """One line for everything that can go wrong between us and a hub; `key` names the run-file key the id came
    from when it is not the kind's usual one (data.sources[2].path)."""
    from huggingface_hub import errors

    where = source_name(settings)
    key = key or _usual_key(repo_type)
    try:
        yield
    except errors.HFValidationError as exc:  # config/rules.py checks ids first; this is the library's own word
        raise UserError(f"{key}: {ref!r} is not a hub id huggingface_hub accepts: {first_line(exc)}") from None
    except errors.GatedRepoError:
        raise UserError(f"{key}: {ref!r} on {where} is gated: accept its licence on the hub page, then log in "
                        "(`hf auth login`) or set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise UserError(f"{key}: {ref!r} was not found on {where}; check the id (and that it is a "
                        f"{repo_type}), or log in if it is private") from None
    except errors.RevisionNotFoundError:
        raise UserError(f"{key}: {ref!r} has no revision named in model.revision on {where}") from None
    except errors.LocalEntryNotFoundError:
        if settings.offline:
            raise UserError(f"{key}: {ref!r} is not in the local cache and hub.offline is true; run once with "
                            "offline = false to download it, or set hub.cache_dir to the cache that has it") from None
        switch = environment_offline()
        if switch:
            raise UserError(f"{key}: {ref!r} is not in the local cache and {switch} is set in the environment, so "
                            f"nothing is downloaded; unset {switch.split('=')[0]} to download it, or set "
                            "hub.cache_dir to the cache that has it") from None
        raise UserError(f"{key}: cannot download {ref!r} from {where}: the server did not answer; check the "
                        "network or hub.endpoint (for example https://hf-mirror.com)") from None
    except errors.OfflineModeIsEnabled:
        raise UserError(f"{key}: {ref!r} must be downloaded but HF_HUB_OFFLINE is set; unset it, or set "
                        "hub.offline = true with a cached copy") from None
    except (errors.HfHubHTTPError, OSError, TimeoutError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(f"{key}: {where} refused access to {ref!r} (HTTP {status}); "
                            f"{_credentials_hint()}") from None
        reason = first_line(exc)
        raise UserError(f"{key}: downloading {ref!r} from {where} failed: {reason}; check the network or "
                        "hub.endpoint, then run again (finished files are kept)") from None
    except Exception as exc:
        if not is_transport_error(exc):
            raise
        reason = first_line(exc)
        raise UserError(f"{key}: downloading {ref!r} from {where} failed ({type(exc).__name__}: {reason}); "
                        "check the network or hub.endpoint, then run again (finished files are kept)") from None


def is_transport_error(exc: BaseException) -> bool:
    """A timeout or dropped connection from the HTTP client under huggingface_hub (httpx and friends give
    them no common base class here)."""
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2")


def _credentials_hint() -> str:
    """What to do about a refused request, depending on whether a token was sent (never the token itself)."""
    from huggingface_hub import get_token

    if get_token():
        return ("it did not accept the token from HF_TOKEN or `hf auth login`: check that it is current and "
                "allowed to read this repo")
    return "it needs a token: set HF_TOKEN or run `hf auth login`"


def bound_timeouts(seconds: float) -> None:
    """Give every huggingface_hub request a time limit.

    huggingface_hub 2.4 passes timeout=None on several calls (repo_info inside
    snapshot_download among them), which waits forever on a server that accepts the
    connection and never answers. A transport that fills in the missing limits makes such
    a server an error after `seconds`, whatever the call site asked for.
    """
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    try:
        import httpx2 as httpx  # what huggingface_hub 2.x is built on
    except ImportError:
        import httpx

    class BoundedTransport(httpx.HTTPTransport):
        def handle_request(self, request):
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {part: given.get(part) if given.get(part) is not None else seconds
                                             for part in ("connect", "read", "write", "pool")}
            return super().handle_request(request)

    def client():
        # A client given its own transport ignores HTTPS_PROXY and friends, so mount them again.
        proxies = httpx._utils.get_environment_proxies()
        mounts = {pattern: BoundedTransport(proxy=url) if url else BoundedTransport() for pattern, url in proxies.items()}
        return httpx.Client(transport=BoundedTransport(), mounts=mounts, follow_redirects=True, timeout=None,
                            event_hooks={"request": [hf_request_event_hook]})

    set_client_factory(client)


class _Discard:
    """Where the download bars draw: nowhere. Their numbers reach the user as events, not as tqdm's
    carriage returns and cursor moves (which a log file or the run's own progress display would show)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _download_progress(emit: Emit, ref: str):
    """A tqdm class for snapshot_download that reports its progress as events and draws nothing.

    snapshot_download makes three bars of this class: the files fetched, and (unit "B") the bytes
    received and the bytes written. Files are reported as each one finishes; bytes at most once a second.
    """
    import time

    from tqdm.auto import tqdm

    class EventsTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["file"] = _Discard()
            super().__init__(*args, **kwargs)
            self._reported = 0.0

        def update(self, n=1):
            result = super().update(n)
            if self.unit != "B":
                emit("download", repo=ref, files_done=int(self.n), files=int(self.total or 0))
            elif self.desc.startswith("Reconstruct") and time.monotonic() - self._reported >= 1.0:
                self._reported = time.monotonic()
                emit("download", repo=ref, bytes_done=int(self.n), bytes=int(self.total or 0))
            return result

    return EventsTqdm


def _usual_key(kind: str) -> str:
    return {"dataset": "data.path", "tokenizer": "tokenizer.name_or_path"}.get(kind, "model.name_or_path")


# A tokenizer named on its own needs these files only, not the weights of the repo it lives in.
TOKENIZER_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


class _Plan:
    """What a fetch of one repo will download: the filters, and each file's size and cache state."""

    def __init__(self, ref: str, kind: str, revision: str, settings: HubSettings):
        from huggingface_hub import HfApi, snapshot_download

        self.ref, self.kind, self.revision = ref, kind, revision
        self.repo_type = "dataset" if kind == "dataset" else "model"
        self.cache = settings.cache_dir or None
        self.endpoint = settings.endpoint.rstrip("/") or None
        # One API call first: it fails the way the hub means it (not found, gated, no such revision),
        # where snapshot_download's dry run folds every failure into one generic error.
        HfApi(endpoint=self.endpoint).repo_info(ref, repo_type=self.repo_type, revision=revision)
        self.allow = TOKENIZER_PATTERNS if kind == "tokenizer" else None
        self.ignore = list(OTHER_WEIGHT_FORMATS) if kind == "model" else None
        self.files = self._dry_run(snapshot_download)
        if kind == "model" and not any(f.filename.endswith(".safetensors") for f in self.files):
            self.ignore = None  # an older repo with .bin weights only: take those
            self.files = self._dry_run(snapshot_download)

    def _dry_run(self, snapshot_download):
        return snapshot_download(self.ref, **self.arguments(), dry_run=True)

    def arguments(self) -> dict:
        return dict(repo_type=self.repo_type, revision=self.revision, cache_dir=self.cache, endpoint=self.endpoint,
                    allow_patterns=self.allow, ignore_patterns=self.ignore)

    @property
    def missing(self):
        return [f for f in self.files if f.will_download]


def _cached(ref: str, kind: str, revision: str, settings: HubSettings) -> Path:
    from huggingface_hub import snapshot_download

    # the same filters as the download, or a tokenizer-only snapshot counts as incomplete
    return Path(snapshot_download(ref, repo_type="dataset" if kind == "dataset" else "model", revision=revision,
                                  cache_dir=settings.cache_dir or None, local_files_only=True,
                                  allow_patterns=TOKENIZER_PATTERNS if kind == "tokenizer" else None))


def fetch(ref: str, kind: str, revision: str, settings: HubSettings, emit: Emit | None = None,
          key: str = "") -> Path:
    """The local folder holding `ref` (a hub id of kind model, tokenizer or dataset), downloading what is missing;
    `key` is the run-file key a failure names, when not the kind's usual one."""
    emit = emit or (lambda *args, **kwargs: None)
    if settings.source == "modelscope":
        return _fetch_modelscope(ref, "dataset" if kind == "dataset" else "model", revision, settings, emit,
                                 key or _usual_key(kind))
    from huggingface_hub import snapshot_download

    bound_timeouts(settings.timeout)
    with hub_errors(ref, kind, settings, key):
        # HF_HUB_OFFLINE=1 in the environment means what hub.offline means: the cache, or a clear miss
        if settings.offline or environment_offline():
            return _cached(ref, kind, revision, settings)
        plan = _Plan(ref, kind, revision, settings)
        emit("download", repo=ref, state="start", files=len(plan.files), files_to_fetch=len(plan.missing),
             bytes_to_fetch=sum(f.file_size or 0 for f in plan.missing), source=source_name(settings))
        folder = snapshot_download(ref, **plan.arguments(), tqdm_class=_download_progress(emit, ref))
        emit("download", repo=ref, state="done", folder=folder)
        return Path(folder)


def _fetch_modelscope(ref: str, repo_type: str, revision: str, settings: HubSettings, emit: Emit,
                      key: str) -> Path:
    try:
        from modelscope.hub.snapshot_download import dataset_snapshot_download, snapshot_download
    except ImportError:
        raise UserError("hub.source is \"modelscope\" but the modelscope package is not installed; run: "
                        "pip install 'tui-lora[modelscope]'") from None
    emit("download", repo=ref, state="start", source="ModelScope")
    kwargs = dict(cache_dir=settings.cache_dir or None, local_files_only=settings.offline)
    try:
        if repo_type == "model":
            folder = snapshot_download(ref, revision=None if revision == "main" else revision, **kwargs)
        else:
            folder = dataset_snapshot_download(ref, **kwargs)
    except Exception as exc:  # modelscope raises plain exceptions of many kinds for a missing id or no network
        reason = first_line(exc)
        raise UserError(f"{key}: cannot fetch {ref!r} from ModelScope: {reason}") from None
    emit("download", repo=ref, state="done", folder=str(folder))
    return Path(folder)


def resolve_sources(config: RunConfig, emit: Emit | None = None) -> RunConfig:
    """The config with every hub id replaced by the local folder it was fetched into."""
    model, tokenizer, data = config.model, config.tokenizer, config.data
    if is_hub_id(model.name_or_path):
        model = replace(model, name_or_path=str(fetch(model.name_or_path, "model", model.revision, config.hub, emit)))
    if is_hub_id(tokenizer.name_or_path):
        tokenizer = replace(tokenizer, name_or_path=str(fetch(tokenizer.name_or_path, "tokenizer", "main",
                                                              config.hub, emit)))
    data = data.with_each("path", [str(fetch(ref, "dataset", "main", config.hub, emit, key)) if is_hub_id(ref) else ref
                            for key, ref in data.keyed_paths()])
    return replace(config, model=model, tokenizer=tokenizer, data=data)


def _reachable(endpoint: str, timeout: float) -> tuple[bool, float, str]:
    """(answered, seconds, what happened) for one request to the endpoint's API."""
    import time
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{endpoint}/api/models?limit=1", timeout=timeout) as answer:
            status = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:  # it answered: reachable, even if this path is not served
        status = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a URL urllib cannot parse
        reason = getattr(exc, "reason", exc)
        return False, time.perf_counter() - started, str(reason)
    return True, time.perf_counter() - started, status


def readable_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _unreachable_advice(settings: HubSettings, endpoint: str, from_environment: bool) -> str:
    """What to try when the endpoint does not answer; a mirror is only suggested to someone not using one."""
    if from_environment:
        return (f"check the network; HF_ENDPOINT in the environment points at {endpoint}: correct it, unset it for "
                "huggingface.co, or set hub.endpoint in the run file")
    if settings.endpoint:
        return (f"check the network and the address; hub.endpoint is already the mirror {endpoint}: try another "
                "mirror, or leave hub.endpoint empty for huggingface.co")
    return "check the network, or set hub.endpoint to a mirror such as https://hf-mirror.com"


def check_hub(config: RunConfig) -> tuple[list[str], bool]:
    """`tui-lora hub check`: is the source reachable, do the ids exist there, how much is there to download.

    Returns the report's lines and whether everything needed was found.
    """
    settings = config.hub
    ids = [(kind, ref, revision) for kind, ref, revision in (
        ("model", config.model.name_or_path, config.model.revision),
        ("tokenizer", config.tokenizer.name_or_path, "main"),
        *(("dataset", path, "main") for _, path in config.data.keyed_paths())) if is_hub_id(ref)]
    if not ids:
        return ["nothing to fetch: the model and the data are local"], True
    if settings.source == "modelscope":
        return [f"{kind} {ref}: ModelScope is checked when the run fetches it" for kind, ref, _ in ids], True
    if settings.source == "local":
        return ["hub.source is \"local\": nothing is fetched"], True
    # what huggingface_hub will use: hub.endpoint (tui-lora sets HF_ENDPOINT from it), else HF_ENDPOINT
    from_environment = not settings.endpoint and bool(os.environ.get("HF_ENDPOINT"))
    endpoint = (settings.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    lines, ok = [], True
    switch = "" if settings.offline else environment_offline()
    if switch:
        lines.append(f"{switch} is set in the environment: nothing is downloaded, and a run stops at the first "
                     f"file not in the cache; unset {switch.split('=')[0]} to download, or set hub.offline = true "
                     "to run from the cache on purpose")
    for other in offline_switches():
        if other.startswith("HF_DATASETS_OFFLINE") and not settings.offline:
            lines.append(f"{other} is set in the environment; tui-lora fetches data through huggingface_hub, "
                         "which only HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) stops")
    if not settings.offline:
        reachable, seconds, status = _reachable(endpoint, settings.timeout)
        lines.append(f"endpoint {endpoint}{' (from HF_ENDPOINT)' if from_environment else ''}: "
                     f"{'reachable' if reachable else 'NOT reachable'} ({status}, {seconds:.2f} s)")
        if not reachable:
            return lines + [_unreachable_advice(settings, endpoint, from_environment)], False
    bound_timeouts(settings.timeout)
    for kind, ref, revision in ids:
        try:
            with hub_errors(ref, kind, settings):
                if settings.offline or switch:
                    lines.append(f"{kind} {ref}: in the local cache ({_cached(ref, kind, revision, settings)})")
                    continue
                plan = _Plan(ref, kind, revision, settings)
        except UserError as exc:
            lines.append(f"{kind} {ref}: {str(exc).split(': ', 1)[-1]}")
            ok = False
            continue
        total = sum(f.file_size or 0 for f in plan.files)
        lines.append(f"{kind} {ref}: found, {len(plan.files)} files, {readable_size(total)}; "
                     f"{readable_size(sum(f.file_size or 0 for f in plan.missing))} to download "
                     f"({len(plan.files) - len(plan.missing)} cached)")
    return lines, ok
