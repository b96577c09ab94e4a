"""The wizard's probe, run as the real child process, and the estimates built on its answer,
checked against what transformers, peft and bitsandbytes really do with the shipped tiny model."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file
from hub_mirror import MirrorServer

from tui_lora.assets import BUILTINS
from tui_lora.config import config_from_dict
from tui_lora.errors import UserError
from tui_lora.estimate import memory_estimate, total_parameters, trainable_parameters, trainable_share
from tui_lora.probe import read_answer, run_probe

MODEL_ID = "tui-test/tiny-chat"
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory) -> dict:
    return tiny_run_file(tmp_path_factory.mktemp("probe") / "run")


@pytest.fixture(scope="module")
def tiny_info(tiny_raw) -> dict:
    info = run_probe("model", tiny_raw)
    assert info["ok"], info
    return info


@pytest.fixture(scope="module")
def tiny_model(tiny_raw):
    """The tiny model as the engine loads it for a run (float32, on the CPU)."""
    from tui_lora.engine.model import load_model

    return load_model(config_from_dict(tiny_raw))


# ---------------------------------------------------------------- model


def test_model_probe_describes_the_model_without_loading_it(tiny_info):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(BUILTINS["tiny-chat"])
    assert tiny_info["parameters"] == sum(p.numel() for p in model.parameters())
    assert tiny_info["architecture"] == "Qwen2ForCausalLM" and tiny_info["model_type"] == "qwen2"
    assert (tiny_info["vocab_size"], tiny_info["hidden_size"], tiny_info["num_layers"]) == (2560, 128, 4)
    assert tiny_info["context_length"] == 2048 and tiny_info["config_dtype"] == "float32"
    assert tiny_info["tied_embeddings"] is True and tiny_info["output_layer"] == "lm_head"
    assert [layer["name"] for layer in tiny_info["linear"]] == PROJECTIONS + ["lm_head"]
    for layer in tiny_info["linear"]:  # every group matches the real layers, bias and count included
        real = [m for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] == layer["name"]]
        assert len(real) == layer["count"]
        assert {(m.in_features, m.out_features, m.bias is not None) for m in real} == {
            (layer["in"], layer["out"], layer["bias"])}
    assert tiny_info["embedding"] == [{"name": "embed_tokens", "count": 1, "parameters": 2560 * 128,
                                       "path": "model.embed_tokens", "num_embeddings": 2560, "embedding_dim": 128}]
    assert tiny_info["bias_parameters"] == sum(p.numel() for n, p in model.named_parameters() if "bias" in n)
    assert (tiny_info["cuda"] == []) == (not torch.cuda.is_available())


def test_model_probe_of_a_hub_id_reads_the_config_and_no_weights(tmp_path, monkeypatch, tiny_info):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the child talks to the loopback mirror only
    with MirrorServer({("model", MODEL_ID): BUILTINS["tiny-chat"]}) as mirror:
        hub = {"endpoint": mirror.url, "cache_dir": str(tmp_path / "cache"), "timeout": 5.0}
        info = run_probe("model", tiny_run_file(tmp_path / "run", model={"name_or_path": MODEL_ID}, hub=hub))
        missing = run_probe("model", tiny_run_file(tmp_path / "run", model={"name_or_path": "tui-test/nope"}, hub=hub))
        paths = [path for _, path in mirror.requests]
    assert info["ok"], info
    assert {key: info[key] for key in ("parameters", "linear", "embedding", "output_layer")} == {
        key: tiny_info[key] for key in ("parameters", "linear", "embedding", "output_layer")}
    assert any(path.endswith("/config.json") for path in paths)
    assert not [path for path in paths if ".safetensors" in path.split("?")[0] and "/api/" not in path]
    assert not list((tmp_path / "cache").rglob("*.safetensors"))
    assert missing["ok"] is False
    assert missing["error"].startswith("model.name_or_path: 'tui-test/nope' was not found on the mirror")
    assert "\n" not in missing["error"]


def test_model_probe_refuses_remote_code_like_the_engine(tmp_path):
    from tui_lora.models import loading

    folder = tmp_path / "custom-model"
    shutil.copytree(BUILTINS["tiny-chat"], folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "tiny-custom"  # a type transformers does not know: only the shipped code can build it
    config["auto_map"] = {"AutoConfig": "custom_model.TinyConfig", "AutoModelForCausalLM": "custom_model.TinyModel"}
    (folder / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "the-code-ran"
    (folder / "custom_model.py").write_text(f"open({str(ran)!r}, 'w').close()\n")

    info = run_probe("model", tiny_run_file(tmp_path / "run", model={"name_or_path": str(folder)}))
    with pytest.raises(UserError) as engine_refusal, loading("model.name_or_path", str(folder)):
        raise ValueError("set trust_remote_code=True")  # what transformers raises; the engine's one line
    assert info == {"ok": False, "error": str(engine_refusal.value)}
    assert not ran.exists()


# ---------------------------------------------------------------- estimates against the real libraries


@pytest.mark.parametrize("lora", [
    {"target_modules": ["q_proj", "v_proj"]}, {"target_modules": "all-linear"}, {"use_dora": True},
    {"bias": "all"}, {"bias": "lora_only"}, {"modules_to_save": ["lm_head"]}, {"r": 16},
    {"modules_to_save": ["embed_tokens"]}, {"modules_to_save": ["norm"]}, {"modules_to_save": ["mlp"]},
    {"target_modules": ["self_attn.q_proj", "embed_tokens"], "use_dora": True},
], ids=lambda lora: ",".join(f"{k}={v}" for k, v in lora.items()))
def test_trainable_parameters_match_peft(tiny_raw, tiny_info, tiny_model, lora):
    """modules_to_save=["lm_head"] on this tied model: peft trains an untied full copy of the
    2560×128 matrix, so it counts whole; ["norm"] matches every name ending in "norm"."""
    from tui_lora.engine.model import apply_lora, count_parameters

    raw = copy.deepcopy(tiny_raw)
    raw["lora"].update(lora)
    config = config_from_dict(raw)
    trainable, total = count_parameters(apply_lora(copy.deepcopy(tiny_model), config))
    assert trainable_parameters(tiny_info, config.lora) == trainable
    # and the share the run prints (trainable of every parameter, the adapter's included), from the config alone
    assert total_parameters(tiny_info, config.lora) == total
    assert trainable_share(tiny_info, config.lora) == trainable / total


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_weight_estimates_match_the_loaded_model(tiny_raw, tiny_info, dtype):
    """get_memory_footprint counts parameters and buffers; bitsandbytes keeps the 4-bit absmaxes and
    8-bit row scales outside them, so those are added from the layers' own quantisation state.
    The tiny model is 70% linear weights, so its quantised part dominates as in a real model."""
    from tui_lora.engine.model import load_model

    raw = copy.deepcopy(tiny_raw)
    raw["model"]["dtype"] = dtype
    for mode, quantization in (("none", {}), ("4-bit", {"load_in_4bit": True}), ("8-bit", {"load_in_8bit": True})):
        config = config_from_dict({**raw, "quantization": quantization})
        model = load_model(config)
        real = model.get_memory_footprint() + _quantisation_state_bytes(model)
        estimated = memory_estimate(tiny_info, config)[mode]["weights"]
        assert abs(estimated - real) / real < (0.02 if mode == "none" else 0.15), (mode, estimated, real)
        if mode == "4-bit":
            packed = sum(p.numel() for p in model.parameters() if type(p).__name__ == "Params4bit")
            assert packed * 2 == sum(layer["count"] * layer["in"] * layer["out"]
                                     for layer in tiny_info["linear"] if layer["name"] != "lm_head")


def _quantisation_state_bytes(model) -> int:
    total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        if state is not None:
            total += state.absmax.nbytes + (state.state2.absmax.nbytes if state.nested else 0)
        scales = getattr(param, "SCB", None)
        if scales is not None:
            total += scales.nbytes
    return total


# ---------------------------------------------------------------- data and hub


def test_data_probe_shows_what_the_run_trains_on(tmp_path, tiny_raw):
    raw = copy.deepcopy(tiny_raw)
    raw["data"]["max_samples"] = 0  # the whole sample: the probe encodes only its first 200 records
    answer = run_probe("data", raw)
    assert answer["ok"], answer
    assert (answer["format"], answer["records"], answer["sampled"]) == ("belle", 200, True)
    assert answer["skipped"] == 0 and answer["skip_reasons"] == {}
    assert len(answer["lengths"]) == 200 and max(answer["lengths"]) <= 256
    assert len(answer["examples"]) == 3 and answer["used_default_template"] is False

    done = run_cli("data", str(write_run_file(tmp_path / "run.toml", raw)), "--jsonl", "--count", "1")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout.splitlines()[0])
    example = answer["examples"][0]
    assert [text for text, trained in example["segments"] if trained] == first["trained_text"]
    assert "".join(text for text, _ in example["segments"]) == first["text"]
    assert example["tokens"] == len(first["input_ids"]) == answer["lengths"][0]
    assert example["trained"] == sum(1 for label in first["labels"] if label != -100)

    own_limit = run_probe("data", tiny_raw)  # max_samples 48: the probe sees what the run sees
    assert (own_limit["records"], own_limit["sampled"]) == (48, False)
    assert own_limit["examples"] == answer["examples"]


def test_data_in_no_known_format_is_the_runs_one_line(tmp_path, tiny_raw):
    data = tmp_path / "notes.jsonl"
    data.write_text('{"title": "a", "body": "b"}\n' * 4)
    raw = copy.deepcopy(tiny_raw)
    raw["data"]["path"] = str(data)
    answer = run_probe("data", raw)
    assert answer["ok"] is False and answer["error"].startswith("data.format: could not detect the format")
    done = run_cli("data", str(write_run_file(tmp_path / "run.toml", raw)))
    assert done.stderr.splitlines()[0] == f"error: {answer['error']}"


def test_records_probe_shows_each_sources_first_record_as_mapped_and_each_failure_on_its_own(tmp_path, monkeypatch,
                                                                                         tiny_raw):
    """The wizard's data-set editor: the first record raw and as a conversation, from a file, a hub id on the
    loopback mirror and the builtin; a bad mapping or a missing file is that source's one line, the rest answer."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"talk": [{"who": "A", "say": "Hi\nthere"}, {"who": "B", "say": "Hello."}],
                                "persona": "Be brief."}) + "\n", encoding="utf-8")
    mapped = {"path": str(mine), "messages_column": "talk", "role_key": "who", "content_key": "say",
              "user_roles": ["A"], "assistant_roles": ["B"]}
    folder = tmp_path / "hub-data"
    folder.mkdir()
    shutil.copy(BUILTINS["belle-sample"], folder / "train.jsonl")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    raw = copy.deepcopy(tiny_raw)
    del raw["data"]["path"], raw["data"]["max_samples"]
    raw["data"].update(system_prompt="Be kind.", sources=[
        {"path": "builtin:belle-sample", "format": "belle"}, {**mapped, "system_column": "persona"},
        {**mapped, "messages_column": "dialog"}, {"path": str(tmp_path / "gone.jsonl")},
        {"path": "tui-test/belle-hub"}])
    with MirrorServer({("dataset", "tui-test/belle-hub"): folder}) as mirror:
        raw["hub"] = {"endpoint": mirror.url, "cache_dir": str(tmp_path / "cache"), "timeout": 5.0}
        answer = run_probe("records", raw)
    assert answer["ok"], answer
    belle, own, bad, gone, hub = answer["sources"]
    first_belle = json.loads(BUILTINS["belle-sample"].read_text(encoding="utf-8").splitlines()[0])
    assert belle["columns"] == ["instruction", "input", "output"] and belle["format"] == "belle"
    assert belle["messages"][0] == {"role": "system", "content": "Be kind."}  # the run's prompt, where none is
    assert first_belle["output"].startswith(belle["messages"][-1]["content"].removesuffix("…"))
    assert hub["messages"] == belle["messages"] and hub["where"] == "data.sources[5]" and not hub["error"]
    assert own == {"where": "data.sources[2]", "path": str(mine), "columns": ["talk", "persona"],
                   "record": json.dumps({"talk": [{"who": "A", "say": "Hi\nthere"}, {"who": "B", "say": "Hello."}],
                                         "persona": "Be brief."}, ensure_ascii=False),
                   "format": "messages", "error": "",
                   "messages": [{"role": "system", "content": "Be brief."},  # its own column, before the run's
                                {"role": "user", "content": "Hi\nthere"}, {"role": "assistant", "content": "Hello."}]}
    assert bad["error"] == ("data.sources[3].messages_column: the data has no column 'dialog'; its columns are "
                            "talk, persona") and bad["columns"] == ["talk", "persona"] and bad["messages"] == []
    assert gone["error"].startswith("data.sources[4].path: ") and "gone.jsonl" in gone["error"]


