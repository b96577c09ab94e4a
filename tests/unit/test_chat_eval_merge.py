"""The pure parts of chat, eval and merge: held-back end markers, trimming a conversation, folder checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tui_lora.after.chat import HeldBack, trim_history
from tui_lora.after.evaluate import EvalReport, Score, data_config, report_lines
from tui_lora.after.loading import find_adapter
from tui_lora.after.merge import check_destination
from tui_lora.cli import main
from tui_lora.config.schema import RunConfig
from tui_lora.errors import UserError

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate", "huggingface_hub")


# ---------------------------------------------------------------- streaming past a plain-text end marker


def stream(pieces: list[str], markers: tuple[str, ...]) -> tuple[list[str], str]:
    shown: list[str] = []
    held = HeldBack(markers, shown.append)
    for piece in pieces:
        held.add(piece)
    return shown, held.finish()


def test_a_marker_spelt_in_pieces_is_never_shown():
    shown, text = stream(["Hello", " wor", "ld<", "|im", "_end", "|>", "\nmore"], ("<|im_end|>",))
    assert "".join(shown) == "Hello world" == text
    assert "<" not in "".join(shown)


def test_text_that_only_looks_like_a_marker_start_is_shown_once_it_is_not_one():
    shown, text = stream(["a <", "b> c"], ("<|im_end|>",))
    assert shown == ["a ", "<b> c"] and text == "a <b> c"


def test_a_held_tail_is_shown_at_the_end_when_no_marker_follows():
    shown, text = stream(["ends with <|im"], ("<|im_end|>",))
    assert "".join(shown) == "ends with <|im" == text


def test_without_markers_every_piece_shows_at_once():
    held = HeldBack((), None)
    held.add("x<")
    assert held.shown == 2 and held.finish() == "x<" and not held.marker_seen


# ---------------------------------------------------------------- trimming a long conversation


def conversation(exchanges: int, system: bool = True) -> list[dict]:
    messages = [{"role": "system", "content": "sys"}] if system else []
    for i in range(exchanges):
        messages += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return messages + [{"role": "user", "content": "last"}]


def test_oldest_exchanges_go_first_and_the_system_prompt_stays():
    trimmed = trim_history(conversation(5), lambda m: len(m) > 4)
    assert [m["content"] for m in trimmed] == ["sys", "q4", "a4", "last"]


def test_the_newest_question_is_kept_even_when_nothing_fits():
    assert [m["content"] for m in trim_history(conversation(3, system=False), lambda m: True)] == ["last"]


def test_a_conversation_that_fits_is_left_alone():
    messages = conversation(2)
    assert trim_history(messages, lambda m: False) == messages


# ---------------------------------------------------------------- what the commands are pointed at


def test_find_adapter_says_what_is_wrong_with_the_folder(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        find_adapter(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        find_adapter(str(tmp_path / "file.txt"))
    with pytest.raises(UserError, match="not a run folder .* nor an adapter folder"):
        find_adapter(str(tmp_path))


def test_a_run_without_adapter_points_at_its_latest_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (run / "run.toml").write_text("")
    with pytest.raises(UserError, match=r"no adapter yet .* use .*checkpoint-4 instead"):
        find_adapter(str(run))


def test_an_adapter_folder_alone_takes_its_base_model_from_adapter_config(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-0.5B",
                                                              "revision": "abc123"}))
    trained = find_adapter(str(tmp_path), ["model.device_map=cpu"])
    assert trained.run_folder is None and trained.adapter == tmp_path
    assert trained.config.model.name_or_path == "Qwen/Qwen2.5-0.5B"
    assert trained.config.model.revision == "abc123" and trained.config.model.device_map == "cpu"

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(UserError, match="does not name its base model"):
        find_adapter(str(tmp_path))


def test_merge_destination_rules(tmp_path):
    run, adapter = tmp_path / "run", tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    check_destination(tmp_path / "new", False, adapter, run)  # new: fine
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", False, adapter, run)  # empty: fine
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty.*--force"):
        check_destination(tmp_path / "full", False, adapter, run)
    check_destination(tmp_path / "full", True, adapter, run)
    for own in (run, adapter, tmp_path):
        with pytest.raises(UserError, match="the run's own files"):
            check_destination(own, True, adapter, run)


def test_eval_needs_a_validation_split_or_a_file(tmp_path):
    from dataclasses import replace

    config = RunConfig()
    no_split = replace(config, data=replace(config.data, validation_split=0.0))
    with pytest.raises(UserError, match="no validation split.*--data"):
        data_config(no_split, None)
    with pytest.raises(UserError, match="no such file"):
        data_config(config, str(tmp_path / "nope.jsonl"))
    (tmp_path / "mine.jsonl").write_text("{}\n")
    given = data_config(replace(config, data=replace(config.data, format="belle", max_samples=5)),
                        str(tmp_path / "mine.jsonl"))
    assert (given.data.format, given.data.validation_split, given.data.max_samples) == ("auto", 0.0, 0)
    assert given.data.path == str(tmp_path / "mine.jsonl")


def test_the_eval_table_lines_up():
    report = EvalReport("x.jsonl (3 conversations)", 3, [Score("base", 7.5, 1200), Score("adapter", 1.25, 1200)])
    lines = report_lines(report)
    assert lines[0] == "3 examples from x.jsonl (3 conversations)"
    assert len({len(line) for line in lines[1:]}) == 1  # every row as wide as the header
    assert lines[3].split() == ["adapter", "1.2500", "3.49", "1,200"]


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("args, message", [
    (["chat", "RUN", "--temperature", "-1"], "0 or more"),
    (["chat", "RUN", "--top-p", "0"], "above 0 and at most 1"),
    (["chat", "RUN", "--max-new-tokens", "0"], "1 or more"),
    (["merge", "RUN"], "--out"),
])
def test_bad_options_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_refusing_a_folder_loads_no_ml_library(tmp_path):
    script = (
        "import sys, json, contextlib, io\n"
        "from tui_lora.cli import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        f"    codes = [main(['chat', {str(tmp_path)!r}]), main(['eval', {str(tmp_path / 'x')!r}]),\n"
        f"             main(['merge', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}])]\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy, 'lines': err.getvalue().count(chr(10))}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {"codes": [2, 2, 2], "heavy": [], "lines": 3}
