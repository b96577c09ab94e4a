"""`tui-lora push`: a real tiny run's adapter (and merged model) through the command line to the loopback mirror
(tests/hub_mirror.py), which huggingface_hub talks to over HTTP as it would to the hub; ModelScope through a stand-in
of its upload calls, as its fetching is tested (test_hub.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
from conftest import REPO, tiny_run_file
from hub_mirror import MirrorServer

from tui_lora import __version__
from tui_lora.runs.events import EventLog, read_events

# made up, shaped like a real one so that the redaction of hub tokens would catch it too
TOKEN = "hf_tuiLoraPushTestToken0123456789abcdef"
OUTPUTS: list[str] = []  # everything every push printed, searched for the token at the end
FOREIGN = "someone/other-model"  # a repo on the mirror that no push made


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    other = tmp_path_factory.mktemp("other-model")
    (other / "config.json").write_text('{"model_type": "llama"}\n')
    (other / "README.md").write_text("# Someone's model\n")
    with MirrorServer({("model", FOREIGN): other}) as server:
        yield server


@pytest.fixture(scope="module")
def run(tmp_path_factory, mirror):
    """A finished two-step run on the tiny model, trained in this process, whose run file points at the mirror."""
    from tui_lora.config import config_from_dict
    from tui_lora.engine.session import execute
    from tui_lora.runs.folder import open_run_folder, resolve_paths

    raw = tiny_run_file(tmp_path_factory.mktemp("push") / "run", data={"max_samples": 24},
                        training={"max_steps": 2, "eval_steps": 2, "save_steps": 2},
                        hub={"endpoint": mirror.url, "timeout": 2.0})
    config = resolve_paths(config_from_dict(raw))
    folder, checkpoint = open_run_folder(config, None)
    try:
        execute(config, folder, checkpoint, listeners=[])
    finally:
        folder.release()
    return folder.path


def push(run_folder, *args, token: str | None = TOKEN, hf_home=None) -> subprocess.CompletedProcess:
    """`python -m tui_lora.cli push RUN_FOLDER ARGS` online, with HF_TOKEN (or none) and an HF_HOME of its own."""
    env = {name: value for name, value in os.environ.items() if name not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="0", HF_HOME=str(hf_home or run_folder.parent / "hf-home"))
    if token:
        env["HF_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "tui_lora.cli", "push", str(run_folder), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    OUTPUTS.extend([done.stdout, done.stderr])
    assert "Traceback" not in done.stderr
    return done


def refusal(done: subprocess.CompletedProcess) -> str:
    """The one line a refused push prints, checked to be one line on stderr with exit status 2."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    return errors[0]


def upload_set(run_folder):
    """What an adapter push sends: the adapter folder less peft's README.md and training_args.bin, plus our card."""
    names = {p.name for p in (run_folder / "adapter").iterdir()} - {"README.md", "training_args.bin"}
    return names | {"README.md"}


def test_push_sends_the_adapter_with_a_card_then_finds_it_all_there(run, mirror):
    repo = "tui-test/tiny-adapter"
    done = push(run, "--repo", repo)
    assert done.returncode == 0, done.stderr
    files = mirror.files_of(repo)
    assert set(files) == upload_set(run) | {".gitattributes"}
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja"):
        assert files[name] == (run / "adapter" / name).read_bytes(), name  # a builtin base: peft's config as is
    card = files["README.md"].decode()
    events = list(read_events(run / "events.jsonl"))
    final = next(e for e in reversed(events) if e["type"] == "result")["metrics"]["eval_loss"]
    assert f"| last eval loss | {final:.4f} |" in card
    assert "library_name: peft" in card and "- tui-lora" in card and f"tui-lora {__version__}" in card
    assert "builtin:tiny-chat" in card and "builtin:belle-sample" in card and "r=4, alpha=8" in card
    assert "PeftModel.from_pretrained(base" in card and str(run) not in card
    commit = mirror.commits[-1]
    assert commit.repo_id == repo and commit.authorization == f"Bearer {TOKEN}"
    assert not [path for _, path in mirror.requests if "xet" in path or "lfs" in path]  # plain HTTP, one commit
    assert done.stdout.startswith(f"pushed the LoRA adapter to {repo} on the mirror {mirror.url}: "
                                  f"{len(upload_set(run))} files sent") and "0 already there" in done.stdout
    assert "adapter_model.safetensors (" in done.stderr  # a progress line per file

    commits = len(mirror.commits)
    again = push(run, "--repo", repo)
    assert again.returncode == 0 and len(mirror.commits) == commits  # nothing changed: no commit
    assert f"nothing sent, {len(upload_set(run))} files already there" in again.stdout


