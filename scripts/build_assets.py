#!/usr/bin/env python3
"""Rebuild the demo assets that ship inside ``tui_lora/assets/``.

Two things are produced:

* ``data/belle_sample.jsonl`` - a small multi-turn chat data set in the
  BelleGroup/multiturn_chat_0.8M record format, generated from hand-written
  topic material by a seeded generator.
* ``tiny-chat/`` - a tiny, randomly initialised Qwen2-style chat model plus a
  byte-level BPE tokenizer trained on that data set, saved with
  ``save_pretrained`` so ``AutoModelForCausalLM`` / ``AutoTokenizer`` load it.

Everything is deterministic: running the script twice gives byte-identical
files, which the functional tests check by rebuilding into a temporary folder.
The script deliberately does not import ``tui_lora`` and never touches the
network, so it can run from a bare checkout.

Usage::

    python scripts/build_assets.py [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
from pathlib import Path

# The BPE trainer counts words on a thread pool. Its result does not depend on
# the thread count, but pinning it keeps runs identical on any machine and
# silences the "fork after parallelism" warning from tokenizers.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tui_lora" / "assets"

DATA_SEED = 20240521
MODEL_SEED = 1234
N_CONVERSATIONS = 360          # 60 for each turn count 1..6
MAX_TURNS = 6
# Share of conversations per language: the rest of the 360 are "mix"
# (user switches between Chinese and English from one turn to the next).
N_EN = 162
N_ZH = 162

SYSTEM_PROMPT = "You are a helpful assistant."
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]   # ids 0, 1, 2
VOCAB_SIZE = 2560

# Markers of the Belle record format. Turn text must never contain them,
# otherwise a record could not be split back into turns.
HUMAN = "Human:"
ASSISTANT = "Assistant:"


# ---------------------------------------------------------------------------
# Topic material
#
# Each topic is a small state machine: ``opening(lang)`` starts a thread and
# ``follow_up(lang)`` continues it, usually by referring to the previous turn
# ("add 7 to that", "what comes after step 2?"). Turns are (question, answer)
# pairs in either English ("en") or Chinese ("zh"). The content is templated
# on purpose: a tiny model should pick up the patterns within a minute of
# training, while the numbers, words and phrasings keep it varied.
# ---------------------------------------------------------------------------


class Topic:
    """Base class: holds the shared random generator and a template picker."""

    # Follow-up kinds whose answer only restates the current state (the
    # season of this month, the cooking time of this dish). Each is asked at
    # most once until the subject changes, so a conversation never repeats
    # the same exchange word for word.
    STATIC: frozenset = frozenset()

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.answered: set[str] = set()

    def pick(self, lang: str, table: dict) -> str:
        return self.rng.choice(table[lang])

    def choose_kind(self, kinds: list[str]) -> str:
        """Pick a follow-up kind (repeats in ``kinds`` act as weights)."""
        kind = self.rng.choice([k for k in kinds if k not in self.answered])
        if kind in self.STATIC:
            self.answered.add(kind)
        return kind

    def fresh(self) -> None:
        """The subject changed: every static question makes sense again."""
        self.answered.clear()

    def opening(self, lang: str) -> tuple[str, str]:
        raise NotImplementedError

    def follow_up(self, lang: str) -> tuple[str, str]:
        raise NotImplementedError


# -- arithmetic -------------------------------------------------------------

SYMBOL = {"+": "+", "-": "-", "*": "×"}

ARITH_QUESTIONS = {
    "+": {
        "en": ["What is {a} + {b}?", "Can you add {a} and {b} for me?",
               "What do you get when you add {b} to {a}?"],
        "zh": ["{a}加{b}等于多少?", "请帮我算一下{a}+{b}。", "{a}和{b}的和是多少?"],
    },
    "-": {
        "en": ["What is {a} - {b}?", "What is {a} minus {b}?",
               "Please subtract {b} from {a}."],
        "zh": ["{a}减{b}等于多少?", "{a}-{b}是多少?", "从{a}里减去{b}还剩多少?"],
    },
    "*": {
        "en": ["What is {a} × {b}?", "What is {a} times {b}?",
               "Please multiply {a} by {b}."],
        "zh": ["{a}乘以{b}等于多少?", "{a}×{b}是多少?", "请计算{a}乘{b}。"],
    },
}

ARITH_FOLLOW = {
    "add": {"en": ["Now add {k} to that.", "And if I add {k}?", "Add {k} more."],
            "zh": ["再加{k}呢?", "结果再加上{k}是多少?", "然后加{k}。"]},
    "sub": {"en": ["Now take away {k}.", "What if I subtract {k} from the result?",
                   "And minus {k}?"],
            "zh": ["再减去{k}呢?", "结果减{k}是多少?", "然后减掉{k}。"]},
    "mul": {"en": ["Multiply the result by {k}.", "And {k} times that?",
                   "What is that times {k}?"],
            "zh": ["把结果乘以{k}。", "那再乘{k}呢?", "结果乘{k}等于多少?"]},
    "parity": {"en": ["Is that number even or odd?", "Is the result even?"],
               "zh": ["这个数是奇数还是偶数?", "结果是偶数吗?"]},
    "half": {"en": ["What is half of it?", "Now divide it by 2."],
             "zh": ["它的一半是多少?", "再除以2呢?"]},
    "recap": {"en": ["Can you summarise all the steps?", "Show me the steps so far."],
              "zh": ["能把刚才的步骤总结一下吗?", "把计算过程列出来吧。"]},
}


class Arithmetic(Topic):
    """Integer arithmetic whose follow-ups keep working on the last result."""

    STATIC = frozenset({"parity", "recap"})

    def opening(self, lang):
        rng = self.rng
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(2, 25), rng.randint(2, 12)
            r = a * b
        elif op == "+":
            a, b = rng.randint(11, 99), rng.randint(11, 99)
            r = a + b
        else:
            a = rng.randint(20, 99)
            b = rng.randint(2, a - 1)
            r = a - b
        self.value = r
        self.steps = [f"{a} {SYMBOL[op]} {b} = {r}"]
        question = self.pick(lang, ARITH_QUESTIONS[op]).format(a=a, b=b)
        return question, self._explain(lang, op, a, b, r)

    def _explain(self, lang, op, a, b, r):
        """Short answer most of the time, sometimes with a worked check."""
        eq = f"{a} {SYMBOL[op]} {b} = {r}"
        stop = "." if lang == "en" else "。"
        if self.rng.random() < 0.55:
            return eq + stop
        if op == "+":
            tens, ones = a // 10 * 10 + b // 10 * 10, a % 10 + b % 10
            if lang == "en":
                return (f"{eq}. Add the tens first: {a // 10 * 10} + {b // 10 * 10} = {tens}, "
                        f"then the ones: {a % 10} + {b % 10} = {ones}, "
                        f"and {tens} + {ones} = {r}.")
            return (f"{eq}。先加十位:{a // 10 * 10} + {b // 10 * 10} = {tens},"
                    f"再加个位:{a % 10} + {b % 10} = {ones},合起来{tens} + {ones} = {r}。")
        if op == "-":
            if lang == "en":
                return f"{eq}. Check: {r} + {b} = {a}."
            return f"{eq}。验算:{r} + {b} = {a}。"
        less = a * (b - 1)
        if lang == "en":
            return f"{eq}. Check: {a} × {b - 1} = {less}, plus one more {a} gives {r}."
        return f"{eq}。验算:{a} × {b - 1} = {less},再加一个{a}就是{r}。"

    def follow_up(self, lang):
        rng, v = self.rng, self.value
        kinds = ["add", "add", "parity"] + (["sub"] if v > 2 else [])
        if v < 400:
            kinds.append("mul")
        if v % 2 == 0:
            kinds.append("half")
        if len(self.steps) >= 2:
            kinds += ["recap", "recap"]
        kind = self.choose_kind(kinds)
        stop = "." if lang == "en" else "。"
        if kind == "add":
            k = rng.randint(2, 50)
            return self._step(lang, kind, k, f"{v} + {k} = {v + k}", v + k)
        if kind == "sub":
            k = rng.randint(1, min(v - 1, 60))
            return self._step(lang, kind, k, f"{v} - {k} = {v - k}", v - k)
        if kind == "mul":
            k = rng.randint(2, 5)
            return self._step(lang, kind, k, f"{v} × {k} = {v * k}", v * k)
        if kind == "half":
            q = self.pick(lang, ARITH_FOLLOW["half"])
            eq = f"{v} ÷ 2 = {v // 2}"
            self.steps.append(eq)
            self.value = v // 2
            self.fresh()
            if lang == "en":
                return q, f"Half of {v} is {v // 2} ({eq})."
            return q, f"{v}的一半是{v // 2}({eq})。"
        if kind == "parity":
            q = self.pick(lang, ARITH_FOLLOW["parity"])
            if v % 2 == 0:
                a = (f"{v} is even, because {v} ÷ 2 = {v // 2} with nothing left over."
                     if lang == "en" else f"{v}是偶数,因为{v} ÷ 2 = {v // 2},没有余数。")
            else:
                a = (f"{v} is odd: dividing it by 2 leaves a remainder of 1."
                     if lang == "en" else f"{v}是奇数,除以2余1。")
            return q, a
        # recap: a multi-line answer that lists every step of this thread
        q = self.pick(lang, ARITH_FOLLOW["recap"])
        lines = [f"{i}. {s}" for i, s in enumerate(self.steps, 1)]
        if lang == "en":
            return q, "Sure, here are the steps so far:\n" + "\n".join(lines) + \
                f"\nThe current result is {v}{stop}"
        return q, "好的,到目前为止的步骤:\n" + "\n".join(lines) + f"\n当前结果是{v}{stop}"

    def _step(self, lang, kind, k, eq, new_value):
        self.steps.append(eq)
        self.value = new_value
        self.fresh()
        q = self.pick(lang, ARITH_FOLLOW[kind]).format(k=k)
        return q, eq + ("." if lang == "en" else "。")


# -- unit conversions -------------------------------------------------------

# (from singular, from plural, to plural, factor, Chinese from, Chinese to)
CONVERSIONS = [
    ("kilometer", "kilometers", "meters", 1000, "公里", "米"),
    ("meter", "meters", "centimeters", 100, "米", "厘米"),
    ("kilogram", "kilograms", "grams", 1000, "千克", "克"),
    ("hour", "hours", "minutes", 60, "小时", "分钟"),
    ("minute", "minutes", "seconds", 60, "分钟", "秒"),
    ("day", "days", "hours", 24, "天", "小时"),
    ("liter", "liters", "milliliters", 1000, "升", "毫升"),
    ("week", "weeks", "days", 7, "周", "天"),
]

UNIT_QUESTIONS = {
    "en": ["How many {to_pl} are in {x} {from_pl}?", "Convert {x} {from_pl} to {to_pl}.",
           "{x} {from_pl} is how many {to_pl}?"],
    "zh": ["{x}{zh_from}是多少{zh_to}?", "把{x}{zh_from}换算成{zh_to}。",
           "{x}{zh_from}等于几{zh_to}?"],
}


class Units(Topic):
    """Metric, time and volume conversions with integer answers."""

    def opening(self, lang, exclude=None):
        choices = [c for c in CONVERSIONS if c is not exclude]
        self.conv = self.rng.choice(choices)
        self.x = self.rng.randint(2, 20)
        from_sing, from_pl, to_pl, factor, zh_from, zh_to = self.conv
        x, y = self.x, self.x * factor
        q = self.pick(lang, UNIT_QUESTIONS).format(
            x=x, from_pl=from_pl, to_pl=to_pl, zh_from=zh_from, zh_to=zh_to)
        if self.rng.random() < 0.5:
            a = (f"{x} {from_pl} = {y} {to_pl}." if lang == "en"
                 else f"{x}{zh_from} = {y}{zh_to}。")
        elif lang == "en":
            a = (f"{x} {from_pl} is {y} {to_pl}, because one {from_sing} is "
                 f"{factor} {to_pl} and {x} × {factor} = {y}.")
        else:
            a = f"{x}{zh_from}等于{y}{zh_to},因为1{zh_from}是{factor}{zh_to},{x} × {factor} = {y}。"
        return q, a

    def follow_up(self, lang):
        from_sing, from_pl, to_pl, factor, zh_from, zh_to = self.conv
        kind = self.rng.choice(["again", "again", "reverse", "double", "switch"])
        if kind == "switch":
            return self.opening(lang, exclude=self.conv)
        if kind == "double":
            x2, y2 = self.x * 2, self.x * 2 * factor
            self.x = x2
            if lang == "en":
                return ("What if it were twice as much?",
                        f"Twice as much is {x2} {from_pl}, which is {y2} {to_pl}.")
            return "如果是两倍呢?", f"两倍就是{x2}{zh_from},也就是{y2}{zh_to}。"
        x2 = self.rng.randint(2, 30)
        while x2 == self.x:
            x2 = self.rng.randint(2, 30)
        self.x, y2 = x2, x2 * factor
        if kind == "again":
            if lang == "en":
                return f"And {x2} {from_pl}?", f"{x2} {from_pl} = {y2} {to_pl}."
            return f"那{x2}{zh_from}呢?", f"{x2}{zh_from} = {y2}{zh_to}。"
        if lang == "en":
            return (f"And the other way round: how many {from_pl} is {y2} {to_pl}?",
                    f"Divide by {factor}: {y2} ÷ {factor} = {x2}, so it is {x2} {from_pl}.")
        return (f"反过来,{y2}{zh_to}是多少{zh_from}?",
                f"除以{factor}:{y2} ÷ {factor} = {x2},所以是{x2}{zh_from}。")


# -- temperature ------------------------------------------------------------

TEMP_QUESTIONS = {
    "en": ["What is {c} °C in Fahrenheit?", "Convert {c} degrees Celsius to Fahrenheit.",
           "How much is {c} °C in °F?"],
    "zh": ["摄氏{c}度是华氏多少度?", "把{c}°C换算成华氏度。", "{c}°C等于多少°F?"],
}

# Upper bound in °C, English description, Chinese description.
TEMP_FEEL = [
    (0, "That is freezing: water turns to ice at 0 °C.", "这是冰点以下,水在0°C就会结冰。"),
    (10, "That is cold; you would want a warm coat.", "挺冷的,出门要穿厚外套。"),
    (20, "That is cool but pleasant; a light jacket is enough.", "比较凉爽,穿件薄外套就够了。"),
    (28, "That is warm and comfortable.", "温暖舒适。"),
    (99, "That is hot, so drink plenty of water.", "很热,记得多喝水。"),
]


class Temperature(Topic):
    """Celsius <-> Fahrenheit with multiples of 5 °C so results are integers."""

    STATIC = frozenset({"feel"})

    def _new_celsius(self):
        c = self.rng.choice(range(-10, 45, 5))
        while getattr(self, "c", None) == c:
            c = self.rng.choice(range(-10, 45, 5))
        self.c = c
        self.fresh()
        return c, c * 9 // 5 + 32

    def opening(self, lang):
        c, f = self._new_celsius()
        q = self.pick(lang, TEMP_QUESTIONS).format(c=c)
        if self.rng.random() < 0.5:
            a = f"{c} °C is {f} °F." if lang == "en" else f"摄氏{c}度等于华氏{f}度。"
        elif lang == "en":
            a = (f"{c} °C = {f} °F. The formula is °F = °C × 9/5 + 32, "
                 f"so {c} × 9/5 = {c * 9 // 5} and {c * 9 // 5} + 32 = {f}.")
        else:
            a = (f"{c}°C = {f}°F。公式是:华氏度 = 摄氏度 × 9/5 + 32,"
                 f"所以{c} × 9/5 = {c * 9 // 5},{c * 9 // 5} + 32 = {f}。")
        return q, a

    def follow_up(self, lang):
        kind = self.choose_kind(["again", "reverse", "feel", "feel"])
        if kind == "feel":
            en, zh = next((e, z) for top, e, z in TEMP_FEEL if self.c <= top)
            if lang == "en":
                return "Is that hot or cold?", en
            return "这个温度算冷还是热?", zh
        c, f = self._new_celsius()
        if kind == "again":
            if lang == "en":
                return f"And {c} °C?", f"{c} °C is {f} °F."
            return f"那{c}°C呢?", f"{c}°C等于{f}°F。"
        if lang == "en":
            return (f"What is {f} °F in Celsius?",
                    f"({f} - 32) × 5/9 = {c}, so {f} °F is {c} °C.")
        return f"华氏{f}度是摄氏多少度?", f"({f} - 32) × 5/9 = {c},所以是摄氏{c}度。"


# -- days of the week and months ---------------------------------------------

DAYS_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DAYS_ZH = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]
MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July",
             "August", "September", "October", "November", "December"]
MONTHS_ZH = ["一月", "二月", "三月", "四月", "五月", "六月", "七月",
             "八月", "九月", "十月", "十一月", "十二月"]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
# Northern hemisphere seasons by month index.
SEASON_EN = ["winter", "winter", "spring", "spring", "spring", "summer", "summer",
             "summer", "autumn", "autumn", "autumn", "winter"]
SEASON_ZH = {"winter": "冬天", "spring": "春天", "summer": "夏天", "autumn": "秋天"}


class Calendar(Topic):
    """Day-of-week arithmetic or month facts, tracking the current day/month."""

    STATIC = frozenset({"before", "weekend", "list", "days", "season"})

    def opening(self, lang):
        self.mode = self.rng.choice(["days", "days", "months"])
        if self.mode == "days":
            self.day = self.rng.randrange(7)
            n = self.rng.randint(1, 30)
            if lang == "en":
                q = self.rng.choice([
                    "If today is {d}, what day will it be in {n} days?",
                    "Today is {d}. What day is it {n} days from now?",
                ]).format(d=DAYS_EN[self.day], n=n)
            else:
                q = self.rng.choice([
                    "如果今天是{d},{n}天后是星期几?", "今天{d},再过{n}天是星期几?",
                ]).format(d=DAYS_ZH[self.day], n=n)
            return q, self._advance(lang, n)
        self.month = self.rng.randrange(12)
        return self._month_question(lang, self.choose_kind(["next", "days", "season"]))

    def _advance(self, lang, n):
        """Move the current day forward by n and explain with n mod 7."""
        start, self.day = self.day, (self.day + n) % 7
        self.fresh()
        w, r = divmod(n, 7)
        days = DAYS_EN if lang == "en" else DAYS_ZH
        if self.rng.random() < 0.5 or w == 0:
            return f"It will be {days[self.day]}." if lang == "en" else f"是{days[self.day]}。"
        if lang == "en":
            if r == 0:
                return f"{n} is a multiple of 7, so it will be {days[start]} again."
            return (f"{n} = 7 × {w} + {r}, so {n} days later is the same as "
                    f"{r} days later: {days[self.day]}.")
        if r == 0:
            return f"{n}是7的倍数,所以还是{days[start]}。"
        return f"{n} = 7 × {w} + {r},所以{n}天后和{r}天后一样,是{days[self.day]}。"

    def follow_up(self, lang):
        if self.mode == "months":
            return self._month_question(lang, self.choose_kind(["next", "days", "season", "later"]))
        kind = self.choose_kind(["later", "later", "before", "weekend", "list"])
        days = DAYS_EN if lang == "en" else DAYS_ZH
        cur = days[self.day]
        if kind == "later":
            m = self.rng.randint(1, 20)
            q = f"And {m} days after that?" if lang == "en" else f"再过{m}天呢?"
            return q, self._advance(lang, m)
        if kind == "before":
            prev = days[(self.day - 1) % 7]
            if lang == "en":
                return f"And what is the day before {cur}?", f"The day before {cur} is {prev}."
            return f"{cur}的前一天是星期几?", f"{cur}的前一天是{prev}。"
        if kind == "weekend":
            weekend = self.day >= 5
            if lang == "en":
                return "Is that a weekend?", (
                    f"Yes, {cur} is part of the weekend." if weekend else
                    f"No, {cur} is a weekday. The weekend is Saturday and Sunday.")
            return "那天是周末吗?", (
                f"是的,{cur}是周末。" if weekend else f"不是,{cur}是工作日,周末是星期六和星期日。")
        lines = "\n".join(days[(self.day + i) % 7] for i in range(7))
        if lang == "en":
            return f"Can you list the days of the week, starting from {cur}?", lines
        return f"从{cur}开始,把一周七天列出来。", lines

    def _month_question(self, lang, kind):
        i = self.month
        en, zh = MONTHS_EN[i], MONTHS_ZH[i]
        if kind == "next":
            self.month = (i + 1) % 12
            self.fresh()
            if lang == "en":
                return (self.rng.choice([f"Which month comes after {en}?",
                                         f"What is the month after {en}?"]),
                        f"{MONTHS_EN[self.month]} comes after {en}.")
            return f"{zh}的下一个月是几月?", f"{zh}的下一个月是{MONTHS_ZH[self.month]}。"
        if kind == "later":
            k = self.rng.randint(2, 11)
            self.month = (i + k) % 12
            self.fresh()
            if lang == "en":
                return f"And {k} months after {en}?", f"{k} months after {en} it is {MONTHS_EN[self.month]}."
            return f"{zh}之后再过{k}个月是几月?", f"{zh}之后{k}个月是{MONTHS_ZH[self.month]}。"
        if kind == "days":
            if lang == "en":
                a = ("February has 28 days, or 29 in a leap year." if i == 1
                     else f"{en} has {MONTH_DAYS[i]} days.")
                return f"How many days does {en} have?", a
            a = "二月有28天,闰年有29天。" if i == 1 else f"{zh}有{MONTH_DAYS[i]}天。"
            return f"{zh}有多少天?", a
        season = SEASON_EN[i]
        if lang == "en":
            return (f"Which season is {en} in?",
                    f"In the northern hemisphere, {en} is in {season}.")
        return f"{zh}是什么季节?", f"在北半球,{zh}是{SEASON_ZH[season]}。"


# -- simple word translations -----------------------------------------------

# category: (English name, Chinese name, English sentence, Chinese sentence, words)
VOCABULARY = {
    "fruit": ("fruit", "水果", "This {w} is very sweet.", "这个{w}很甜。", [
        ("apple", "苹果"), ("banana", "香蕉"), ("orange", "橙子"), ("grape", "葡萄"),
        ("watermelon", "西瓜"), ("pear", "梨"), ("strawberry", "草莓"), ("peach", "桃子")]),
    "colour": ("colour", "颜色", "My favourite colour is {w}.", "我最喜欢的颜色是{w}。", [
        ("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"),
        ("black", "黑色"), ("white", "白色"), ("purple", "紫色")]),
    "animal": ("animal", "动物", "The {w} is sleeping in the garden.", "{w}在花园里睡觉。", [
        ("cat", "猫"), ("dog", "狗"), ("bird", "鸟"), ("horse", "马"),
        ("rabbit", "兔子"), ("panda", "熊猫"), ("tiger", "老虎")]),
    "food": ("food or drink", "食物和饮料", "Could I have some {w}, please?", "请给我一些{w}。", [
        ("rice", "米饭"), ("noodles", "面条"), ("bread", "面包"), ("tea", "茶"),
        ("water", "水"), ("milk", "牛奶"), ("coffee", "咖啡")]),
    "place": ("place", "地点", "How do I get to the {w}?", "请问{w}怎么走?", [
        ("school", "学校"), ("hospital", "医院"), ("station", "车站"), ("library", "图书馆"),
        ("park", "公园"), ("airport", "机场"), ("supermarket", "超市")]),
    "person": ("person", "人物", "My {w} is at home.", "我的{w}在家。", [
        ("mother", "妈妈"), ("father", "爸爸"), ("older brother", "哥哥"),
        ("older sister", "姐姐"), ("friend", "朋友"), ("teacher", "老师")]),
    "phrase": ("everyday phrase", "常用语", "People often say \"{w}\" in daily life.",
               "人们在日常生活中常说“{w}”。", [
        ("hello", "你好"), ("thank you", "谢谢"), ("goodbye", "再见"),
        ("good morning", "早上好"), ("sorry", "对不起"), ("you're welcome", "不客气")]),
}


class Translate(Topic):
    """Chinese <-> English word look-ups; follow-ups use the current word."""

    STATIC = frozenset({"sentence", "category", "list"})

    def opening(self, lang):
        self.category = self.rng.choice(sorted(VOCABULARY))
        self.en, self.zh = self.rng.choice(VOCABULARY[self.category][4])
        q, a, _ = self._ask(lang)
        return q, a

    def _ask(self, lang):
        """(question, answer, the word the question quotes)."""
        en, zh = self.en, self.zh
        to_chinese = self.rng.random() < 0.5
        if lang == "en" and to_chinese:
            q = self.rng.choice(['How do you say "{e}" in Chinese?',
                                 'What is the Chinese word for "{e}"?']).format(e=en)
            return q, f'"{en}" in Chinese is "{zh}".', en
        if lang == "en":
            q = self.rng.choice(['What does "{z}" mean in English?',
                                 'What is "{z}" in English?']).format(z=zh)
            return q, f'"{zh}" means "{en}" in English.', zh
        if to_chinese:
            q = self.rng.choice(["英语单词“{e}”是什么意思?", "“{e}”翻译成中文是什么?"]).format(e=en)
            return q, f"“{en}”的意思是“{zh}”。", en
        q = self.rng.choice(["“{z}”用英语怎么说?", "“{z}”的英文是什么?"]).format(z=zh)
        return q, f"“{zh}”的英文是“{en}”。", zh

    def follow_up(self, lang):
        cat_en, cat_zh, sent_en, sent_zh, words = VOCABULARY[self.category]
        kind = self.choose_kind(["next", "next", "sentence", "sentence", "category", "list"])
        if kind == "next":
            others = [w for w in words if w[0] != self.en]
            self.en, self.zh = self.rng.choice(others)
            self.fresh()
            # Refer back to the previous turn instead of repeating the question.
            _, a, word = self._ask(lang)
            return (f'And "{word}"?' if lang == "en" else f"那“{word}”呢?"), a
        if kind == "sentence":
            s_en, s_zh = sent_en.format(w=self.en), sent_zh.format(w=self.zh)
            if lang == "en":
                return "Can you use it in a sentence?", f"Sure.\nEnglish: {s_en}\nChinese: {s_zh}"
            return "能用它造个句子吗?", f"可以。\n中文:{s_zh}\n英文:{s_en}"
        if kind == "category":
            if lang == "en":
                return "What kind of word is it?", f'"{self.en}" ({self.zh}) is a word for a {cat_en}.'
            return "它属于哪一类词?", f"“{self.zh}”({self.en})属于{cat_zh}类的词。"
        sample = self.rng.sample(words, 4)
        lines = "\n".join(f"- {e}: {z}" for e, z in sample)
        if lang == "en":
            return f"Can you list a few more {cat_en} words?", f"Here are some:\n{lines}"
        return f"再列几个{cat_zh}类的词吧。", f"好的:\n{lines}"


# -- LoRA fine-tuning and this tool -----------------------------------------

# name: {lang: (questions, full answer, simpler answer, typical values)}
LORA_FACTS = {
    "LoRA": {
        "en": (["What is LoRA?", "Can you explain what LoRA fine-tuning is?"],
               "LoRA (Low-Rank Adaptation) fine-tunes a model without changing its original "
               "weights. It freezes the base model and adds two small matrices, A and B, next "
               "to selected layers; only A and B are trained. Because they are tiny compared "
               "with the full weight matrices, training needs far less memory and the result "
               "is a small adapter file.",
               "LoRA keeps the big model frozen and trains a small add-on instead.",
               "A common starting point is r = 8 or 16 on the attention projections "
               "(q_proj, k_proj, v_proj, o_proj)."),
        "zh": (["什么是LoRA?", "能解释一下LoRA微调是什么吗?"],
               "LoRA(低秩适配)在不改动原始权重的情况下微调模型。它冻结基础模型,在选定的层旁边"
               "加上两个小矩阵A和B,训练时只更新A和B。它们比完整的权重矩阵小得多,所以训练占用的"
               "显存少很多,最后得到的是一个很小的适配器文件。",
               "LoRA让大模型保持不动,只训练一个小小的附加模块。",
               "常见的起点是在注意力投影层(q_proj、k_proj、v_proj、o_proj)上设置r = 8或16。"),
    },
    "r": {
        "en": (["What does r mean in LoRA?", "What is the LoRA rank r?"],
               "r is the rank of the LoRA update. The adapter matrices have shapes d × r and "
               "r × d, so a larger r gives the adapter more capacity to learn, but also more "
               "trainable parameters and more memory. Small values such as 4, 8 or 16 are "
               "usually enough.",
               "r sets how big the adapter is: bigger r means more capacity and more memory.",
               "8 or 16 is typical. Try 4 for a tiny model and 32 or 64 for hard tasks."),
        "zh": (["LoRA里的r是什么意思?", "LoRA的秩r有什么作用?"],
               "r是LoRA更新矩阵的秩。适配器的两个矩阵形状分别是d × r和r × d,所以r越大,适配器"
               "的学习能力越强,但可训练参数和显存占用也越多。一般4、8或16就够用了。",
               "r决定适配器有多大:r越大,能力越强,占用的显存也越多。",
               "一般取8或16。很小的模型可以用4,困难的任务可以用32或64。"),
    },
    "lora_alpha": {
        "en": (["What does lora_alpha do?", "What is lora_alpha for?"],
               "lora_alpha scales the LoRA update. The adapter output is multiplied by "
               "lora_alpha / r, so with r = 8 and lora_alpha = 16 the update is scaled by 2. "
               "A higher alpha makes the adapter's effect stronger, a bit like a larger "
               "learning rate for the adapter.",
               "lora_alpha is a volume knob for the adapter: its output is multiplied by alpha / r.",
               "Many people set lora_alpha to twice r, for example r = 8 and lora_alpha = 16."),
        "zh": (["lora_alpha有什么作用?", "lora_alpha是干什么用的?"],
               "lora_alpha用来缩放LoRA的更新。适配器的输出会乘以lora_alpha / r,比如r = 8、"
               "lora_alpha = 16时,更新会放大2倍。alpha越大,适配器的作用越强,有点像给适配器"
               "用了更大的学习率。",
               "lora_alpha就像适配器的音量旋钮:输出会乘以alpha / r。",
               "很多人把lora_alpha设成r的两倍,比如r = 8、lora_alpha = 16。"),
    },
    "lora_dropout": {
        "en": (["What is lora_dropout for?", "Why does LoRA have a dropout setting?"],
               "lora_dropout randomly zeroes part of the input to the LoRA matrices during "
               "training. It is a regulariser: it makes the adapter less likely to memorise a "
               "small data set. It has no effect at inference time.",
               "Dropout adds a little noise during training so the adapter does not overfit.",
               "0.05 is a common value. Use 0.1 for very small data sets, or 0 to switch it off."),
        "zh": (["lora_dropout是做什么的?", "LoRA为什么要设置dropout?"],
               "lora_dropout在训练时随机把LoRA矩阵的一部分输入置零。这是一种正则化手段,可以减少"
               "适配器死记硬背小数据集的情况。推理时它不起作用。",
               "dropout在训练时加一点噪声,防止适配器过拟合。",
               "常用0.05。数据特别少时可以用0.1,设为0就是关闭。"),
    },
    "QLoRA": {
        "en": (["What is QLoRA?", "What does 4-bit quantisation do in QLoRA?"],
               "QLoRA loads the frozen base model in 4-bit precision (NF4) and trains LoRA "
               "adapters on top in higher precision. Storing weights in 4 bits instead of 16 "
               "cuts the base model's memory by about four times, so much larger models fit "
               "on one GPU. The price is somewhat slower training steps, and it needs a CUDA GPU.",
               "QLoRA squeezes the base model into 4 bits so it needs less GPU memory, then "
               "trains LoRA on top.",
               "Use 4-bit NF4 with double quantisation and bfloat16 compute if your GPU supports it."),
        "zh": (["什么是QLoRA?", "QLoRA里的4位量化有什么用?"],
               "QLoRA把冻结的基础模型以4位精度(NF4)加载,再在上面用更高精度训练LoRA适配器。"
               "权重用4位而不是16位存储,基础模型的显存占用大约减少到四分之一,所以一张显卡能"
               "放下大得多的模型。代价是每一步训练会慢一些,而且需要CUDA显卡。",
               "QLoRA把基础模型压缩成4位,占用更少显存,然后在上面训练LoRA。",
               "如果显卡支持,建议使用4位NF4、双重量化和bfloat16计算。"),
    },
    "target_modules": {
        "en": (["Which layers does LoRA usually target?", "What are target_modules?"],
               "LoRA adapters are attached to linear layers. In a Qwen2 or Llama style model "
               "the usual targets are the attention projections q_proj, k_proj, v_proj and "
               "o_proj, and optionally the MLP layers gate_proj, up_proj and down_proj. "
               "Adding the MLP layers gives more capacity but also more parameters.",
               "They are the linear layers that get an adapter, mostly the attention ones.",
               "q_proj and v_proj is the minimum; all seven projections is a strong default."),
        "zh": (["LoRA一般加在哪些层上?", "target_modules是什么?"],
               "LoRA适配器加在线性层上。在Qwen2或Llama这类模型里,常见的目标是注意力投影层"
               "q_proj、k_proj、v_proj和o_proj,也可以加上MLP层gate_proj、up_proj和down_proj。"
               "加上MLP层能力更强,但参数也更多。",
               "就是要加适配器的线性层,主要是注意力相关的层。",
               "最少选q_proj和v_proj;七个投影层全选是个不错的默认设置。"),
    },
    "learning rate": {
        "en": (["What learning rate should I use for LoRA?", "How do I pick a learning rate?"],
               "LoRA usually tolerates a higher learning rate than full fine-tuning, because "
               "only the small adapter is updated. Values between 1e-4 and 3e-4 are common. "
               "If the loss jumps around or becomes NaN, lower it; if it barely moves, raise "
               "it a little.",
               "Start around 2e-4 and lower it if training is unstable.",
               "2e-4 with a short warmup and a cosine or linear decay."),
        "zh": (["LoRA的学习率应该设多少?", "学习率怎么选?"],
               "因为只更新很小的适配器,LoRA通常能承受比全量微调更高的学习率,常见范围是1e-4到"
               "3e-4。如果loss上下乱跳或者变成NaN,就调低;如果几乎不下降,就稍微调高一点。",
               "从2e-4左右开始,训练不稳定就调低。",
               "2e-4,加上短暂的预热和余弦或线性衰减。"),
    },
    "memory": {
        "en": (["Why does LoRA need less memory?", "How does LoRA save GPU memory?"],
               "Full fine-tuning keeps gradients and optimizer states for every weight, which "
               "can take several times the size of the model. LoRA only trains the adapter, "
               "often less than 1% of the parameters, so its gradients and optimizer states are "
               "tiny. The frozen weights still have to be loaded, which is why QLoRA also "
               "quantises them.",
               "Only the small adapter gets gradients and optimizer states, so memory use drops a lot.",
               "With r = 8 on the attention layers, a 7B model trains well under 1% of its parameters."),
        "zh": (["为什么LoRA更省显存?", "LoRA是怎么节省显存的?"],
               "全量微调要为每个权重保存梯度和优化器状态,加起来可能是模型本身大小的好几倍。"
               "LoRA只训练适配器,参数量通常不到总量的1%,所以梯度和优化器状态都很小。冻结的权重"
               "仍然要加载,这也是QLoRA还要对它们做量化的原因。",
               "只有小小的适配器需要梯度和优化器状态,所以显存占用大幅下降。",
               "在注意力层上用r = 8时,7B模型要训练的参数远少于1%。"),
    },
    "merging": {
        "en": (["Can I merge the adapter into the model?", "Can a LoRA adapter be folded into the base model?"],
               "Yes. After training, the LoRA update B × A, scaled by alpha / r, can be added "
               "to the original weight matrix. The merged model gives the same outputs but no "
               "longer needs the adapter, so it runs at the original speed. Keep the separate "
               "adapter too if you want to swap adapters later.",
               "Yes, you can fold the adapter into the weights and get one normal model.",
               "Merge when you deploy a single task; keep adapters separate when one base model "
               "serves many tasks."),
        "zh": (["可以把适配器合并进模型吗?", "训练好的LoRA适配器能并进基础模型吗?"],
               "可以。训练结束后,把LoRA的更新B × A乘以alpha / r加到原始权重矩阵上即可。合并后的"
               "模型输出不变,推理时不再需要适配器,速度和原模型一样。如果以后还想切换适配器,"
               "记得把单独的适配器也保留下来。",
               "可以,把适配器并进权重,就得到一个普通的模型。",
               "只部署一个任务时就合并;一个基础模型要服务多个任务时,适配器分开保存更方便。"),
    },
    "epochs": {
        "en": (["How many epochs should I train?", "How do I know when to stop training?"],
               "For instruction or chat data, 1 to 3 epochs is usually enough. Watch the "
               "evaluation loss: if the training loss keeps falling but the evaluation loss "
               "starts rising, the adapter is overfitting and you should stop earlier or add data.",
               "Usually 1 to 3 passes over the data; stop when the evaluation loss stops improving.",
               "3 epochs for a few thousand examples, 1 epoch for a large data set."),
        "zh": (["应该训练几个epoch?", "怎么判断什么时候停止训练?"],
               "对指令或对话数据,一般1到3个epoch就够了。注意看验证集loss:如果训练loss还在下降,"
               "验证loss却开始上升,说明适配器过拟合了,应该早点停止或者增加数据。",
               "通常把数据过1到3遍;验证loss不再下降时就停。",
               "几千条数据用3个epoch,大数据集用1个epoch。"),
    },
    "gradient accumulation": {
        "en": (["What is gradient accumulation?", "Why use gradient accumulation?"],
               "Gradient accumulation adds up the gradients of several small batches before "
               "doing one optimizer step. The effective batch size is the per-device batch "
               "size times the accumulation steps, so you can imitate a large batch on a GPU "
               "with little memory.",
               "It collects gradients over several small batches and then updates once, like one big batch.",
               "For example, a batch size of 4 with 4 accumulation steps gives an effective batch size of 16."),
        "zh": (["什么是梯度累积?", "为什么要用梯度累积?"],
               "梯度累积会把几个小批次的梯度加起来,再做一次优化器更新。有效批大小等于每张卡的"
               "批大小乘以累积步数,这样显存不大的显卡也能模拟大批次训练。",
               "先攒几个小批次的梯度,再一起更新一次,效果像一个大批次。",
               "比如批大小4、累积4步,有效批大小就是16。"),
    },
    "max length": {
        "en": (["What does the maximum sequence length do?", "How long should training examples be?"],
               "The maximum sequence length is the number of tokens per training example. "
               "Longer examples are cut off, and memory use grows with the length, so pick a "
               "value that covers most of your conversations without wasting memory.",
               "It is the longest example in tokens; anything longer is cut off.",
               "512 to 2048 tokens covers most chat data; the demo conversations here are much shorter."),
        "zh": (["最大序列长度有什么用?", "训练样本应该多长?"],
               "最大序列长度是每条训练样本的token数。超过的部分会被截断,而且显存占用随长度增加,"
               "所以要选一个能覆盖大多数对话、又不浪费显存的值。",
               "就是样本最多能有多少个token,超出的部分会被截掉。",
               "512到2048个token能覆盖大多数对话数据;这里的演示对话要短得多。"),
    },
    "tui-lora": {
        "en": (["What is tui-lora?", "What can I do with tui-lora?"],
               "tui-lora is a terminal user interface for LoRA and QLoRA fine-tuning. You pick "
               "a base model, a data set and the LoRA settings on screen, start training and "
               "watch the loss as it goes. It ships a tiny demo model and a small chat data "
               "set, so you can try it without downloading anything.",
               "It is a terminal app for setting up and running LoRA fine-tuning.",
               "Start with the bundled tiny-chat model and sample data to check that everything "
               "works, then switch to a real model."),
        "zh": (["tui-lora是什么?", "tui-lora能做什么?"],
               "tui-lora是一个用于LoRA和QLoRA微调的终端界面工具。你可以在界面上选择基础模型、数据集"
               "和LoRA参数,开始训练并实时查看loss。它自带一个很小的演示模型和一份小型对话数据集,"
               "不用下载任何东西就能试用。",
               "它是一个在终端里配置和运行LoRA微调的应用。",
               "先用自带的tiny-chat模型和示例数据确认一切正常,再换成真正的模型。"),
    },
}

LORA_FOLLOW = {
    "simple": {"en": ["Can you explain that more simply?", "In one sentence?"],
               "zh": ["能说得简单一点吗?", "用一句话概括呢?"]},
    "typical": {"en": ["What value is typical?", "What would you recommend?"],
                "zh": ["一般设置多少比较好?", "你有什么建议?"]},
    "other": {"en": ["And what about {name}?", "Tell me about {name} too."],
              "zh": ["那{name}呢?", "再说说{name}吧。"]},
}

# How a follow-up question names each fact ("And what about ...?").
LORA_NAMES = {
    "LoRA": ("LoRA itself", "LoRA本身"), "r": ("the rank r", "秩r"),
    "lora_alpha": ("lora_alpha", "lora_alpha"), "lora_dropout": ("lora_dropout", "lora_dropout"),
    "QLoRA": ("QLoRA", "QLoRA"), "target_modules": ("target_modules", "target_modules"),
    "learning rate": ("the learning rate", "学习率"), "memory": ("memory use", "显存占用"),
    "merging": ("merging adapters", "合并适配器"), "epochs": ("the number of epochs", "epoch数"),
    "gradient accumulation": ("gradient accumulation", "梯度累积"),
    "max length": ("the maximum sequence length", "最大序列长度"),
    "tui-lora": ("tui-lora", "tui-lora"),
}


class LoraFacts(Topic):
    """Questions about LoRA/QLoRA settings and the tool itself."""

    STATIC = frozenset({"simple", "typical"})

    def opening(self, lang):
        self.fact = self.rng.choice(list(LORA_FACTS))
        questions, answer, _, _ = LORA_FACTS[self.fact][lang]
        return self.rng.choice(questions), answer

    def follow_up(self, lang):
        kind = self.choose_kind(["simple", "typical", "other", "other"])
        _, answer, simple, typical = LORA_FACTS[self.fact][lang]
        if kind == "simple":
            return self.pick(lang, LORA_FOLLOW["simple"]), simple
        if kind == "typical":
            return self.pick(lang, LORA_FOLLOW["typical"]), typical
        self.fact = self.rng.choice([f for f in LORA_FACTS if f != self.fact])
        self.fresh()
        _, answer, _, _ = LORA_FACTS[self.fact][lang]
        name = LORA_NAMES[self.fact][0 if lang == "en" else 1]
        return self.pick(lang, LORA_FOLLOW["other"]).format(name=name), answer


# -- cooking ------------------------------------------------------------------

# Each recipe: {lang: (dish name, ingredients, steps, total time, tip)}
RECIPES = [
    {"en": ("scrambled eggs", "3 eggs, a pinch of salt and 1 tablespoon of butter", [
        "Crack the eggs into a bowl, add the salt and beat them well.",
        "Melt the butter in a pan over low heat.",
        "Pour in the eggs and stir slowly with a spatula.",
        "Take the pan off the heat while the eggs are still a little soft."],
        "about 10 minutes", "Cook them slowly over low heat; high heat makes them dry and rubbery."),
     "zh": ("炒鸡蛋", "3个鸡蛋、少许盐和1汤匙黄油", [
         "把鸡蛋打进碗里,加盐搅匀。", "小火把黄油在锅里化开。",
         "倒入蛋液,用铲子慢慢翻动。", "鸡蛋还有点嫩的时候就关火出锅。"],
        "大约10分钟", "一定要小火慢炒,火太大鸡蛋会变老变干。")},
    {"en": ("tomato and egg stir-fry",
            "2 tomatoes, 3 eggs, 1 spring onion, salt, a little sugar and cooking oil", [
        "Cut the tomatoes into wedges and beat the eggs with a pinch of salt.",
        "Heat oil in a wok, scramble the eggs until just set and take them out.",
        "Add a little more oil and stir-fry the tomatoes until they soften and release juice.",
        "Return the eggs, add salt and a little sugar, and stir for one more minute.",
        "Sprinkle with chopped spring onion and serve."],
        "about 15 minutes", "A little sugar balances the sourness of the tomatoes."),
     "zh": ("番茄炒蛋", "2个番茄、3个鸡蛋、1根葱、盐、少许糖和食用油", [
         "番茄切块,鸡蛋加一点盐打散。", "锅里放油烧热,把鸡蛋炒到刚凝固就盛出来。",
         "再加一点油,放入番茄翻炒到变软出汁。", "倒回鸡蛋,加盐和少许糖,再炒一分钟。",
         "撒上葱花就可以出锅了。"],
        "大约15分钟", "加一点糖可以中和番茄的酸味。")},
    {"en": ("plain rice", "1 cup of rice and 1.5 cups of water", [
        "Rinse the rice two or three times until the water is almost clear.",
        "Put the rice and water in a pot and bring it to a boil.",
        "Cover, turn the heat to low and simmer for 15 minutes.",
        "Turn off the heat and let it rest, still covered, for 10 minutes."],
        "about 30 minutes", "Do not lift the lid while it simmers; the steam cooks the rice."),
     "zh": ("白米饭", "1杯米和1.5杯水", [
         "把米淘洗两三遍,直到水基本变清。", "把米和水放进锅里,大火煮开。",
         "盖上锅盖,转小火煮15分钟。", "关火后不要开盖,再焖10分钟。"],
        "大约30分钟", "小火煮的时候不要掀开锅盖,要靠蒸汽把米煮熟。")},
    {"en": ("green tea", "1 teaspoon of green tea leaves and 1 cup of water", [
        "Heat the water to about 80 °C; boiling water makes green tea bitter.",
        "Put the leaves in a cup or teapot.",
        "Pour the water over the leaves and wait 2 to 3 minutes.",
        "Pour out the tea or remove the leaves, and enjoy."],
        "about 5 minutes", "You can steep the same leaves two or three times."),
     "zh": ("绿茶", "1茶匙绿茶和1杯水", [
         "把水烧到80度左右,开水会让绿茶变苦。", "把茶叶放进杯子或茶壶里。",
         "倒入热水,等2到3分钟。", "倒出茶汤或取出茶叶,就可以喝了。"],
        "大约5分钟", "同一份茶叶可以泡两三次。")},
    {"en": ("pancakes", "1 cup of flour, 1 egg, 1 cup of milk, 1 tablespoon of sugar, "
            "1 teaspoon of baking powder and a pinch of salt", [
        "Mix the flour, sugar, baking powder and salt in a bowl.",
        "Whisk in the egg and milk until the batter is smooth.",
        "Heat a lightly oiled pan over medium heat.",
        "Pour in a small ladle of batter and cook until bubbles appear on top.",
        "Flip it and cook the other side for about one minute."],
        "about 20 minutes", "Let the batter rest for five minutes; the pancakes will be fluffier."),
     "zh": ("松饼", "1杯面粉、1个鸡蛋、1杯牛奶、1汤匙糖、1茶匙泡打粉和少许盐", [
         "把面粉、糖、泡打粉和盐在碗里混合。", "加入鸡蛋和牛奶,搅拌成顺滑的面糊。",
         "平底锅刷一层薄油,中火加热。", "倒入一小勺面糊,煎到表面出现气泡。",
         "翻面再煎大约一分钟。"],
        "大约20分钟", "面糊静置五分钟再煎,松饼会更蓬松。")},
    {"en": ("noodle soup", "a bundle of noodles, 2 cups of broth, a handful of greens, "
            "1 egg and soy sauce", [
        "Bring the broth to a boil and season it with a little soy sauce.",
        "Cook the noodles in a separate pot of boiling water, then drain them.",
        "Add the greens and the egg to the broth and cook for two minutes.",
        "Put the noodles in a bowl and pour the hot broth over them."],
        "about 15 minutes", "Cooking the noodles separately keeps the soup clear."),
     "zh": ("汤面", "一把面条、2杯高汤、一把青菜、1个鸡蛋和酱油", [
         "把高汤煮开,加一点酱油调味。", "另起一锅水把面条煮熟,捞出沥干。",
         "在高汤里放入青菜和鸡蛋,煮两分钟。", "把面条放进碗里,浇上热汤。"],
        "大约15分钟", "面条单独煮,汤会更清。")},
]

COOK_QUESTIONS = {
    "en": ["How do I make {dish}?", "Can you tell me how to cook {dish}?",
           "What's a simple way to make {dish}?"],
    "zh": ["{dish}怎么做?", "教我做{dish}吧。", "{dish}的做法是什么?"],
}


class Cooking(Topic):
    """Step-by-step recipes; follow-ups ask about steps, time, tips."""

    STATIC = frozenset({"time", "tip", "ingredients"})

    def opening(self, lang):
        self.recipe = self.rng.choice(RECIPES)
        dish, ingredients, steps, _, _ = self.recipe[lang]
        q = self.pick(lang, COOK_QUESTIONS).format(dish=dish)
        numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        # Last step the conversation talked about (1-based); after the full
        # recipe that is the final one.
        self.step = len(steps)
        with_ingredients = self.rng.random() < 0.4
        if lang == "en":
            head = f"Here is a simple way to make {dish}."
            if with_ingredients:
                head += f" You need {ingredients}."
            return q, f"{head}\n{numbered}"
        head = f"{dish}的简单做法如下。"
        if with_ingredients:
            head += f"需要准备{ingredients}。"
        return q, f"{head}\n{numbered}"

    def follow_up(self, lang):
        dish, ingredients, steps, minutes, tip = self.recipe[lang]
        kind = self.choose_kind(["time", "step", "after", "after", "tip", "ingredients", "switch"])
        if kind == "switch":
            self.recipe = self.rng.choice([r for r in RECIPES if r is not self.recipe])
            self.fresh()
            return self._describe_switch(lang)
        if kind == "time":
            if lang == "en":
                return "How long does it take?", f"It takes {minutes} in total."
            return "一共要多长时间?", f"一共需要{minutes}。"
        if kind == "tip":
            return ("Any tips?", tip) if lang == "en" else ("有什么小窍门吗?", tip)
        if kind == "ingredients":
            if lang == "en":
                return "What ingredients do I need?", f"You need {ingredients}."
            return "需要哪些材料?", f"需要{ingredients}。"
        if kind == "step":
            self.step = self.rng.randint(1, len(steps))
            s = steps[self.step - 1]
            if lang == "en":
                return f"What is step {self.step} again?", f"Step {self.step}: {s}"
            return f"第{self.step}步是什么来着?", f"第{self.step}步:{s}"
        # "after": refers to the step mentioned last, so it reads the context.
        k = self.rng.randint(1, len(steps)) if self.step >= len(steps) else self.step
        if k >= len(steps):
            if lang == "en":
                return f"What comes after step {k}?", f"Step {k} is the last step, so the {dish} is ready."
            return f"第{k}步之后呢?", f"第{k}步就是最后一步了,{dish}已经做好了。"
        self.step = k + 1
        s = steps[k]
        if lang == "en":
            return f"What comes after step {k}?", f"After step {k} comes step {k + 1}: {s}"
        return f"第{k}步之后呢?", f"第{k}步之后是第{k + 1}步:{s}"

    def _describe_switch(self, lang):
        dish, _, steps, _, _ = self.recipe[lang]
        self.step = len(steps)
        numbered = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        if lang == "en":
            return f"What about {dish}?", f"For {dish}:\n{numbered}"
        return f"那{dish}呢?", f"{dish}的做法:\n{numbered}"


# -- travel small talk -------------------------------------------------------

# {lang: (name, known for, food, best season, how to say thank you)}
CITIES = [
    {"en": ("Beijing", "the Great Wall and the Forbidden City", "Peking duck",
            "spring or autumn, when the weather is mild", 'say "谢谢" (xièxie)'),
     "zh": ("北京", "长城和故宫", "北京烤鸭", "春天或秋天,天气比较温和", "说“谢谢”就可以")},
    {"en": ("Shanghai", "the Bund and its riverside skyline", "soup dumplings (xiaolongbao)",
            "spring or autumn", 'say "谢谢" (xièxie)'),
     "zh": ("上海", "外滩和黄浦江两岸的风景", "小笼包", "春天或秋天", "说“谢谢”就可以")},
    {"en": ("Chengdu", "giant pandas and its relaxed teahouse culture", "spicy hotpot",
            "spring or autumn", 'say "谢谢" (xièxie)'),
     "zh": ("成都", "大熊猫和悠闲的茶馆文化", "火锅", "春天或秋天", "说“谢谢”就可以")},
    {"en": ("Xi'an", "the Terracotta Army and the old city wall", "roujiamo, a kind of meat sandwich",
            "spring or autumn", 'say "谢谢" (xièxie)'),
     "zh": ("西安", "兵马俑和古城墙", "肉夹馍", "春天或秋天", "说“谢谢”就可以")},
    {"en": ("Hangzhou", "West Lake", "Longjing tea and West Lake fish in vinegar sauce",
            "spring, when the lake is green and the weather is pleasant", 'say "谢谢" (xièxie)'),
     "zh": ("杭州", "西湖", "龙井茶和西湖醋鱼", "春天,湖边一片绿色,天气也舒服", "说“谢谢”就可以")},
    {"en": ("Guangzhou", "the Canton Tower and Cantonese food", "dim sum",
            "autumn or winter, when it is less hot and humid", 'say "谢谢" (xièxie)'),
     "zh": ("广州", "广州塔和粤菜", "早茶点心", "秋天或冬天,没那么湿热", "说“谢谢”就可以")},
    {"en": ("London", "the British Museum and the River Thames", "fish and chips",
            "late spring or summer", 'just say "thank you"'),
     "zh": ("伦敦", "大英博物馆和泰晤士河", "炸鱼薯条", "春末或夏天", "说“thank you”")},
    {"en": ("Paris", "the Eiffel Tower and the Louvre", "croissants and fresh bread",
            "spring or early autumn", 'say "merci"'),
     "zh": ("巴黎", "埃菲尔铁塔和卢浮宫", "牛角面包和新鲜面包", "春天或初秋", "说法语“merci”")},
    {"en": ("Tokyo", "busy streets and old temples such as Senso-ji", "sushi and ramen",
            "spring for the cherry blossoms, or autumn", 'say "arigatou"'),
     "zh": ("东京", "热闹的街道和浅草寺等古老寺庙", "寿司和拉面", "春天看樱花,或者秋天",
            "说日语“arigatou”")},
]

TRAVEL_OPEN = {
    "en": ["I'm going to {city} next {when}.", "I'm planning a trip to {city} next {when}.",
           "Have you heard of {city}? I'm visiting it next {when}."],
    "zh": ["我下{when}要去{city}。", "我打算下{when}去{city}旅游。", "下{when}我要去{city}玩。"],
}
WHEN = {"en": ["week", "month", "spring", "summer"], "zh": ["周", "个月", "周末"]}


class Travel(Topic):
    """Small talk about a trip to a city: food, season, phrases, weather."""

    STATIC = frozenset({"food", "season", "thanks", "weather"})

    def opening(self, lang):
        self.city = self.rng.choice(CITIES)
        name, known, _, _, _ = self.city[lang]
        q = self.pick(lang, TRAVEL_OPEN).format(city=name, when=self.rng.choice(WHEN[lang]))
        if lang == "en":
            return q, self.rng.choice([
                f"That sounds exciting! {name} is famous for {known}.",
                f"How nice! {name} is famous for {known}. Is there anything you would like "
                f"to know before the trip?"])
        return q, self.rng.choice([
            f"听起来很棒!{name}以{known}闻名。",
            f"真不错!{name}以{known}闻名。出发前有什么想了解的吗?"])

    def follow_up(self, lang):
        name, known, food, season, thanks = self.city[lang]
        kind = self.choose_kind(["food", "season", "thanks", "weather", "switch"])
        if kind == "food":
            if lang == "en":
                return "What should I eat there?", self.rng.choice([
                    f"You should try {food}.",
                    f"Don't miss {food}. Ask the locals where they like to eat; the best "
                    f"places are often small and busy."])
            return "那里有什么好吃的?", self.rng.choice([
                f"一定要尝尝{food}。", f"推荐{food}。可以问问当地人喜欢去哪家,好吃的店往往又小又热闹。"])
        if kind == "season":
            if lang == "en":
                return "When is the best time to visit?", f"The best time to visit {name} is {season}."
            return "什么时候去最好?", f"去{name}最好的时间是{season}。"
        if kind == "thanks":
            if lang == "en":
                return "How do I say thank you there?", f"In {name} you can {thanks}."
            return "在那里怎么说“谢谢”?", f"在{name}{thanks}。"
        if kind == "weather":
            if lang == "en":
                return ("What's the weather like there today?",
                        "I can't check live weather, so please look at a forecast before you "
                        f"leave. In general, the best time to visit {name} is {season}.")
            return "那里今天天气怎么样?", f"我查不到实时天气,出发前请看一下天气预报。一般来说,去{name}最好是{season}。"
        self.city = self.rng.choice([c for c in CITIES if c is not self.city])
        self.fresh()
        name, known, _, _, _ = self.city[lang]
        if lang == "en":
            return f"What about {name}?", f"{name} is famous for {known}."
        return f"那{name}呢?", f"{name}以{known}闻名。"


# -- greetings, identity and closings ----------------------------------------

GREETINGS = {
    "en": [("Hi!", "Hello! How can I help you today?"),
           ("Hello there.", "Hi! What would you like to talk about?"),
           ("Good morning!", "Good morning! What can I do for you?"),
           ("Who are you?", "I am a small demo assistant that ships with tui-lora. I can answer "
                            "simple questions about arithmetic, units, dates, words, cooking, "
                            "travel and LoRA fine-tuning.")],
    "zh": [("你好!", "你好!有什么可以帮你的吗?"),
           ("嗨,在吗?", "在的,请问有什么问题?"),
           ("早上好!", "早上好!今天想聊点什么?"),
           ("你是谁?", "我是tui-lora自带的一个小型演示助手,可以回答算术、单位换算、日期、简单翻译、"
                      "做饭、旅行和LoRA微调方面的简单问题。")],
}
CLOSINGS = {
    "en": [("Thanks!", "You're welcome! Let me know if you have any other questions."),
           ("Great, thank you.", "Glad I could help.")],
    "zh": [("谢谢!", "不客气!还有问题随时问我。"), ("好的,谢谢你。", "很高兴能帮到你。")],
}
SWITCH_PREFIX = {"en": ["Another question: ", "One more thing. "], "zh": ["换个话题,", "另外,"]}

TOPICS = [Arithmetic, Units, Temperature, Calendar, Translate, LoraFacts, Cooking, Travel]
TOPIC_WEIGHTS = [2.0, 1.5, 1.0, 1.5, 2.0, 2.5, 1.5, 1.5]


# ---------------------------------------------------------------------------
# Conversation generation and the Belle record format
# ---------------------------------------------------------------------------


def turn_languages(rng: random.Random, mode: str, n_turns: int) -> list[str]:
    """Language of each turn; "mix" conversations alternate languages."""
    if mode != "mix":
        return [mode] * n_turns
    first = rng.choice(["en", "zh"])
    other = "zh" if first == "en" else "en"
    return [first if i % 2 == 0 else other for i in range(n_turns)]


def new_topic(rng: random.Random, avoid=None) -> Topic:
    choices = [(t, w) for t, w in zip(TOPICS, TOPIC_WEIGHTS) if t is not avoid]
    cls = rng.choices([t for t, _ in choices], weights=[w for _, w in choices])[0]
    return cls(rng)


def unique_follow_up(topic: Topic, lang: str, turns: list) -> tuple[str, str]:
    """A follow-up that does not repeat an exchange already in ``turns``.

    Some state changes can land back on an earlier state (14 days after a
    Thursday is a Thursday), which would make a question repeat verbatim.
    When that happens the topic's state is rolled back and another follow-up
    is drawn; the shared random generator is deliberately not rolled back.
    """
    for _ in range(20):
        saved = {k: copy.copy(v) for k, v in vars(topic).items() if k != "rng"}
        turn = topic.follow_up(lang)
        if turn not in turns:
            return turn
        vars(topic).update(saved)
    raise RuntimeError(f"{type(topic).__name__} keeps repeating itself")


def generate_conversation(rng: random.Random, n_turns: int, mode: str) -> list[tuple[str, str]]:
    """One conversation of exactly n_turns (question, answer) pairs."""
    langs = turn_languages(rng, mode, n_turns)
    turns: list[tuple[str, str]] = []
    # A one-turn "mix" conversation is a translation question: that is the
    # natural way to mix both languages in a single turn.
    if mode == "mix" and n_turns == 1:
        return [Translate(rng).opening(langs[0])]
    if rng.random() < (0.05 if n_turns == 1 else 0.2):
        turns.append(rng.choice(GREETINGS[langs[0]]))
    if len(turns) < n_turns:
        topic = new_topic(rng)
        turns.append(topic.opening(langs[len(turns)]))
    while len(turns) < n_turns:
        lang = langs[len(turns)]
        if len(turns) == n_turns - 1 and rng.random() < 0.12:
            turns.append(rng.choice(CLOSINGS[lang]))
        elif rng.random() < 0.15:
            topic = new_topic(rng, avoid=type(topic))
            q, a = topic.opening(lang)
            turns.append((rng.choice(SWITCH_PREFIX[lang]) + q, a))
        else:
            turns.append(unique_follow_up(topic, lang, turns))
    return turns


def to_belle_record(turns: list[tuple[str, str]]) -> dict:
    """Earlier turns go into "instruction"; the last reply is "output"."""
    for q, a in turns:
        for text in (q, a):
            assert HUMAN not in text and ASSISTANT not in text, text
            assert text == text.strip() and text, repr(text)
    history = "".join(f"{HUMAN}{q}\n{ASSISTANT}{a}\n" for q, a in turns[:-1])
    last_q, last_a = turns[-1]
    return {"instruction": f"{history}{HUMAN}{last_q}\n{ASSISTANT}", "input": "", "output": last_a}


def generate_dataset(seed: int = DATA_SEED) -> tuple[list[dict], list[str]]:
    """All records plus the language mode of each (for reporting)."""
    rng = random.Random(seed)
    per_count = N_CONVERSATIONS // MAX_TURNS
    turn_counts = [n for n in range(1, MAX_TURNS + 1) for _ in range(per_count)]
    modes = ["en"] * N_EN + ["zh"] * N_ZH + ["mix"] * (N_CONVERSATIONS - N_EN - N_ZH)
    rng.shuffle(turn_counts)
    rng.shuffle(modes)
    records, seen = [], set()
    for n, m in zip(turn_counts, modes):
        # Short conversations can come out identical; draw again so every
        # record in the file is distinct.
        rec = to_belle_record(generate_conversation(rng, n, m))
        while json.dumps(rec) in seen:
            rec = to_belle_record(generate_conversation(rng, n, m))
        seen.add(json.dumps(rec))
        records.append(rec)
    return records, modes


def write_jsonl(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def record_turns(record: dict) -> list[tuple[str, str]]:
    """Inverse of to_belle_record, used to render ChatML training text."""
    body = record["instruction"]
    assert body.startswith(HUMAN) and body.endswith("\n" + ASSISTANT)
    turns = []
    for chunk in body[len(HUMAN):-len("\n" + ASSISTANT)].split("\n" + HUMAN):
        if ("\n" + ASSISTANT) in chunk:
            q, a = chunk.split("\n" + ASSISTANT)
            turns.append((q, a))
        else:
            turns.append((chunk, record["output"]))
    return turns


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

# Our own ChatML template. Like Qwen2.5's it adds a default system message
# when the conversation has none. Whitespace control ({%- -%}) keeps the
# output exactly "<|im_start|>role\ncontent<|im_end|>\n" per message.
CHAT_TEMPLATE = """\
{%- if not (messages and messages[0]['role'] == 'system') %}
    {{- '<|im_start|>system\\n""" + SYSTEM_PROMPT + """<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def render_chatml(turns: list[tuple[str, str]]) -> str:
    """Python twin of CHAT_TEMPLATE (no explicit system message)."""
    parts = [f"{IM_START}system\n{SYSTEM_PROMPT}{IM_END}\n"]
    for q, a in turns:
        parts.append(f"{IM_START}user\n{q}{IM_END}\n")
        parts.append(f"{IM_START}assistant\n{a}{IM_END}\n")
    return "".join(parts)


def tokenizer_corpus(records: list[dict]) -> list[str]:
    """The data set text in both shapes a trainer will see it: raw Belle and ChatML."""
    texts = []
    for rec in records:
        texts.append(rec["instruction"] + rec["output"])
        texts.append(render_chatml(record_turns(rec)))
    return texts


def loader_pipeline():
    """Normaliser, pre-tokeniser and decoder that transformers will use.

    For ``model_type == "qwen2"`` transformers 5 always loads the tokenizer as
    ``Qwen2Tokenizer``, which rebuilds the pipeline from vocab + merges with
    its own NFC normaliser and pre-tokenisation regex, whatever tokenizer.json
    says. Training the BPE with exactly those components (taken from the
    installed library rather than re-typed) means the merges were learned on
    the same pieces the loaded tokenizer will cut text into.
    """
    from transformers import Qwen2Tokenizer

    backend = Qwen2Tokenizer().backend_tokenizer
    return backend.normalizer, backend.pre_tokenizer, backend.decoder


def train_tokenizer(texts: list[str]):
    """Byte-level BPE trained with the tokenizers library on the sample data."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer, tok.pre_tokenizer, tok.decoder = loader_pipeline()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols up front: any UTF-8 text can be encoded and
        # decoded exactly, even characters that never occur in the data.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The corpus is a fixed, ordered list, so the trainer sees the same input
    # every run; ties between equally frequent pairs are broken by the pair
    # itself inside the trainer, which keeps the merges stable.
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def wrap_tokenizer(tok):
    """Wrap the trained BPE as the transformers class that will load it."""
    from transformers import Qwen2Tokenizer

    model = json.loads(tok.to_str())["model"]
    hf = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(m) for m in model["merges"]],
        unk_token=None,           # byte-level BPE never needs an unknown token
        bos_token=None,           # no BOS is added, like Qwen2.5
        eos_token=IM_END,         # end of an assistant turn ends generation
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IM_START],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def build_model(vocab_size: int, pad_id: int, eos_id: int):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,  # a multiple of 64: bitsandbytes 4-bit kernels (CPU and GPU) need aligned rows
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,   # lm_head reuses the embedding matrix: stored once
        rms_norm_eps=1e-6,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
        dtype="float32",
    )
    # Seed every generator the initialisation could touch.
    random.seed(MODEL_SEED)
    torch.manual_seed(MODEL_SEED)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, max_new_tokens=64)
    return model


# ---------------------------------------------------------------------------
# Sanity checks on the saved files
# ---------------------------------------------------------------------------


def check_saved(model_dir: Path, records: list[dict]) -> None:
    """Reload what was written and fail loudly if it does not behave."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    # The loaded tokenizer must be the one on disk: same normaliser,
    # pre-tokeniser, vocabulary and merges as tokenizer.json.
    on_disk = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    loaded = json.loads(tok.backend_tokenizer.to_str())
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        assert loaded[key] == on_disk[key], f"loaded tokenizer differs in {key}"
    for key in ("vocab", "merges"):
        assert loaded["model"][key] == on_disk["model"][key], f"loaded tokenizer differs in {key}"
    for rec in records[:50]:
        text = rec["instruction"] + rec["output"]
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text, "tokenizer does not round-trip"
        turns = record_turns(rec)
        messages = []
        for q, a in turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rendered = tok.apply_chat_template(messages, tokenize=False)
        assert rendered == render_chatml(turns), "chat template differs from ChatML"
    assert tok.eos_token == IM_END and tok.pad_token == PAD_TOKEN
    assert tok.bos_token is None and tok.unk_token is None


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: tui_lora/assets)")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()   # keep the build log to our own summary
    out: Path = args.out.resolve()

    records, _ = generate_dataset()
    data_path = out / "data" / "belle_sample.jsonl"
    write_jsonl(records, data_path)

    model_dir = out / "tiny-chat"
    if model_dir.exists():
        # Start clean so files left over from an older layout cannot linger.
        for p in sorted(model_dir.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    model_dir.mkdir(parents=True, exist_ok=True)

    tok = wrap_tokenizer(train_tokenizer(tokenizer_corpus(records)))
    tok.save_pretrained(str(model_dir))

    model = build_model(len(tok), tok.convert_tokens_to_ids(PAD_TOKEN),
                        tok.convert_tokens_to_ids(IM_END))
    model.save_pretrained(str(model_dir))

    check_saved(model_dir, records)

    for p in [data_path] + sorted(model_dir.iterdir()):
        print(f"{p.stat().st_size:>10,d}  {p.relative_to(out)}")
    n_params = sum(t.numel() for t in model.parameters())
    print(f"records: {len(records)}  vocab: {len(tok)}  parameters: {n_params:,d}")
    print(f"tiny-chat total: {dir_size(model_dir):,d} bytes; "
          f"all assets: {dir_size(out / 'data') + dir_size(model_dir):,d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
