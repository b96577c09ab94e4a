"""A real run started by a user preset's name lands in the recent-runs list."""

from __future__ import annotations

from conftest import run_cli, tiny_run_file, write_run_file

from tui_lora import places, presets


def test_run_by_user_preset_name_is_recorded_in_recent_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    presets.user_presets_dir().mkdir(parents=True)
    earlier = tmp_path / "earlier"
    (earlier / "adapter").mkdir(parents=True)
    (earlier / "run.toml").write_text("")
    places.record_run(earlier)

    run_folder = tmp_path / "runs" / "tiny"
    write_run_file(presets.preset_path("tiny"), tiny_run_file(
        run_folder, training={"max_steps": 1, "eval_strategy": "no", "save_strategy": "no"}))
    done = run_cli("run", "tiny", cwd=tmp_path)  # the subprocess inherits the XDG folders set above
    assert done.returncode == 0, done.stderr + done.stdout

    assert places.recent_runs() == [run_folder, earlier]
    assert (run_folder / "adapter").is_dir()