def test_a_dropped_connection_is_one_line_and_pushing_again_finishes(run, mirror):
    repo = "tui-test/dropped"
    mirror.mode = "drop-commit"
    try:
        line = refusal(push(run, "--repo", repo))
    finally:
        mirror.mode = "ok"
    assert line.startswith(f"error: the connection to {mirror.url} was lost while pushing to {repo}")
    assert "run the same tui-lora push again" in line
    assert set(mirror.files_of(repo)) == {".gitattributes"}  # the repo was made; the commit never happened
    done = push(run, "--repo", repo)
    assert done.returncode == 0 and set(mirror.files_of(repo)) == upload_set(run) | {".gitattributes"}


def test_a_server_that_does_not_answer_is_one_line(run, mirror):
    mirror.mode = "hang"
    try:
        line = refusal(push(run, "--repo", "tui-test/hung"))
    finally:
        mirror.mode = "ok"
    assert f"{mirror.url} did not answer within hub.timeout = 2 s" in line and "push again" in line


def test_a_refused_token_or_none_is_one_line(run, mirror, tmp_path):
    mirror.mode = "unauthorized"
    try:
        line = refusal(push(run, "--repo", "tui-test/refused"))
    finally:
        mirror.mode = "ok"
    assert "refused to let this token write to tui-test/refused (HTTP 401)" in line and "HF_TOKEN" in line
    mirror.clear_requests()
    line = refusal(push(run, "--repo", "tui-test/no-token", token=None, hf_home=tmp_path / "nobody"))
    assert "needs a token" in line and "HF_TOKEN" in line and "hf auth login" in line
    assert mirror.requests == []


def test_a_repo_with_other_content_needs_force_and_keeps_it(run, mirror):
    line = refusal(push(run, "--repo", FOREIGN))
    assert f"{FOREIGN} on the mirror {mirror.url} already holds 2 files that no tui-lora push" in line
    assert "--force" in line and set(mirror.files_of(FOREIGN)) == {"config.json", "README.md"}
    done = push(run, "--repo", FOREIGN, "--force")
    assert done.returncode == 0 and "1 other file left in place" in done.stdout  # config.json; README.md replaced
    assert set(mirror.files_of(FOREIGN)) == upload_set(run) | {"config.json"}


def test_a_branch_and_a_private_repo(run, mirror):
    done = push(run, "--repo", "tiny-private", "--private", "--revision", "dev")
    assert done.returncode == 0, done.stderr
    repo = "tui-test-user/tiny-private"  # a bare name goes to the token owner's namespace
    assert mirror.is_private(repo) and set(mirror.files_of(repo)) == {".gitattributes"}
    assert set(mirror.files_of(repo, revision="dev")) == upload_set(run) | {".gitattributes"}
    line = refusal(push(run, "--repo", "tui-test/tiny-adapter", "--private"))
    assert "exists and is public; --private only applies to a repo push creates" in line


def test_a_run_without_an_adapter_is_refused(run, tmp_path):
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "run.toml").write_bytes((run / "run.toml").read_bytes())
    (stopped / "checkpoint-2").mkdir()
    (stopped / "checkpoint-2" / "trainer_state.json").write_text("{}")
    log = EventLog(stopped / "events.jsonl")
    log.status("starting")
    log.status("interrupted", "stopped by Ctrl+C")
    log.close()
    line = refusal(push(stopped, "--repo", "tui-test/early"))
    assert "the run has no adapter yet (interrupted" in line
    assert f"continue it with: tui-lora run {stopped} --resume" in line


def test_a_merge_older_than_the_adapter_is_refused(run, tmp_path, capsys):
    from tui_lora.cli import main

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "run.toml").write_bytes((run / "run.toml").read_bytes())
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    log = EventLog(resumed / "events.jsonl")
    log.emit("merge", out=str(tmp_path / "merged"))
    log.emit("result", adapter=str(resumed / "adapter"), step=4)  # the run went on and saved a newer adapter
    log.close()
    assert main(["push", str(resumed), "--merged", "--repo", "tui-test/old-merge"]) == 2
    assert (f"the merged model in {tmp_path / 'merged'} is of an earlier adapter (the run trained again after it "
            f"was merged); merge again: tui-lora merge {resumed} --out {tmp_path / 'merged'} --force"
            in capsys.readouterr().err)


