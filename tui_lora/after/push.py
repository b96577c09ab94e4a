"""`tui-lora push`: a finished run's adapter, or its merged model, to the Hugging Face hub, a mirror, or ModelScope.

The hub libraries do the transfer: huggingface_hub's HfApi (create_repo, preupload_lfs_files, create_commit) with
the run's hub.endpoint passed explicitly, or modelscope's HubApi (create_repo, upload_file, upload_folder).

- What goes up: the folder's files, less peft's template README.md and training_args.bin (a pickle of the
  Trainer's arguments, with this machine's paths: the card carries the settings), plus a model card made here
  (model_card.py). An adapter's adapter_config.json names the local folder its base was loaded from; when the
  run file names a hub id, the uploaded copy names that id instead, so the adapter loads anywhere.
- One commit, all or nothing. preupload tells which files the repo already holds unchanged (the commit leaves
  them out) and content already sent to LFS or xet storage is not sent again, so a push cut off is finished by
  running it again; the last line says what went up and what was there.
- A repo that holds files no tui-lora push of this kind put there (its README.md is not such a card) is not
  written to without --force. Nothing is deleted: files this push does not have (a LICENSE added on the hub's
  page, or with --force someone else's) stay, and the last line counts them.
- The token comes from the environment or the user's login, through the libraries (huggingface_hub.get_token),
  and is only ever handed to them: it is written nowhere, and every message is redacted by the CLI anyway.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tui_lora import __version__
from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError, first_line
from tui_lora.secret_guard import WHERE_TOKENS_COME_FROM

# Left out of every upload: replaced by our card, or not for publishing (see the module docstring).
LEFT_OUT = ("README.md", "training_args.bin")
# What a hub puts in a new repo itself; its presence says nothing about who filled the repo.
HOUSEKEEPING = (".gitattributes",)


@dataclass
class Upload:
    kind: str                        # "adapter" or "merged"
    run: Path                        # the run folder
    folder: Path                     # the folder uploaded
    config: RunConfig
    files: dict[str, Path | bytes]   # path in the repo -> a file of the folder, or content made here


@dataclass
class PushResult:
    repo_id: str
    url: str
    where: str
    kind: str
    sent: list[str] = field(default_factory=list)
    sent_bytes: int = 0
    unchanged: list[str] = field(default_factory=list)  # already in the repo, identical
    kept: list[str] = field(default_factory=list)       # in the repo and not in this push: left in place
    unknown: bool = False                                # the library does not say what it sent (ModelScope)


def push(where: str, repo: str, merged: bool = False, private: bool = False, revision: str | None = None,
         force: bool = False, progress: Callable[[str], None] | None = None, bars: bool = True) -> PushResult:
    """Push the run in `where`; `bars`: let the libraries draw their progress bars (on a terminal)."""
    progress = progress or (lambda line: None)
    upload = find_upload(where, merged)
    with _library_bars(bars):
        if upload.config.hub.source == "modelscope":
            return _to_modelscope(upload, repo, private, revision or "master", force, progress)
        return _to_huggingface(upload, repo, private, revision or "main", force, progress)


@contextmanager
def _library_bars(shown: bool) -> Iterator[None]:
    """huggingface_hub's progress bars off for the push when `shown` is false (a log file would fill with their
    redraws), and back as they were after it (they are the library's global state)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    were_off = are_progress_bars_disabled()
    if not shown:
        disable_progress_bars()
    try:
        yield
    finally:
        if not shown and not were_off:
            enable_progress_bars()


def _add_card(upload: Upload, repo_id: str, modelscope: bool = False) -> None:
    from tui_lora.after.model_card import model_card, run_metrics

    card = model_card(upload.config, upload.kind, repo_id, run_metrics(upload.run), modelscope)
    upload.files["README.md"] = card.encode()


def find_upload(where: str, merged: bool) -> Upload:
    """The folder to upload from a run folder, with the run file; UserError when there is none (yet)."""
    from tui_lora.after.merge import recorded_merge
    from tui_lora.config.load import ConfigError, build_config, read_toml
    from tui_lora.runs.events import FINAL_STATES
    from tui_lora.runs.status import progress_text, read_status

    run = Path(where).expanduser().absolute()
    if not (run / "run.toml").is_file():
        raise UserError(f"{where}: not a run folder (no run.toml in it); push takes a run's training.output_dir "
                        "(tui-lora runs lists them)")
    # Rules are not checked: they are about training (a data file moved since does not matter here).
    config, issues = build_config(read_toml(run / "run.toml"))
    if issues:
        raise ConfigError(issues, str(run / "run.toml"))
    status = read_status(run)
    if status.pid is not None:
        raise UserError(f"{where}: the run is still going ({status.state}, {progress_text(status)}, pid "
                        f"{status.pid}); push it once it has finished")
    if merged:
        out, outdated = recorded_merge(run)
        again = f"tui-lora merge {where} --out {out or 'DIR'}" + (" --force" if out else "")
        if out is None:
            raise UserError(f"{where}: no merged model of this run yet; write one with: {again}, then push again "
                            "with --merged")
        if outdated:
            raise UserError(f"{where}: the merged model in {out} is of an earlier adapter (the run trained again "
                            f"after it was merged); merge again: {again}")
        if not (out / "config.json").is_file():
            raise UserError(f"{where}: the merged model recorded for this run ({out}) is gone; write it again: "
                            f"{again}")
        return Upload("merged", run, out, config, _folder_files(out))
    adapter = run / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        if status.state not in (*FINAL_STATES, "died"):
            advice = "wait for it to finish" if status.state != "new" else f"start it: tui-lora run {where}"
        elif status.latest_checkpoint is not None:
            advice = f"continue it with: tui-lora run {where} --resume"
        else:
            advice = f"it saved no checkpoint to continue from: start it again with tui-lora run {where}"
        raise UserError(f"{where}: the run has no adapter yet ({status.state}, {progress_text(status)}): it saves "
                        f"one when it finishes; {advice}, then push")
    files = _folder_files(adapter)
    files["adapter_config.json"] = _adapter_config_for_the_hub(adapter / "adapter_config.json", config)
    return Upload("adapter", run, adapter, config, files)


def _folder_files(folder: Path) -> dict[str, Path | bytes]:
    return {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name not in LEFT_OUT
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)}


