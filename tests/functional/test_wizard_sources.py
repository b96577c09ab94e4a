"""The wizard's data step with several data sets: the list, the editor of one, its first record, the review.

Driven under Textual's pilot with the real app, real files and the real records probe (a child process).
"""

from __future__ import annotations

import json
import tomllib

from test_wizard import drive, new_run, settle
from test_wizard_snapshots import paste_into

from tui_lora.config import load_run_file
from tui_lora.config.rules import check_rules
from tui_lora.tui.screens.data import DataScreen
from tui_lora.tui.screens.data_source import DataSourceDialog
from tui_lora.tui.screens.dialogs import ConfirmDialog, HelpDialog
from tui_lora.tui.screens.review import ReviewScreen
from tui_lora.tui.widgets.setting_field import SettingField

MAPPING = {"messages_column": "talk", "role_key": "who", "content_key": "say", "user_roles": "A",
           "assistant_roles": "B", "system_column": "persona"}


def own_layout(folder):
    """A file in a layout auto-detection does not know: turns under `talk`, speakers A and B, a persona column."""
    path = folder / "mine.jsonl"
    records = [{"talk": [{"who": "A", "say": f"Question {n}?"}, {"who": "B", "say": f"Answer {n}."}],
                "persona": "You answer in one line."} for n in range(6)]
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def two_sources(folder, **data) -> object:
    """A run file with Belle and the file above, mapped; `data` adds [data] keys."""
    path = folder / "two.toml"
    mine = own_layout(folder)
    lines = ['[model]', 'name_or_path = "builtin:tiny-chat"', '[data]',
             *(f"{key} = {json.dumps(value)}" for key, value in data.items()),
             '[[data.sources]]', 'path = "builtin:belle-sample"', '[[data.sources]]', f'path = "{mine}"',
             *(f"{key} = {json.dumps([value] if key.endswith('_roles') else value)}" for key, value in MAPPING.items()),
             '[training]', f'output_dir = "{folder / "run"}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def press(pilot, widget_id: str) -> None:
    """Focus a button (scrolling it into view) and press Enter, then wait for any probe it started."""
    pilot.app.screen.query_one(f"#{widget_id}").focus()
    await pilot.pause()
    await pilot.press("enter")
    await settle(pilot)


def text_of(app, widget_id: str) -> str:
    return str(app.screen.query_one(f"#{widget_id}").render())


def listed(app) -> list[str]:
    listing = app.screen.query_one("#sources")
    return [str(listing.get_option_at_index(index).prompt) for index in range(listing.option_count)]


def shown_keys(app) -> set[str]:
    return {field.key for field in app.screen.query(SettingField) if field.display}


def test_adding_a_data_set_keeps_the_first_and_maps_the_second_checked_on_its_first_record(tmp_path):
    mine = own_layout(tmp_path)
    saved = tmp_path / "mixed.toml"

    async def scenario(app, pilot):
        await new_run(pilot, "builtin:tiny-chat")
        app.push_screen(DataScreen())
        await pilot.pause()
        assert "data.mix" not in shown_keys(app)  # one data set: nothing to mix
        await paste_into(pilot, "data.path", "builtin:belle-sample")
        await press(pilot, "add-source")
        # The one data set [data] described is data set 1 now; the editor is open on the new one.
        assert isinstance(app.screen, DataSourceDialog) and app.screen.number == 2
        assert app.draft.sources() == [{"path": "builtin:belle-sample"}, {"path": ""}]
        await paste_into(pilot, "data.sources[2].path", str(mine))
        await paste_into(pilot, "data.sources[2].messages_column", "dialog")  # not a column of the file
        await press(pilot, "first-record")
        view = text_of(app, "record-view")
        assert "columns: talk, persona" in view, view
        assert "✗ data.sources[2].messages_column: the data has no column 'dialog'; its columns are talk, persona" \
            in view, view
        for name, value in MAPPING.items():
            await paste_into(pilot, f"data.sources[2].{name}", value)
        await press(pilot, "first-record")
        view = text_of(app, "record-view")
        assert "as a conversation (messages):" in view, view
        lines = [line.strip() for line in view.splitlines()]
        assert lines[-3:] == ["system: You answer in one line.", "user: Question 0?", "assistant: Answer 0."], view
        # A weight with the default concat is the validator's line, under the field, as it is typed.
        await paste_into(pilot, "data.sources[2].weight", "3")
        weight = next(f for f in app.screen.query(SettingField) if f.key == "data.sources[2].weight")
        assert "only matters when sources are interleaved" in str(weight.query_one(".setting-issue").render())
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, DataScreen)
        assert listed(app) == ["1. builtin:belle-sample", f"2. {mine} · mapped (talk) · ✗ 1 problem(s)"]
        shown = shown_keys(app)
        assert {"data.mix", "data.validation_per_source"} <= shown and "data.path" not in shown
        assert "data.messages_column" not in shown  # each data set has its own mapping now
        app.screen.query_one("#data--mix").value = "interleave_over"
        await pilot.pause()
        assert listed(app)[1] == f"2. {mine} · mapped (talk) · weight 3 (75%)"
        assert "interleaved by weight (25%, 75%) until every source is used whole" in text_of(app, "sources-title")
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#preset-name").value = str(saved)
        await pilot.press("enter")
        await pilot.pause()

    drive(scenario)
    written = tomllib.loads(saved.read_text(encoding="utf-8"))["data"]
    assert "path" not in written or written["path"] == ""
    config = load_run_file(saved)
    assert [source.path for source in config.data.sources] == ["builtin:belle-sample", str(mine)]
    second = config.data.sources[1]
    assert (second.messages_column, second.user_roles, second.weight) == ("talk", ["A"], 3.0)
    assert config.data.mix == "interleave_over"
    assert [str(issue) for issue in check_rules(config) if issue.key.startswith("data")] == []


