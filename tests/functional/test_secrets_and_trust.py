"""Hub tokens and remote code, tried for real: runs through the command line with HF_TOKEN set.

The token is used (the loopback mirror sees it in the Authorization header) and never written:
every file each run folder holds, and everything the commands printed, is searched for it.
A model that ships its own Python code runs it only with model.trust_remote_code on, and the run
log says so; without it the run stops before the code or the weights are touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, tiny_run_file, write_run_file
from hub_mirror import MirrorServer

from tui_lora.assets import BUILTINS
from tui_lora.runs.events import read_events
from tui_lora.runs.detach import wait_gone

# Built here, not written out whole: a literal token in the repository is what secret scanners look for.
TOKEN = "hf_" + "TuiLoraTestNotAToken" + "0123456789abcdef"
MODEL_ID, DATA_ID = "tui-test/tiny-chat", "tui-test/chats"

# The model's own code leaves this file behind when it runs (the path is filled in per test).
REMOTE_CODE = '''
from pathlib import Path

from transformers import Qwen2Config, Qwen2ForCausalLM

Path({marker!r}).touch()


class RemoteTinyConfig(Qwen2Config):
    model_type = "tui-remote-tiny"


class RemoteTinyForCausalLM(Qwen2ForCausalLM):
    config_class = RemoteTinyConfig
'''


def remote_code_model(folder: Path, marker: Path) -> Path:
    """The tiny model as a repo whose classes live in a .py file next to its config (auto_map)."""
    folder.mkdir()
    source = BUILTINS["tiny-chat"]
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).write_bytes((source / name).read_bytes())
    config = json.loads((source / "config.json").read_text())
    config.update(model_type="tui-remote-tiny", architectures=["RemoteTinyForCausalLM"],
                  auto_map={"AutoConfig": "remote_tiny.RemoteTinyConfig",
                            "AutoModelForCausalLM": "remote_tiny.RemoteTinyForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "remote_tiny.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    return folder


def quick(tmp: Path, name: str, **sections) -> Path:
    raw = tiny_run_file(tmp / name, data={"validation_split": 0.0, "max_samples": 16},
                        training={"max_steps": 1, "eval_strategy": "no", "save_strategy": "no"})
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return write_run_file(tmp / f"{name}.toml", raw)


def tui_lora(args: tuple, hf_home: Path, online: bool) -> subprocess.CompletedProcess:
    """The command with HF_TOKEN set, and HF_HOME of its own: no login of the machine's user is read."""
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_HOME": str(hf_home)}
    if online:  # tests/conftest.py makes everything offline; these talk to their loopback mirror
        env.update(HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0")
    return subprocess.run([sys.executable, "-m", "tui_lora.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four runs at once, all with HF_TOKEN set: through the mirror (detached, so it writes console.log),
    against a mirror that answers 401, and a remote-code model with trust_remote_code off and on."""
    tmp = tmp_path_factory.mktemp("secrets")
    data = tmp / "chats-repo"
    data.mkdir()
    lines = BUILTINS["belle-sample"].read_text(encoding="utf-8").splitlines()[:16]
    (data / "chats.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    repos = {("model", MODEL_ID): BUILTINS["tiny-chat"], ("dataset", DATA_ID): data}
    marker_off, marker_on = tmp / "code-ran-when-off", tmp / "code-ran-when-on"
    with MirrorServer(repos) as mirror, MirrorServer(repos, mode="unauthorized") as refusing:
        hub = dict(cache_dir=str(tmp / "cache"), timeout=5.0)
        files = {
            "mirror": quick(tmp, "mirror", model={"name_or_path": MODEL_ID}, data={"path": DATA_ID},
                            hub={"endpoint": mirror.url, **hub}),
            "refused": quick(tmp, "refused", model={"name_or_path": MODEL_ID}, data={"path": DATA_ID},
                             hub={"endpoint": refusing.url, **hub}),
            "untrusted": quick(tmp, "untrusted", model={"name_or_path": str(remote_code_model(tmp / "m1",
                                                                                              marker_off))}),
            "trusted": quick(tmp, "trusted", model={"name_or_path": str(remote_code_model(tmp / "m2", marker_on)),
                                                    "trust_remote_code": True}),
        }
        commands = {name: ("run", str(path), *(["--detach"] if name == "mirror" else ["--plain"]))
                    for name, path in files.items()}

        def finish(name):
            return tui_lora(commands[name], tmp / "hf-home", online=name in ("mirror", "refused"))

        with ThreadPoolExecutor(max_workers=3) as pool:
            done = dict(zip(commands, pool.map(finish, commands)))
        detached = re.search(r"\(pid (\d+)\)", done["mirror"].stdout)
        assert detached, done["mirror"].stdout + done["mirror"].stderr
        assert wait_gone(int(detached.group(1)), 180)
        headers = {"mirror": mirror.request_headers, "refused": refusing.request_headers}
    return dict(done=done, folders={name: tmp / name for name in files}, headers=headers,
                markers=(marker_off, marker_on))


def authorization(headers: list[dict]) -> set[str]:
    return {value for h in headers for key, value in h.items() if key.lower() == "authorization"}


def test_the_token_is_sent_to_the_hub(runs):
    assert authorization(runs["headers"]["mirror"]) == {f"Bearer {TOKEN}"}
    assert authorization(runs["headers"]["refused"]) == {f"Bearer {TOKEN}"}


def test_the_token_is_in_no_file_of_any_run_folder_and_in_no_output(runs):
    searched = []
    for folder in runs["folders"].values():
        for path in folder.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
                searched.append(path.name)
    for name in ("run.toml", "events.jsonl", "train.log", "console.log", "adapter_model.safetensors"):
        assert name in searched  # the files that matter were there to be searched
    for done in runs["done"].values():
        assert TOKEN not in done.stdout + done.stderr


def test_a_run_through_the_mirror_with_a_token_trains(runs):
    events = list(read_events(runs["folders"]["mirror"] / "events.jsonl"))
    assert [e["state"] for e in events if e["type"] == "status"][-1] == "finished", \
        (runs["folders"]["mirror"] / "console.log").read_text()[-2000:]


def test_a_refused_token_is_one_line_that_says_what_to_check(runs):
    done = runs["done"]["refused"]
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith("error: model.name_or_path: the mirror http://127.0.0.1:")
    assert f"refused access to '{MODEL_ID}' (HTTP 401); it did not accept the token from HF_TOKEN" in done.stderr


def test_remote_code_without_trust_stops_before_the_code_or_the_weights(runs):
    done, folder = runs["done"]["untrusted"], runs["folders"]["untrusted"]
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stdout + done.stderr
    assert "needs its own Python code (the .py files in its repository)" in done.stderr
    assert "model.trust_remote_code is off, so nothing was run" in done.stderr
    assert "runs that code on this machine with your permissions" in done.stderr
    assert not runs["markers"][0].exists()  # the model's code never ran
    events = list(read_events(folder / "events.jsonl"))
    assert not [e for e in events if e["type"] == "model"]  # the weights never loaded
    assert [e["state"] for e in events if e["type"] == "status"][-1] == "failed"


def test_trust_remote_code_on_is_said_in_the_run_log_and_on_screen(runs):
    done, folder = runs["done"]["trusted"], runs["folders"]["trusted"]
    assert done.returncode == 0, done.stderr
    assert runs["markers"][1].exists()  # the model's own code did run
    said = "trust_remote_code is on: Python code shipped with"
    assert f"warning: {said}" in done.stdout  # the headless display
    assert said in (folder / "train.log").read_text()
    warnings = [e for e in read_events(folder / "events.jsonl") if e["type"] == "log" and said in e["message"]]
    assert [e["level"] for e in warnings] == ["warning"]