def _adapter_config_for_the_hub(path: Path, config: RunConfig) -> bytes:
    """adapter_config.json naming the run file's base model when that is a hub id (peft wrote the local folder
    it was fetched into), else as peft wrote it."""
    from tui_lora.hub import is_hub_id

    base = config.model.name_or_path
    if not is_hub_id(base):
        return path.read_bytes()
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved["base_model_name_or_path"] = base
    saved["revision"] = None if config.model.revision == "main" else config.model.revision
    return (json.dumps(saved, indent=2, sort_keys=True) + "\n").encode()


def claim(remote: list[str], remote_kind: str | None, upload: Upload, repo_id: str, where: str,
          force: bool) -> list[str]:
    """The files of the repo this push leaves in place, when it may write there at all: the repo is new, or its
    README.md is a card of a push of this kind (`remote_kind`), or --force; UserError otherwise."""
    from tui_lora.after.model_card import WHAT

    others = [path for path in remote if path not in HOUSEKEEPING]
    if not others or remote_kind == upload.kind or force:
        return [path for path in others if path not in upload.files]
    if remote_kind:
        raise UserError(f"{repo_id} on {where} holds a tui-lora {WHAT[remote_kind]}; pushing a {WHAT[upload.kind]} "
                        "over it would mix the two: choose another --repo, or add --force")
    named = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    raise UserError(f"{repo_id} on {where} already holds {len(others)} files that no tui-lora push of a "
                    f"{WHAT[upload.kind]} put there ({named}); choose another --repo, or add --force to upload over "
                    "them (the others stay)")


def _hf_client(settings):
    """(HfApi with the token, the endpoint, the words for where it is); UserError without a token."""
    from huggingface_hub import HfApi, get_token

    from tui_lora.hub import bound_timeouts, environment_offline, source_name

    where, endpoint = source_name(settings), settings.endpoint.rstrip("/") or "https://huggingface.co"
    token = get_token()
    if not token:
        raise UserError(f"pushing to {where} needs a token that may write there, and there is none: "
                        f"{WHERE_TOKENS_COME_FROM}")
    switch = environment_offline()
    if switch:
        raise UserError(f"{switch} is set in the environment, which keeps huggingface_hub off the network; unset "
                        f"{switch.split('=')[0]} to push")
    bound_timeouts(settings.timeout)
    return HfApi(endpoint=endpoint, token=token), endpoint, where


