"""Records -> conversations: detection, each format, and every documented trap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui_lora.data.formats import FORMATS, BadRecord, detect_format, to_messages


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


def belle(instruction, output="a2", **extra):
    return {"instruction": instruction, "input": "", "output": output, **extra}


# ---------------------------------------------------------------------------
# detect_format
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"messages": [U("q"), A("a")]}, "messages"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "sharegpt"),
        (belle("Human:q1\nAssistant:"), "belle"),
        ({"instruction": "Translate", "input": "hi", "output": "salut"}, "alpaca"),
        ({"instruction": "Explain what Human: means", "output": "x"}, "alpaca"),  # not at line start
    ],
)
def test_detect_format(record, expected):
    assert detect_format([record, record]) == expected


def test_detect_format_belle_with_some_single_turn_rows():
    rows = [{"instruction": "plain", "input": "", "output": "x"}, belle("Human:q\nAssistant:")]
    assert detect_format(rows) == "belle"


def test_detect_format_accepts_any_iterable_of_records():
    rows = ({"messages": [U("q"), A("a")]} for _ in range(10))
    assert detect_format(rows) == "messages"


def test_detect_format_names_keys_and_formats_when_unknown():
    with pytest.raises(BadRecord) as info:
        detect_format([{"prompt": "q", "completion": "a"}])
    message = str(info.value)
    assert "completion" in message and "prompt" in message
    for fmt in FORMATS:
        assert fmt in message


def test_detect_format_rejects_mixed_and_empty():
    with pytest.raises(BadRecord, match="mix"):
        detect_format([{"messages": [U("q"), A("a")]}, {"instruction": "q", "output": "a"}])
    with pytest.raises(BadRecord):
        detect_format([])


def test_detect_format_ignores_whitespace_before_first_marker():
    assert detect_format([belle("\n  Human:q\nAssistant:")]) == "belle"


def test_unknown_format_name_is_a_programming_error():
    with pytest.raises(ValueError):
        to_messages({"messages": []}, "chatml")
    with pytest.raises(BadRecord):
        to_messages(["not", "a", "dict"], "messages")


# ---------------------------------------------------------------------------
# belle
# ---------------------------------------------------------------------------


def test_belle_multiturn():
    record = belle("Human:q1\nAssistant:a1\nHuman:q2\nAssistant:", "a2")
    assert to_messages(record, "belle") == [U("q1"), A("a1"), U("q2"), A("a2")]


def test_belle_windows_line_endings():
    record = belle("Human:q1\r\nAssistant:line one\r\nline two\r\nHuman:q2\r\nAssistant:", "x\r\ny")
    assert to_messages(record, "belle") == [U("q1"), A("line one\nline two"), U("q2"), A("x\ny")]


def test_belle_marker_inside_a_line_is_text():
    record = belle("Human:q1\nAssistant:He typed Human: hello and Assistant: bye\n  Human: indented\nHuman:q2\nAssistant:")
    assert to_messages(record, "belle")[1] == A("He typed Human: hello and Assistant: bye\n  Human: indented")


def test_belle_marker_at_line_start_always_splits():
    # The documented rule: a line-start marker is a turn boundary, even if the
    # author meant it as quoted text.
    record = belle("Human:q1\nAssistant:quote:\nHuman:hi\nAssistant:", "a2")
    assert to_messages(record, "belle") == [U("q1"), A("quote:"), U("hi"), A("a2")]


def test_belle_full_width_colon_marker():
    record = belle("Human：问题\nAssistant：", "回答")
    assert to_messages(record, "belle") == [U("问题"), A("回答")]


def test_belle_strips_whitespace_around_turns():
    record = belle("  Human:   q1  \n\nAssistant:\n a1 \n\nHuman:\tq2\nAssistant:  ", "  a2\n")
    assert to_messages(record, "belle") == [U("q1"), A("a1"), U("q2"), A("a2")]


def test_belle_empty_reply_drops_that_exchange():
    record = belle("Human:q1\nAssistant:   \nHuman:q2\nAssistant:", "a2")
    assert to_messages(record, "belle") == [U("q2"), A("a2")]


def test_belle_empty_question_drops_that_exchange():
    record = belle("Human:\nAssistant:a1\nHuman:q2\nAssistant:", "a2")
    assert to_messages(record, "belle") == [U("q2"), A("a2")]


def test_belle_empty_output_drops_last_exchange_or_rejects():
    record = belle("Human:q1\nAssistant:a1\nHuman:q2\nAssistant:", "  ")
    assert to_messages(record, "belle") == [U("q1"), A("a1")]
    with pytest.raises(BadRecord, match="non-empty"):
        to_messages(belle("Human:q1\nAssistant:", ""), "belle")


def test_belle_consecutive_same_role_turns_are_merged():
    record = belle("Human:q1\nHuman:q1 again\nAssistant:a1\nAssistant:more\nHuman:q2\nAssistant:", "a2")
    assert to_messages(record, "belle") == [U("q1\n\nq1 again"), A("a1\n\nmore"), U("q2"), A("a2")]


@pytest.mark.parametrize("output", [None, 3], ids=["none", "not-string"])
def test_belle_bad_output(output):
    with pytest.raises(BadRecord, match="output"):
        to_messages(belle("Human:q\nAssistant:", output), "belle")


def test_belle_missing_output_key():
    with pytest.raises(BadRecord, match="missing 'output'"):
        to_messages({"instruction": "Human:q\nAssistant:"}, "belle")


def test_belle_input_goes_to_last_user_turn():
    record = {"instruction": "Human:q1\nAssistant:a1\nHuman:q2\nAssistant:", "input": "  extra  ", "output": "a2"}
    assert to_messages(record, "belle") == [U("q1"), A("a1"), U("q2\nextra"), A("a2")]


def test_belle_text_before_first_marker_is_user_text():
    record = belle("Context here.\nHuman:q1\nAssistant:", "a1")
    assert to_messages(record, "belle") == [U("Context here.\n\nq1"), A("a1")]
    assert to_messages(belle("no markers at all", "a"), "belle") == [U("no markers at all"), A("a")]


def test_belle_output_answers_trailing_human_turn():
    assert to_messages(belle("Human:q1", "a1"), "belle") == [U("q1"), A("a1")]


def test_belle_instruction_ending_in_a_reply_is_ambiguous():
    with pytest.raises(BadRecord, match="already ends"):
        to_messages(belle("Human:q1\nAssistant:a1", "a2"), "belle")


# ---------------------------------------------------------------------------
# messages (strict)
# ---------------------------------------------------------------------------


def test_messages_passthrough_with_system():
    record = {"messages": [S(" sys "), U("q1"), A("a1"), U("q2"), A("a2")]}
    assert to_messages(record, "messages") == [S("sys"), U("q1"), A("a1"), U("q2"), A("a2")]


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([U("q"), S("late"), A("a")], "system"),
        ([{"role": "human", "content": "q"}, A("a")], "role"),
        ([U("q1"), A("a1"), U("q2")], "ends with a user turn"),
        ([A("hello"), U("q"), A("a")], "starts with an assistant"),
        ([U("q"), {"role": "assistant", "content": None}], "not a string"),
        ([U("q"), A("   ")], "non-empty"),
        ("not a list", "not a list"),
    ],
)
def test_messages_strict_rejections(messages, reason):
    with pytest.raises(BadRecord, match=reason):
        to_messages({"messages": messages}, "messages")


def test_messages_merges_same_role_and_drops_empty_exchanges():
    record = {"messages": [S(""), U("q0"), A(""), U("q1"), U("more"), A("a1")]}
    assert to_messages(record, "messages") == [U("q1\n\nmore"), A("a1")]


# ---------------------------------------------------------------------------
# sharegpt (lenient)
# ---------------------------------------------------------------------------


def turn(speaker, text):
    return {"from": speaker, "value": text}


def test_sharegpt_roles_and_aliases():
    record = {
        "conversations": [
            turn("system", "sys"),
            turn("human", "q1"),
            turn("gpt", "a1"),
            turn("user", "q2"),
            turn("assistant", "a2"),
            {"role": "user", "content": "q3"},
            {"role": "assistant", "content": "a3"},
        ]
    }
    assert to_messages(record, "sharegpt") == [S("sys"), U("q1"), A("a1"), U("q2"), A("a2"), U("q3"), A("a3")]


def test_sharegpt_drops_leading_reply_and_trailing_question():
    record = {"conversations": [turn("gpt", "Hi, ask me!"), turn("human", "q"), turn("gpt", "a"), turn("human", "dangling")]}
    assert to_messages(record, "sharegpt") == [U("q"), A("a")]


@pytest.mark.parametrize(
    "conversations, reason",
    [
        ([turn("tool", "x"), turn("gpt", "a")], "tool"),
        ([turn("human", "q"), turn("system", "late"), turn("gpt", "a")], "system"),
        ([turn("human", "only a question")], "non-empty"),
        ([turn("human", "q"), turn("gpt", 5)], "not a string"),
    ],
)
def test_sharegpt_rejections(conversations, reason):
    with pytest.raises(BadRecord, match=reason):
        to_messages({"conversations": conversations}, "sharegpt")


# ---------------------------------------------------------------------------
# alpaca
# ---------------------------------------------------------------------------


def test_alpaca_instruction_input_output():
    record = {"instruction": "Translate to French", "input": "hello", "output": "bonjour"}
    assert to_messages(record, "alpaca") == [U("Translate to French\nhello"), A("bonjour")]
    record = {"instruction": "Say hi", "input": "", "output": "hi"}
    assert to_messages(record, "alpaca") == [U("Say hi"), A("hi")]


def test_alpaca_history_and_system():
    record = {
        "system": "Be brief.",
        "history": [["q1", "a1"], ["q2", "a2"]],
        "instruction": "q3",
        "output": "a3",
    }
    assert to_messages(record, "alpaca") == [S("Be brief."), U("q1"), A("a1"), U("q2"), A("a2"), U("q3"), A("a3")]


def test_alpaca_input_alone_is_the_question():
    assert to_messages({"instruction": "", "input": "q", "output": "a"}, "alpaca") == [U("q"), A("a")]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"instruction": "q"}, "missing 'output'"),
        ({"output": "a"}, "missing 'instruction'"),
        ({"instruction": "q", "output": "a", "history": "nope"}, "history"),
        ({"instruction": "q", "output": "a", "history": [["only question"]]}, "history"),
        ({"instruction": " ", "input": "", "output": "a"}, "non-empty"),
        ({"instruction": "q", "input": 7, "output": "a"}, "input"),
    ],
)
def test_alpaca_rejections(record, reason):
    with pytest.raises(BadRecord, match=reason):
        to_messages(record, "alpaca")


# ---------------------------------------------------------------------------
# Shared guarantees
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, fmt",
    [
        (belle("Human:q1\nHuman:q1b\nAssistant:\nHuman:q2\nAssistant:a2\nAssistant:a2b\nHuman:q3\nAssistant:"), "belle"),
        ({"conversations": [turn("gpt", "g"), turn("human", "q"), turn("human", "q"), turn("gpt", "a")]}, "sharegpt"),
        ({"messages": [S("s"), U("q"), A("a"), A("b"), U("q2"), A("c")]}, "messages"),
        ({"history": [["", "x"], ["q", "a"]], "instruction": "i", "output": "o"}, "alpaca"),
    ],
)
def test_every_result_alternates_and_ends_on_a_reply(record, fmt):
    messages = to_messages(record, fmt)
    body = messages[1:] if messages[0]["role"] == "system" else messages
    assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2)
    assert all(m["content"] and m["content"] == m["content"].strip() for m in messages)


def test_formats_module_uses_only_the_standard_library():
    # and the run-file package it takes its list of formats from (which writes TOML with tomli_w)
    code = (
        "import sys; before = set(sys.modules); import tui_lora.data.formats; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "extra = new - set(sys.stdlib_module_names) - {'tui_lora', 'tomli_w'}; "
        "assert not extra, extra"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