def test_removing_down_to_one_data_set_gives_back_the_one_source_form(tmp_path):
    run_file = two_sources(tmp_path, mix="interleave_under", validation_per_source=True)

    async def scenario(app, pilot):
        app.go_to_step(5)
        await pilot.pause()
        assert isinstance(app.screen, DataScreen)
        assert app.focused is app.screen.query_one("#sources")  # in place of the hidden data.path
        await press(pilot, "remove-source")  # the highlighted one: data set 1, Belle
        assert isinstance(app.screen, ConfirmDialog)
        assert app.focused.id == "keep"  # Enter at once loses nothing
        await pilot.press("escape")
        await pilot.pause()
        assert len(app.draft.sources()) == 2
        await press(pilot, "remove-source")
        app.screen.query_one("#remove").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DataScreen)
        data = app.draft.raw["data"]
        # The data set left is [data]'s own again, mapping included; mixing means nothing now and is dropped.
        assert data["path"] == str(tmp_path / "mine.jsonl") and data["messages_column"] == "talk"
        assert "sources" not in data and "mix" not in data and "validation_per_source" not in data
        assert app.screen.query_one("#data--path").value == str(tmp_path / "mine.jsonl")
        shown = shown_keys(app)
        assert "data.path" in shown and "data.messages_column" in shown and "data.mix" not in shown
        assert not app.screen.query_one("#sources").display
        assert app.draft.check.issues == []

    drive(scenario, preset=run_file)


def test_a_data_sets_problem_blocks_next_and_the_review_jumps_to_its_field(tmp_path):
    run_file = two_sources(tmp_path, mix="interleave_over")

    async def scenario(app, pilot):
        app.go_to_step(5)
        await pilot.pause()
        await pilot.press("down", "enter")  # the list: Enter on data set 2 opens its editor
        await pilot.pause()
        assert isinstance(app.screen, DataSourceDialog) and app.screen.number == 2
        await paste_into(pilot, "data.sources[2].weight", "lots")
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpDialog)
        assert "[[data.sources]] (data set 2) weight = …" in " ".join(
            str(widget.render()) for widget in app.screen.query("Static"))
        await pilot.press("escape", "escape")  # the help, then the editor: back on the data step
        await pilot.pause()
        assert isinstance(app.screen, DataScreen)
        await pilot.press("ctrl+n")  # a value a data set's field cannot take keeps the user here, in that field
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, DataSourceDialog)
        assert app.focused.id == "data--sources-2--weight"
        await paste_into(pilot, "data.sources[2].weight", "2")
        await paste_into(pilot, "data.sources[2].path", str(tmp_path / "gone.jsonl"))
        await pilot.press("escape")
        app.go_to_step(7)
        await settle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        command = text_of(app, "command")
        assert "Data: 2 sources, interleaved by weight (33%, 67%) until every source is used whole" in command
        issues = app.screen.query_one("#issues")
        texts = [str(issues.get_option_at_index(index).prompt) for index in range(issues.option_count)]
        where = next(index for index, text in enumerate(texts) if text.startswith("data.sources[2].path"))
        issues.focus()
        issues.highlighted = where
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, DataSourceDialog) and app.screen.number == 2
        assert app.focused.id == "data--sources-2--path"

    drive(scenario, preset=run_file)