def _to_huggingface(upload: Upload, repo: str, private: bool, revision: str, force: bool, progress) -> PushResult:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import RepositoryNotFoundError

    from tui_lora.after.model_card import WHAT, card_kind
    from tui_lora.hub import readable_size

    settings = upload.config.hub
    api, endpoint, where = _hf_client(settings)
    with _push_errors(repo, where, endpoint, settings.timeout):
        # a bare name goes to the token owner's namespace, as on the hub's own pages
        repo_id = repo if "/" in repo else f"{api.whoami()['name']}/{repo}"
        _add_card(upload, repo_id)
        page = f"{endpoint}/{repo_id}" + (f"/tree/{revision}" if revision != "main" else "")
        result = PushResult(repo_id, page, where, upload.kind)
        try:
            existing = api.repo_info(repo_id)
        except RepositoryNotFoundError:
            existing = None
            api.create_repo(repo_id, private=private, exist_ok=True)
            progress(f"created the {'private' if private else 'public'} repo {repo_id} on {where}")
        if existing is not None and private and not existing.private:
            raise UserError(f"{repo_id} on {where} exists and is public; --private only applies to a repo push "
                            "creates: make it private in its settings on the hub, or leave out --private")
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = api.list_repo_files(repo_id, revision=revision)
        remote_card = _hf_readme(api, repo_id, revision) if "README.md" in remote else ""
        result.kept = claim(remote, card_kind(remote_card), upload, repo_id, where, force)
        additions = [CommitOperationAdd(path, content) for path, content in upload.files.items()]
        total = sum(op.upload_info.size for op in additions)
        progress(f"pushing the {WHAT[upload.kind]} ({len(additions)} files, {readable_size(total)}) to {repo_id} "
                 f"({revision}) on {where} …")
        # upload modes, and the content of large (LFS / xet) files, which then stays server-side if the commit fails
        api.preupload_lfs_files(repo_id, additions=additions, revision=revision)
        for op in additions:
            same = _unchanged(op)
            (result.unchanged if same else result.sent).append(op.path_in_repo)
            result.sent_bytes += 0 if same else op.upload_info.size
            progress(f"  {op.path_in_repo} ({readable_size(op.upload_info.size)}): "
                     f"{'already there' if same else 'sending'}")
        if result.sent:
            api.create_commit(repo_id, operations=additions,
                              commit_message=f"tui-lora push: the {WHAT[upload.kind]} of run {upload.run.name}",
                              commit_description=f"Pushed by tui-lora {__version__}.", revision=revision)
    return result


def _unchanged(op) -> bool:
    """Whether preupload found this file in the repo with the same content: create_commit's own test for leaving a
    file out of the commit (huggingface_hub keeps the two oids on the operation, without a public name)."""
    remote = getattr(op, "_remote_oid", None)
    return remote is not None and remote == getattr(op, "_local_oid", None)


def _hf_readme(api, repo_id: str, revision: str) -> str:
    with tempfile.TemporaryDirectory(prefix="tui-lora-card-") as cache:
        path = api.hf_hub_download(repo_id, "README.md", revision=revision, cache_dir=cache)
        return Path(path).read_text(encoding="utf-8", errors="replace")


@contextmanager
def _push_errors(repo_id: str, where: str, endpoint: str, timeout: float) -> Iterator[None]:
    """One line for what can go wrong between us and the hub while pushing (hub.hub_errors does it for fetching)."""
    from huggingface_hub import errors

    from tui_lora.hub import is_transport_error

    again = "run the same tui-lora push again to finish: it sends only what is not there yet"
    try:
        yield
    except errors.OfflineModeIsEnabled:
        raise UserError("HF_HUB_OFFLINE is set in the environment; unset it to push") from None
    except errors.HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            raise UserError(f"{where} refused to let this token write to {repo_id} (HTTP {status}): it needs "
                            f"a token with write access to that repo or its namespace; {WHERE_TOKENS_COME_FROM}"
                            ) from None
        if isinstance(exc, errors.RepositoryNotFoundError):
            raise UserError(f"{repo_id} was not found on {where}, or this token may not see it: check the name "
                            f"(OWNER/NAME) and the token; {WHERE_TOKENS_COME_FROM}") from None
        later = f"; {again}" if status and status >= 500 else ""
        raise UserError(f"{where} refused the push to {repo_id} (HTTP {status}): {first_line(exc)}{later}") from None
    except Exception as exc:
        if not (is_transport_error(exc) or isinstance(exc, (ConnectionError, TimeoutError))):
            raise
        if "Timeout" in type(exc).__name__:
            raise UserError(f"{endpoint} did not answer within hub.timeout = {timeout:g} s while pushing to "
                            f"{repo_id}; check the network or hub.endpoint, then {again}") from None
        raise UserError(f"the connection to {endpoint} was lost while pushing to {repo_id} ({type(exc).__name__}: "
                        f"{first_line(exc)}); a commit is all or nothing, so {again}") from None


# ---------------------------------------------------------------- ModelScope


