"""Shared test helpers: small run files on the shipped tiny model, and running them for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Nothing in the tests may reach a model hub; a test that tries fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def private_user_folders(tmp_path_factory):
    """Presets and the recent-runs list go to temporary folders, never the real ~/.config and ~/.local/state.

    Session-scoped so that module-scoped fixtures that train are covered too; subprocesses inherit it.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        yield


def tiny_run_file(output_dir: Path, **sections) -> dict:
    """A short, fast run on the tiny model: a slice of the sample data, a few steps."""
    raw = {
        "model": {"name_or_path": "builtin:tiny-chat", "dtype": "float32", "device_map": "cpu"},
        "tokenizer": {"max_length": 256},
        "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "data": {"path": "builtin:belle-sample", "max_samples": 48, "validation_split": 0.25},
        "training": {"output_dir": str(output_dir), "max_steps": 4, "learning_rate": 2e-3,
                     "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
                     "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "report_to": ["none"]},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def train_run(raw: dict, resume: str | None = None):
    """Run a run file through the real engine in this process; returns (folder, result, events). Module fixtures
    that train call it directly; tests use the train_in_process fixture."""
    from tui_lora.config import config_from_dict
    from tui_lora.engine.session import execute
    from tui_lora.runs.folder import open_run_folder, resolve_paths

    config = resolve_paths(config_from_dict(raw))
    folder, checkpoint = open_run_folder(config, resume)
    seen: list[dict] = []
    try:
        result = execute(config, folder, checkpoint, listeners=[seen.append])
    finally:
        folder.release()
    return folder, result, seen


# Three runs that differ in r, lora_alpha and learning rate: what compare (the command and the wizard's screen) reads.
COMPARED_SETTINGS = [({"r": 4, "lora_alpha": 8}, 2e-3), ({"r": 8, "lora_alpha": 16}, 2e-3),
                     ({"r": 4, "lora_alpha": 8}, 5e-4)]


def train_compared_runs(base: Path) -> list[Path]:
    """The three COMPARED_SETTINGS runs trained for real, one after the other, in this process."""
    return [train_run(tiny_run_file(base / f"run-{number}", lora=lora,
                                    training={"learning_rate": rate, "max_steps": 4, "save_strategy": "no"}))[0].path
            for number, (lora, rate) in enumerate(COMPARED_SETTINGS)]


@pytest.fixture
def train_in_process():
    return train_run


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_lora.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def write_run_file(path: Path, raw: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def trained_pieces(tokenizer, ids, labels) -> list[str]:
    """The trained spans of one example, decoded, in order."""
    pieces, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current))
            current = []
    if current:
        pieces.append(tokenizer.decode(current))
    return pieces
