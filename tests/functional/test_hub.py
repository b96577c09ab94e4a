"""Models and data from a hub, through a real HTTP mirror on 127.0.0.1 (tests/hub_mirror.py)."""

from __future__ import annotations

import socket
import time
import tomllib

import pytest
from conftest import tiny_run_file
from hub_mirror import MirrorServer

from tui_lora.assets import BUILTINS
from tui_lora.cli import main
from tui_lora.config import config_from_dict
from tui_lora.errors import UserError
from tui_lora.hub import fetch

MODEL_ID, DATA_ID = "tui-test/tiny-chat", "tui-test/belle-sample"


@pytest.fixture
def online(monkeypatch):
    """conftest makes the test process offline; these tests talk to their own server only."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def repos(tmp_path):
    data = tmp_path / "belle-repo"
    data.mkdir()
    lines = BUILTINS["belle-sample"].read_text(encoding="utf-8").splitlines()[:40]
    (data / "chats.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {("model", MODEL_ID): BUILTINS["tiny-chat"], ("dataset", DATA_ID): data}


def hub_run(tmp_path, url, **hub):
    return tiny_run_file(tmp_path / "run", model={"name_or_path": MODEL_ID}, data={"path": DATA_ID, "max_samples": 0},
                         hub={"endpoint": url, "cache_dir": str(tmp_path / "cache"), "timeout": 3.0, **hub},
                         training={"max_steps": 2, "eval_strategy": "no"} | hub.pop("training", {}))


def test_a_run_downloads_its_model_and_data_through_a_mirror(tmp_path, online, repos, train_in_process):
    with MirrorServer(repos) as mirror:
        raw = hub_run(tmp_path, mirror.url)
        raw["data"]["validation_split"] = 0.0
        folder, result, events = train_in_process(raw)
        paths = [path for _, path in mirror.requests]
    assert result["step"] == 2
    assert f"/api/models/{MODEL_ID}/revision/main" in paths
    assert any(path.endswith("/resolve/" + MirrorServer.commit_sha("model", MODEL_ID) + "/model.safetensors")
               or path.endswith("/resolve/main/model.safetensors") for path in paths)
    assert any(path.startswith(f"/datasets/{DATA_ID}/resolve/") for path in paths)
    downloads = [e for e in events if e["type"] == "download"]
    starts = {e["repo"]: e for e in downloads if e.get("state") == "start"}
    assert starts[MODEL_ID]["bytes_to_fetch"] > 4_000_000 and starts[DATA_ID]["files_to_fetch"] == 1
    assert any(e.get("files_done") for e in downloads)  # per-file progress reached the event log
    assert list((tmp_path / "cache").glob("models--tui-test--tiny-chat/snapshots/*/model.safetensors"))
    resolved = tomllib.loads(folder.run_file.read_text())
    assert resolved["model"]["name_or_path"] == MODEL_ID  # the run file keeps the id, not a cache path
    assert resolved["data"]["path"] == DATA_ID

    # the same run offline, with the server gone: everything comes from hub.cache_dir
    raw = hub_run(tmp_path, "", offline=True)
    raw["training"]["output_dir"] = str(tmp_path / "offline-run")
    raw["data"]["validation_split"] = 0.0
    _, result, _ = train_in_process(raw)
    assert result["step"] == 2


def test_missing_id_wrong_endpoint_hang_and_drop_are_one_clear_line(tmp_path, online, repos):
    config = config_from_dict(hub_run(tmp_path, "http://127.0.0.1:9"))
    with MirrorServer(repos) as mirror:
        settings = config_from_dict(hub_run(tmp_path, mirror.url)).hub
        with pytest.raises(UserError, match=f"'tui-test/nope' was not found on the mirror {mirror.url}"):
            fetch("tui-test/nope", "model", "main", settings)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = config_from_dict(hub_run(tmp_path, f"http://127.0.0.1:{port}")).hub
    with pytest.raises(UserError, match="model.name_or_path: .*tiny-chat.*check the network or hub.endpoint"):
        fetch(MODEL_ID, "model", "main", settings)
    for mode in ("hang", "drop", "error"):
        with MirrorServer(repos, mode=mode) as mirror:
            settings = config_from_dict(hub_run(tmp_path / mode, mirror.url)).hub
            started = time.monotonic()
            with pytest.raises(UserError) as caught:
                fetch(MODEL_ID, "model", "main", settings)
            assert time.monotonic() - started < 45, mode
        message = str(caught.value)
        assert message.startswith("model.name_or_path: ") and "\n" not in message, (mode, message)
        assert "tui-test/tiny-chat" in message and mirror.url in message, (mode, message)
    assert config.hub.timeout == 3.0


def test_hub_check_reports_reachability_existence_and_size(tmp_path, online, repos, capsys):
    import tomli_w

    with MirrorServer(repos) as mirror:
        run_file = tmp_path / "run.toml"
        run_file.write_text(tomli_w.dumps(hub_run(tmp_path, mirror.url)))
        assert main(["hub", "check", str(run_file)]) == 0
        out = capsys.readouterr().out
        assert f"endpoint {mirror.url}: reachable" in out
        assert f"model {MODEL_ID}: found, " in out and "MB to download (0 cached)" in out
        assert f"dataset {DATA_ID}: found, 1 files" in out
        assert main(["hub", "check", str(run_file), "--set", "model.name_or_path=tui-test/missing"]) == 2
        assert "tui-test/missing: 'tui-test/missing' was not found" in capsys.readouterr().out


def test_sources_other_than_huggingface(tmp_path):
    import importlib.util

    if importlib.util.find_spec("modelscope") is None:
        settings = config_from_dict(hub_run(tmp_path, "", source="modelscope")).hub
        with pytest.raises(UserError, match=r"pip install 'tui-lora\[modelscope\]'"):
            fetch("qwen/Qwen2.5-0.5B-Instruct", "model", "main", settings)
    from tui_lora.config import ConfigError

    with pytest.raises(ConfigError, match="looks like a hub id, but hub.source is \"local\""):
        config_from_dict(hub_run(tmp_path, "", source="local"))


def test_modelscope_fetches_through_its_snapshot_download(tmp_path, monkeypatch, train_in_process):
    """modelscope is not installed on the test machines and its client cannot be pointed at a loopback
    server, so a stand-in `modelscope` package records the calls and serves the shipped files."""
    import sys
    import types

    calls = []

    def snapshot_download(model_id, revision=None, cache_dir=None, local_files_only=False):
        calls.append(("model", model_id, revision, cache_dir, local_files_only))
        return str(BUILTINS["tiny-chat"])

    def dataset_snapshot_download(dataset_id, cache_dir=None, local_files_only=False):
        calls.append(("dataset", dataset_id, cache_dir, local_files_only))
        folder = tmp_path / "ms-data"
        folder.mkdir(exist_ok=True)
        (folder / "chats.jsonl").write_text(BUILTINS["belle-sample"].read_text(encoding="utf-8"), encoding="utf-8")
        return str(folder)

    stand_in = types.ModuleType("modelscope.hub.snapshot_download")
    stand_in.snapshot_download, stand_in.dataset_snapshot_download = snapshot_download, dataset_snapshot_download
    for name, module in (("modelscope", types.ModuleType("modelscope")),
                         ("modelscope.hub", types.ModuleType("modelscope.hub")),
                         ("modelscope.hub.snapshot_download", stand_in)):
        monkeypatch.setitem(sys.modules, name, module)

    raw = hub_run(tmp_path, "", source="modelscope")
    raw["model"]["name_or_path"], raw["data"]["path"] = "qwen/tiny", "someone/belle"
    raw["data"]["validation_split"] = 0.0
    _, result, events = train_in_process(raw)
    assert result["step"] == 2
    cache = str(tmp_path / "cache")
    assert calls == [("model", "qwen/tiny", None, cache, False), ("dataset", "someone/belle", cache, False)]
    assert [e["repo"] for e in events if e["type"] == "download" and e.get("state") == "done"] == [
        "qwen/tiny", "someone/belle"]


def test_a_separate_tokenizer_fetches_no_weights_and_offline_check_reads_the_cache(tmp_path, online, repos, capsys):
    import tomli_w

    with MirrorServer(repos) as mirror:
        raw = hub_run(tmp_path, mirror.url)
        settings = config_from_dict(raw).hub
        folder = fetch(MODEL_ID, "tokenizer", "main", settings)
        assert (folder / "tokenizer.json").exists() and not (folder / "model.safetensors").exists()
        fetch(DATA_ID, "dataset", "main", settings)
    run_file = tmp_path / "run.toml"
    raw["model"]["name_or_path"] = "builtin:tiny-chat"
    raw["tokenizer"]["name_or_path"] = MODEL_ID
    raw["hub"].update(offline=True, endpoint="")
    run_file.write_text(tomli_w.dumps(raw))
    assert main(["hub", "check", str(run_file)]) == 0  # the server is gone; the cache answers
    out = capsys.readouterr().out
    assert f"tokenizer {MODEL_ID}: in the local cache" in out and f"dataset {DATA_ID}: in the local cache" in out


def test_bounded_client_keeps_the_proxy_settings(monkeypatch):
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory, get_session

    from tui_lora.hub import bound_timeouts

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    try:
        bound_timeouts(5)
        patterns = {pattern.pattern for pattern in get_session()._mounts}
        assert "https://" in patterns  # requests to https hosts go through the proxy
    finally:
        set_client_factory(default_client_factory)


def closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(**changes) -> dict:
    """This process's environment without the offline switches conftest sets, plus changes."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                              "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    return {**env, **changes}


