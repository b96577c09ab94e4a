"""The command line's cheap verbs: they must stay fast and never load the ML stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tui_lora.cli import main

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate", "huggingface_hub")


def test_help_validate_show_and_presets_import_no_ml_library():
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
        "             main(['presets'])]\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"codes": [0, 0, 0], "heavy": []}


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