def test_push_merged_after_a_real_merge(run, mirror, tmp_path):
    from tui_lora.after.merge import merge

    line = refusal(push(run, "--merged", "--repo", "tui-test/tiny-merged"))
    assert f"no merged model of this run yet; write one with: tui-lora merge {run} --out DIR" in line
    merged = merge(str(run), str(tmp_path / "merged"))
    assert merged.recorded
    done = push(run, "--merged", "--repo", "tui-test/tiny-merged")
    assert done.returncode == 0, done.stderr
    files = mirror.files_of("tui-test/tiny-merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md"} <= set(files)
    assert files["model.safetensors"] == (merged.out / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "library_name: transformers" in card
    assert 'AutoModelForCausalLM.from_pretrained("tui-test/tiny-merged")' in card
    line = refusal(push(run, "--merged", "--repo", "tui-test/tiny-adapter"))
    assert "holds a tui-lora LoRA adapter; pushing a merged model over it would mix the two" in line


def test_modelscope_through_a_stand_in_of_its_upload_calls(run, tmp_path, monkeypatch, capsys):
    """modelscope is not installed here and cannot be pointed at a loopback server: a stand-in HubApi records the
    calls push makes and reads the files it is given, the way a ModelScope upload would."""
    import shutil

    from tui_lora.cli import main

    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copytree(run / "adapter", copy / "adapter")
    shutil.copy(run / "events.jsonl", copy)
    (copy / "run.toml").write_text((run / "run.toml").read_text().replace('source = "huggingface"',
                                                                          'source = "modelscope"'))
    calls, held = [], {}  # held: what the stand-in repo holds, path -> bytes

    class HubApi:
        def repo_exists(self, repo_id, repo_type=None, token=None):
            calls.append(("repo_exists", repo_id, token))
            return bool(held)

        def get_model_files(self, model_id, revision=None, recursive=False):
            return [{"Path": path, "Name": path} for path in held]

        def create_repo(self, repo_id, *, token=None, visibility="public", repo_type="model", exist_ok=False,
                        create_default_config=True):
            calls.append(("create_repo", repo_id, token, visibility, exist_ok, create_default_config))

        def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, token=None, revision="master",
                        commit_message=None):
            calls.append(("upload_file", path_in_repo, revision))
            held[path_in_repo] = path_or_fileobj

        def upload_folder(self, *, repo_id, folder_path, token=None, revision="master", commit_message=None,
                          ignore_patterns=None):
            calls.append(("upload_folder", folder_path, revision, sorted(ignore_patterns or [])))
            import fnmatch
            from pathlib import Path

            for path in Path(folder_path).iterdir():
                if not any(fnmatch.fnmatch(path.name, pattern) for pattern in ignore_patterns or []):
                    held[path.name] = path.read_bytes()

    def model_file_download(model_id, file_path, revision=None, cache_dir=None):
        target = tmp_path / "downloaded" / file_path
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(held[file_path])
        return str(target)

    class ModelScopeConfig:
        @staticmethod
        def get_cookies():
            return None  # nobody logged in: the token comes from MODELSCOPE_API_TOKEN or not at all

    api, download = types.ModuleType("modelscope.hub.api"), types.ModuleType("modelscope.hub.file_download")
    api.HubApi, api.ModelScopeConfig, download.model_file_download = HubApi, ModelScopeConfig, model_file_download
    for name, module in (("modelscope", types.ModuleType("modelscope")), ("modelscope.hub", types.ModuleType("x")),
                         ("modelscope.hub.api", api), ("modelscope.hub.file_download", download)):
        monkeypatch.setitem(sys.modules, name, module)

    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    assert main(["push", str(copy), "--repo", "someone/tiny"]) == 2
    assert "set MODELSCOPE_API_TOKEN or log in with modelscope" in capsys.readouterr().err and not calls

    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-made-up-token")
    assert main(["push", str(copy), "--repo", "someone/tiny", "--private"]) == 0
    assert calls[:4] == [("repo_exists", "someone/tiny", "ms-made-up-token"),
                         ("create_repo", "someone/tiny", "ms-made-up-token", "private", True, False),
                         ("upload_file", "README.md", "master"), ("upload_file", "adapter_config.json", "master")]
    assert calls[4] == ("upload_folder", str(copy / "adapter"), "master",
                        ["README.md", "adapter_config.json", "training_args.bin"])
    assert set(held) == upload_set(run)
    assert held["adapter_model.safetensors"] == (run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert 'snapshot_download("someone/tiny")' in held["README.md"].decode()
    assert "pushed the LoRA adapter to someone/tiny on ModelScope" in capsys.readouterr().out
    assert main(["push", str(copy), "--repo", "someone/tiny"]) == 0  # its own card: the repo is a push's


def test_the_token_is_nowhere_but_in_the_authorization_header(run, mirror):
    """Searched in every file of the run folder (events and logs included), everything pushed, everything printed."""
    assert mirror.commits and all(commit.authorization == f"Bearer {TOKEN}" for commit in mirror.commits)
    for path in run.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path
    for commit in mirror.commits:
        for name, data in commit.added.items():
            assert TOKEN.encode() not in data, (commit.repo_id, name)
    assert OUTPUTS and not [text for text in OUTPUTS if TOKEN in text]
