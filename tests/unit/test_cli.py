"""The command line's cheap verbs: they must stay fast and never load the ML stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui_lora.cli import main
from conftest import run_cli
from tui_lora.presets import user_presets_dir

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate", "huggingface_hub")


def test_help_validate_show_presets_and_runs_import_no_ml_library():
    script = (
        "import sys, json, contextlib, io\n"
        "from tui_lora.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    codes = [main(['validate', 'presets/demo.toml']), main(['show', 'demo', '--set', 'lora.r=4']),\n"
        "             main(['presets']), main(['runs']), main(['runs', '--json'])]\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"codes": [0, 0, 0, 0, 0], "heavy": []}


def test_help_is_quick():
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tui_lora.cli", "--help"], capture_output=True, check=True)
    # generous bound for a loaded CI machine; it takes about 0.05 s here
    assert time.perf_counter() - started < 2.0


def test_show_prints_every_section(capsys):
    assert main(["show", str(REPO / "presets" / "demo.toml")]) == 0
    text = capsys.readouterr().out
    for section in ("[model]", "[hub]", "[tokenizer]", "[quantization]", "[lora]", "[data]", "[collator]",
                    "[training]", "[early_stopping]"):
        assert section in text


def test_presets_copy_refuses_to_overwrite(tmp_path, capsys):
    dest = tmp_path / "mine.toml"
    assert main(["presets", "--copy", "demo", str(dest)]) == 0
    assert dest.read_text() == (REPO / "presets" / "demo.toml").read_text()
    dest.write_text("# edited\n")
    assert main(["presets", "--copy", "demo", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert dest.read_text() == "# edited\n"
    assert main(["presets", "--copy", "demo", str(dest), "--force"]) == 0
    assert main(["presets", "--copy", "nope"]) == 2


def test_unknown_preset_name_lists_the_bundled_ones(capsys):
    assert main(["validate", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert "bundled presets are" in err and "demo" in err
    assert err.count("\n") == 1


def test_missing_run_file(capsys):
    assert main(["run", "missing.toml"]) == 2
    assert capsys.readouterr().err == "error: missing.toml: no such run file\n"


# ---------------------------------------------------------------- the user's own presets


@pytest.fixture
def user_presets(tmp_path, monkeypatch):
    """An empty user presets folder of this test's own, outside the home folder (so shown in full)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return user_presets_dir()