def test_hub_check_advice_follows_what_is_set(tmp_path, repos):
    """An unreachable mirror is not answered with "use a mirror such as …", and offline switches in the
    environment are named, since the run would trip over them."""
    from conftest import run_cli, write_run_file

    mirror = f"http://127.0.0.1:{closed_port()}"
    run_file = write_run_file(tmp_path / "run.toml", hub_run(tmp_path, mirror))
    done = run_cli("hub", "check", str(run_file), env=environment(HF_HUB_OFFLINE="1"), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("HF_HUB_OFFLINE=1 is set in the environment: nothing is downloaded"), lines
    assert f"endpoint {mirror}: NOT reachable" in lines[1]
    assert lines[2] == (f"check the network and the address; hub.endpoint is already the mirror {mirror}: try "
                        "another mirror, or leave hub.endpoint empty for huggingface.co")
    assert "such as https://hf-mirror.com" not in done.stdout

    # TRANSFORMERS_OFFLINE turns huggingface_hub offline too: the ids are looked up in the cache, and named
    with MirrorServer(repos) as server:
        write_run_file(run_file, hub_run(tmp_path, server.url))
        done = run_cli("hub", "check", str(run_file), env=environment(TRANSFORMERS_OFFLINE="1",
                                                                       HF_DATASETS_OFFLINE="1"), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("TRANSFORMERS_OFFLINE=1 is set in the environment: nothing is downloaded")
    assert "HF_DATASETS_OFFLINE=1 is set in the environment; tui-lora fetches data through huggingface_hub" in out
    assert (f"model {MODEL_ID}: '{MODEL_ID}' is not in the local cache and TRANSFORMERS_OFFLINE=1 is set in the "
            "environment, so nothing is downloaded; unset TRANSFORMERS_OFFLINE") in out
    assert not [path for _, path in server.requests if "/api/models/" in path]  # the check itself stayed offline

    # the official hub unreachable (HF_ENDPOINT points elsewhere here): a mirror is the advice
    write_run_file(run_file, hub_run(tmp_path, ""))
    done = run_cli("hub", "check", str(run_file), env=environment(HF_ENDPOINT=mirror), timeout=60)
    assert f"endpoint {mirror} (from HF_ENDPOINT): NOT reachable" in done.stdout
    assert "HF_ENDPOINT in the environment points at" in done.stdout and "OFFLINE" not in done.stdout


def test_a_plain_run_through_a_mirror_prints_plain_lines_only(tmp_path, repos):
    """stdout a pipe: no library progress bar (huggingface_hub's download bars, transformers' loading bar)
    reaches it or stderr; downloads are the run's own lines."""
    from conftest import run_cli, write_run_file

    with MirrorServer(repos) as mirror:
        raw = hub_run(tmp_path, mirror.url)
        raw["data"]["validation_split"] = 0.0
        done = run_cli("run", str(write_run_file(tmp_path / "run.toml", raw)), env=environment(), timeout=240)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "\x1b[" not in output and "\r" not in output, repr(output[:3000])
    assert done.stderr == ""
    assert f"download: {MODEL_ID} from the mirror {mirror.url}: " in done.stdout
    assert f"download: {MODEL_ID}: 1/" in done.stdout and f"download: {DATA_ID} ready in " in done.stdout
    assert "[finished]" in done.stdout
