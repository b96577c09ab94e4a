"""Path-valued fields the file system refuses, through the real `tui-lora validate` and `tui-lora run`.

A randomly mutated run file once ended with exit 1 and a raw "OSError: [Errno 36] File name too long":
every such value is bad input like any other, one line naming the field and exit status 2, found before
anything is written or loaded.
"""

from __future__ import annotations

import os

import pytest
from conftest import run_cli, tiny_run_file, write_run_file

LONG = "a" * 300  # longer than any file system's 255-byte name limit, and than a hub name's 96 characters


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-paths")
    (folder / "a-file").write_text("not a folder\n", encoding="utf-8")
    return folder


def mutations(workdir):
    a_file = workdir / "a-file"
    return [
        ("tokenizer", "name_or_path", LONG, "is not a hub id: a hub name has at most 96 characters"),
        ("tokenizer", "name_or_path", f"./{LONG}", "is too long for a file name here"),
        ("model", "name_or_path", f"{workdir}/{LONG}", "is too long for a file name here"),
        ("data", "path", f"{a_file}/chats.jsonl", f"goes through {a_file}, which is a file, not a folder"),
        ("data", "path", "chats\0.jsonl", "contains a NUL character"),
        ("training", "output_dir", f"{workdir}/{LONG}/run", "is too long for a file name here"),
        ("training", "output_dir", f"{a_file}/run", f"goes through {a_file}, which is a file"),
        ("training", "output_dir", str(a_file), "is a file; give a folder"),
        ("training", "logging_dir", "tb\0", "contains a NUL character"),
        ("hub", "cache_dir", LONG, "is too long for a file name here"),
        ("launch", "config_file", f"{a_file}/accelerate.yaml", "which is a file, not a folder"),
    ]


@pytest.mark.parametrize("verb", ["validate", "run"])
def test_paths_the_file_system_refuses_are_one_line_naming_the_field(workdir, verb):
    for section, key, value, expected in mutations(workdir):
        raw = tiny_run_file(workdir / "runs" / "r", **{section: {key: value}})
        run_file = write_run_file(workdir / f"{section}.{key}.toml", raw)
        done = run_cli(verb, str(run_file), cwd=workdir, timeout=60)
        shown = done.stderr.replace(LONG, "<300 a>")
        assert done.returncode == 2, (section, key, shown, done.stdout)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, shown
        assert done.stderr.startswith(f"error: {run_file}: {section}.{key}: "), shown
        assert expected in done.stderr, shown
    assert not (workdir / "runs").exists()  # refused before any run folder was made


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read anywhere")
def test_a_folder_that_cannot_be_searched_is_named(workdir, tmp_path):
    locked = tmp_path / "locked"
    (locked / "model").mkdir(parents=True)
    locked.chmod(0)
    try:
        raw = tiny_run_file(tmp_path / "run", model={"name_or_path": str(locked / "model")})
        done = run_cli("validate", str(write_run_file(tmp_path / "run.toml", raw)), timeout=60)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "model.name_or_path: " in done.stderr and "permission denied" in done.stderr