def test_modelscope_without_its_package_is_one_line(tmp_path):
    import importlib.util

    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed; this checks the message for when it is not")
    raw = tiny_run_file(tmp_path / "run", model={"name_or_path": "qwen/Qwen2.5-0.5B-Instruct"},
                        hub={"source": "modelscope"})
    for kind in ("model", "data"):
        answer = run_probe(kind, raw)
        assert answer["ok"] is False and answer["error"].endswith("pip install 'tui-lora[modelscope]'"), answer


def test_hub_probe_of_local_sources(tiny_raw):
    assert run_probe("hub", tiny_raw) == {"ok": True, "lines": ["nothing to fetch: the model and the data are local"]}


# ---------------------------------------------------------------- the wizard's side


def test_importing_the_probe_client_and_estimates_loads_no_ml_library():
    script = ("import sys, tui_lora.probe, tui_lora.estimate\n"
              "print(sorted({'torch', 'transformers', 'datasets', 'peft', 'bitsandbytes', 'huggingface_hub'}"
              " & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_failures_of_the_child_are_one_line(tiny_raw):
    slow = run_probe("model", tiny_raw, timeout=0.01)
    assert slow == {"ok": False, "error": "the model probe took longer than 0.01 s and was stopped"}
    assert run_probe("weights", tiny_raw)["error"].startswith("usage: python -m tui_lora.probe")
    crash = subprocess.CompletedProcess([], 1, stdout="", stderr="Traceback …\nMemoryError: out of memory\n")
    assert read_answer("data", crash) == {
        "ok": False, "error": "the data probe crashed (exit status 1): MemoryError: out of memory"}
    garbage = subprocess.CompletedProcess([], 0, stdout="Loading weights 100%\n", stderr="")
    assert read_answer("data", garbage)["error"] == "the data probe gave no answer: Loading weights 100%"