def save_user_preset(folder: Path, name: str, description: str, **replace: str) -> Path:
    text = (REPO / "presets" / "demo.toml").read_text()
    text = text.replace(text.splitlines()[0], f'description = "{description}"')
    for old, new in replace.items():
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_presets_lists_the_users_own_and_where_they_live(user_presets, capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert f"your presets ({user_presets}):\n  none yet" in out
    assert f"tui-lora presets --copy NAME {user_presets}/" in out

    save_user_preset(user_presets, "mine", "my own run")
    save_user_preset(user_presets, "demo", "my demo")
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    bundled, yours = out.split("your presets")
    assert "  demo " in bundled and "CPU demo" in bundled
    assert "  mine " not in bundled
    lines = yours.splitlines()
    assert any(line.split() == ["mine", "my", "own", "run"] for line in lines)
    assert any(line.split()[0] == "demo" and "(replaces the bundled one) my demo" in line for line in lines)


def test_presets_shows_a_broken_user_preset_instead_of_failing(user_presets, capsys):
    user_presets.mkdir(parents=True)
    (user_presets / "broken.toml").write_text("description = \n")
    assert main(["presets"]) == 0
    assert "broken" in capsys.readouterr().out


def test_copy_into_the_user_folder_before_it_exists(user_presets, capsys):
    assert main(["presets", "--copy", "demo", f"{user_presets}/"]) == 0
    assert (user_presets / "demo.toml").read_text() == (REPO / "presets" / "demo.toml").read_text()
    capsys.readouterr()
    assert main(["presets"]) == 0
    assert "(replaces the bundled one)" in capsys.readouterr().out


def test_validate_and_show_find_a_user_preset_by_name(user_presets, capsys):
    save_user_preset(user_presets, "mine", "my own run", **{"r = 8": "r = 12"})
    assert main(["validate", "mine"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mine: ok") and "LoRA r=12" in out
    assert main(["show", "mine"]) == 0
    assert "r = 12" in capsys.readouterr().out


def test_a_user_preset_wins_over_a_bundled_one_of_the_same_name(user_presets, capsys):
    save_user_preset(user_presets, "demo", "my demo", **{"r = 8": "r = 12"})
    assert main(["validate", "demo"]) == 0
    assert "LoRA r=12" in capsys.readouterr().out


def test_run_finds_a_user_preset_by_name(user_presets, tmp_path, capsys):
    # The preset's run folder already holds a run, so `run` stops with that message before training:
    # proof it read the user's preset, at no training cost (a real run by name is in tests/functional).
    taken = tmp_path / "taken"
    (taken / "adapter").mkdir(parents=True)
    save_user_preset(user_presets, "mine", "my own run", **{'"runs/demo"': f'"{taken}"'})
    assert main(["run", "mine"]) == 2
    assert capsys.readouterr().err == (
        f"error: {taken} already holds a run (it has finished: train it further with --resume and a higher "
        f"training.max_steps or num_train_epochs); start a new one with --set training.output_dir={taken}-2\n")


def test_unknown_preset_name_says_where_user_presets_go(user_presets, capsys):
    assert main(["run", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"; yours ({user_presets}) are none yet\n") and err.count("\n") == 1
    save_user_preset(user_presets, "mine", "my own run")
    assert main(["run", "nope"]) == 2
    assert capsys.readouterr().err.endswith(f"; yours ({user_presets}) are mine\n")


def test_without_a_terminal_the_wizard_is_not_started():
    # tui-lora alone in a pipe or a script: the help, not a full-screen app that cannot draw
    bare = run_cli()
    assert bare.returncode == 0 and "usage: tui-lora" in bare.stdout
    edit = run_cli("edit", "demo")
    assert edit.returncode == 2 and edit.stderr.strip().splitlines() == [
        "error: the wizard needs an interactive terminal; in scripts use tui-lora run PRESET "
        "(tui-lora --help lists every command)"]


def test_a_mistyped_command_is_one_line_with_the_nearest_one():
    """Like a misspelled key in a run file: the near miss, not argparse's usage and list of choices."""
    typo = run_cli("rnu", "demo")
    assert typo.returncode == 2 and typo.stdout == ""
    assert typo.stderr == "error: unknown command 'rnu'; did you mean 'run'? (tui-lora --help lists every command)\n"
    nested = run_cli("hub", "chek", "demo")
    assert nested.returncode == 2
    assert nested.stderr.startswith("error: unknown command 'chek'; did you mean 'check'?")
    assert nested.stderr.count("\n") == 1
    nothing_near = run_cli("xyzzy")
    assert nothing_near.returncode == 2 and nothing_near.stderr.count("\n") == 1
    assert "unknown command 'xyzzy'; commands are run, validate" in nothing_near.stderr
    assert run_cli("--version").returncode == 0 and run_cli("runs", "--json").returncode == 0


def test_a_run_file_without_a_run_folder_gets_a_fresh_one_each_time(tmp_path, monkeypatch, capsys):
    import datetime

    from conftest import tiny_run_file, write_run_file

    raw = tiny_run_file(tmp_path / "unused")
    del raw["training"]["output_dir"]
    run_file = write_run_file(tmp_path / "no-folder.toml", raw)
    monkeypatch.chdir(tmp_path)
    day = datetime.date.today().isoformat()
    assert main(["run", str(run_file), "--print-command"]) == 0
    out, err = capsys.readouterr()
    # decided once, here, and handed to every process the run starts (they read the run file again)
    assert f"--set training.output_dir=runs/tiny-chat-{day}-1" in out
    assert err == f"run folder: runs/tiny-chat-{day}-1 (the run file names no training.output_dir)\n"
    (tmp_path / "runs" / f"tiny-chat-{day}-1").mkdir(parents=True)
    assert main(["run", str(run_file), "--print-command", "--set", "model.name_or_path=builtin:tiny-chat"]) == 0
    assert f"training.output_dir=runs/tiny-chat-{day}-2" in capsys.readouterr().out
    # a folder the user names, in the file or with --set, is theirs: nothing is added
    assert main(["run", str(run_file), "--print-command", "--set", "training.output_dir=mine"]) == 0
    out, err = capsys.readouterr()
    assert out.count("training.output_dir") == 1 and err == ""