def _to_modelscope(upload: Upload, repo_id: str, private: bool, revision: str, force: bool, progress) -> PushResult:
    try:
        from modelscope.hub.api import HubApi
    except ImportError:
        raise UserError("hub.source is \"modelscope\" but the modelscope package is not installed; run: "
                        "pip install 'tui-lora[modelscope]'") from None
    from tui_lora.after.model_card import WHAT, card_kind

    where = "ModelScope"
    token = os.environ.get("MODELSCOPE_API_TOKEN", "").strip() or None
    if token is None and not _modelscope_login():
        raise UserError(f"pushing to ModelScope needs a token that may write there, and there is none: set "
                        f"MODELSCOPE_API_TOKEN or log in with modelscope ({WHERE_TOKENS_COME_FROM})")
    if repo_id.count("/") != 1:
        raise UserError(f"--repo {repo_id}: a ModelScope repo is named OWNER/NAME")
    _add_card(upload, repo_id, modelscope=True)
    result = PushResult(repo_id, f"https://modelscope.cn/models/{repo_id}", where, upload.kind, unknown=True)
    api = HubApi()
    with _modelscope_errors(repo_id):
        if api.repo_exists(repo_id, repo_type="model", token=token):
            remote = [f["Path"] for f in api.get_model_files(repo_id, revision=revision, recursive=True)]
            remote_card = _modelscope_readme(repo_id, revision) if "README.md" in remote else ""
            result.kept = claim(remote, card_kind(remote_card), upload, repo_id, where, force)
        else:
            api.create_repo(repo_id, token=token, visibility="private" if private else "public", repo_type="model",
                            exist_ok=True, create_default_config=False)
            progress(f"created the {'private' if private else 'public'} repo {repo_id} on ModelScope")
        progress(f"pushing the {WHAT[upload.kind]} ({len(upload.files)} files) to {repo_id} ({revision}) on "
                 "ModelScope …")
        message = f"tui-lora push: the {WHAT[upload.kind]} of run {upload.run.name}"
        # the card first: a push cut off after it leaves a repo the next push recognises as its own
        made_here = sorted(((path, content) for path, content in upload.files.items() if isinstance(content, bytes)),
                           key=lambda item: item[0] != "README.md")
        for path, content in made_here:
            api.upload_file(path_or_fileobj=content, path_in_repo=path, repo_id=repo_id, token=token,
                            revision=revision, commit_message=message)
        left_out = [path.relative_to(upload.folder).as_posix() for path in upload.folder.rglob("*")
                    if path.is_file() and upload.files.get(path.relative_to(upload.folder).as_posix()) != path]
        api.upload_folder(repo_id=repo_id, folder_path=str(upload.folder), ignore_patterns=left_out or None,
                          token=token, revision=revision, commit_message=message)
    result.sent = list(upload.files)
    return result


def _modelscope_login() -> bool:
    try:
        from modelscope.hub.api import ModelScopeConfig

        return ModelScopeConfig.get_cookies() is not None
    except (ImportError, AttributeError):
        return False


def _modelscope_readme(repo_id: str, revision: str) -> str:
    from modelscope.hub.file_download import model_file_download

    with tempfile.TemporaryDirectory(prefix="tui-lora-card-") as cache:
        path = model_file_download(repo_id, "README.md", revision=revision, cache_dir=cache)
        return Path(path).read_text(encoding="utf-8", errors="replace")


@contextmanager
def _modelscope_errors(repo_id: str) -> Iterator[None]:
    """modelscope raises exceptions of many kinds (requests' among them); one line each, by what they carry."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403) or "login" in str(exc).lower():
            raise UserError(f"ModelScope refused to let this token write to {repo_id}"
                            f"{f' (HTTP {status})' if status else ''}: {first_line(exc)}; "
                            f"{WHERE_TOKENS_COME_FROM}") from None
        if any(word in type(exc).__name__ for word in ("Connection", "Timeout")):
            raise UserError(f"the connection to ModelScope was lost while pushing to {repo_id} "
                            f"({type(exc).__name__}); run the same tui-lora push again to finish") from None
        raise UserError(f"pushing to {repo_id} on ModelScope failed: {first_line(exc)}") from None


def summary_line(result: PushResult) -> str:
    """The last line: where it went, what went up and what was already there."""
    from tui_lora.after.model_card import WHAT
    from tui_lora.hub import readable_size

    what = WHAT[result.kind]
    extra = f", {_files(len(result.kept), 'other ')} left in place" if result.kept else ""
    if result.unknown:
        return (f"pushed the {what} to {result.repo_id} on {result.where}: {len(result.sent)} files (ModelScope "
                f"skips content it already holds){extra}; {result.url}")
    if not result.sent:
        return (f"{result.repo_id} on {result.where} already holds this {what}: nothing sent, "
                f"{len(result.unchanged)} files already there{extra}; {result.url}")
    return (f"pushed the {what} to {result.repo_id} on {result.where}: {len(result.sent)} files sent "
            f"({readable_size(result.sent_bytes)}), {len(result.unchanged)} already there{extra}; {result.url}")


def _files(count: int, kind: str = "") -> str:
    return f"{count} {kind}file{'' if count == 1 else 's'}"
