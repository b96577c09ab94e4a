"""Where the user's own files live: the XDG folders (the presets folder among them), the recent-runs list, paths shown with ~."""

from __future__ import annotations

import json

import pytest

from tui_lora import places, presets
from tui_lora.errors import UserError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home and XDG folders of this test's own."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def make_run(path):
    path.mkdir(parents=True)
    (path / "run.toml").write_text("[training]\n")
    return path


# ---------------------------------------------------------------- folders


def test_folders_follow_the_xdg_variables_and_are_not_made_in_advance(home):
    assert presets.user_presets_dir() == home / "config" / "tui-lora" / "presets"
    assert places.recent_runs_file() == home / "state" / "tui-lora" / "recent-runs.json"
    assert presets.user_presets() == {}
    assert places.recent_runs() == []
    assert not (home / "config").exists() and not (home / "state").exists()


@pytest.mark.parametrize("value", ["", "relative/config"])
def test_an_empty_or_relative_xdg_variable_is_ignored(home, monkeypatch, value):
    monkeypatch.setenv("XDG_CONFIG_HOME", value)
    monkeypatch.setenv("XDG_STATE_HOME", value)
    assert presets.user_presets_dir() == home / "home" / ".config" / "tui-lora" / "presets"
    assert places.recent_runs_file() == home / "home" / ".local" / "state" / "tui-lora" / "recent-runs.json"


def test_unset_xdg_variables_mean_the_home_defaults(home, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert presets.user_presets_dir() == home / "home" / ".config" / "tui-lora" / "presets"
    assert places.recent_runs_file() == home / "home" / ".local" / "state" / "tui-lora" / "recent-runs.json"


def test_display_path_writes_home_as_tilde(home):
    assert places.display_path(home / "home") == "~"
    assert places.display_path(home / "home" / "runs" / "a") == "~/runs/a"
    assert places.display_path(str(home / "home" / "x.toml")) == "~/x.toml"
    assert places.display_path(home / "homework" / "a") == str(home / "homework" / "a")  # a prefix is not home
    assert places.display_path("runs/a") == "runs/a"


# ---------------------------------------------------------------- presets


def test_user_presets_are_the_toml_files_there_sorted_by_name(home):
    folder = presets.user_presets_dir()
    folder.mkdir(parents=True)
    for name in ("zeta.toml", "alpha.toml", "notes.txt", ".hidden.toml"):
        (folder / name).write_text("")
    (folder / "folder.toml").mkdir()
    assert presets.user_presets() == {"alpha": folder / "alpha.toml", "zeta": folder / "zeta.toml"}
    assert list(presets.user_presets()) == ["alpha", "zeta"]


@pytest.mark.parametrize("name", ["mine", "mine.toml", "Qwen2.5-7b_v2", "a.b"])
def test_preset_path_for_good_names(home, name):
    stem = name.removesuffix(".toml")
    assert presets.preset_path(name) == presets.user_presets_dir() / f"{stem}.toml"


@pytest.mark.parametrize("name", ["", ".toml", "a/b", "../evil", "a\\b", ".hidden", "..", "my run", "naïve",
                                  "x;y", "tab\there"])
def test_preset_path_refuses_bad_names_in_one_line(home, name):
    with pytest.raises(UserError) as caught:
        presets.preset_path(name)
    message = str(caught.value)
    assert "\n" not in message
    assert "letters, digits, '.', '_' and '-'" in message
    assert not presets.user_presets_dir().exists()


# ---------------------------------------------------------------- recent runs


def test_recent_runs_newest_first_without_duplicates(home):
    a, b = make_run(home / "runs" / "a"), make_run(home / "runs" / "b")
    places.record_run(a)
    places.record_run(b)
    places.record_run(a)
    assert places.recent_runs() == [a, b]
    assert json.loads(places.recent_runs_file().read_text()) == [str(a), str(b)]
    assert [p.name for p in places.recent_runs_file().parent.iterdir()] == ["recent-runs.json"]  # no temp left


def test_record_run_stores_the_folder_absolute(home, monkeypatch):
    monkeypatch.chdir(home)
    make_run(home / "runs" / "rel")
    places.record_run("runs/rel")
    assert places.recent_runs() == [home / "runs" / "rel"]


def test_recent_runs_keeps_twenty_and_returns_the_limit(home):
    folders = [make_run(home / "runs" / f"r{i:02}") for i in range(25)]
    for folder in folders:
        places.record_run(folder)
    newest_first = folders[::-1]
    assert len(json.loads(places.recent_runs_file().read_text())) == 20
    assert places.recent_runs() == newest_first[:10]
    assert places.recent_runs(limit=3) == newest_first[:3]
    assert places.recent_runs(limit=50) == newest_first[:20]


def test_recent_runs_skips_folders_gone_or_without_a_run_file(home):
    kept = make_run(home / "runs" / "kept")
    gone = make_run(home / "runs" / "gone")
    emptied = make_run(home / "runs" / "emptied")
    for folder in (kept, gone, emptied):
        places.record_run(folder)
    (gone / "run.toml").unlink()
    gone.rmdir()
    (emptied / "run.toml").unlink()
    assert places.recent_runs() == [kept]


@pytest.mark.parametrize("text", ["{not json", '{"runs": []}', "", "\xff\xfe", '[1, null, "relative/run"]'])
def test_a_damaged_recent_file_reads_as_empty_and_is_replaced(home, text):
    places.recent_runs_file().parent.mkdir(parents=True)
    places.recent_runs_file().write_text(text, encoding="latin-1")
    assert places.recent_runs() == []
    run = make_run(home / "runs" / "a")
    places.record_run(run)
    assert places.recent_runs() == [run]


def test_an_unwritable_state_folder_never_fails_the_run(home, monkeypatch):
    # a file where the folder should be: refused even for root, unlike a chmod
    (home / "state-file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state-file"))
    places.record_run(make_run(home / "runs" / "a"))
    assert places.recent_runs() == []
    assert (home / "state-file").read_text() == ""


def test_a_list_that_cannot_be_replaced_leaves_no_temporary_file(home):
    places.recent_runs_file().mkdir(parents=True)  # a folder where the file should be: the rename fails
    places.record_run(make_run(home / "runs" / "a"))
    assert [p.name for p in places.recent_runs_file().parent.iterdir()] == ["recent-runs.json"]
    assert places.recent_runs() == []
