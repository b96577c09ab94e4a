"""The run queue (tui_lora/runs/queue.py) with real detached runs on the tiny model, started by real commands.

Each test has a queue of its own (XDG_STATE_HOME in a temporary folder), inherited by every command it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_run_file, write_run_file

from tui_lora.runs.events import read_events

RECORD = {"conversations": [{"from": "human", "value": "What is two plus two?"},
                            {"from": "assistant", "value": "Four."}]}


@pytest.fixture
def own_queue(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "tui-lora" / "queue"


def queue_now() -> dict:
    done = run_cli("queue", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {queue_now()}")


def span(folder: Path) -> tuple[float, float]:
    """When the run in folder started and when it reached its final state, from its events."""
    statuses = [event for event in read_events(folder / "events.jsonl") if event.get("type") == "status"]
    return statuses[0]["t"], statuses[-1]["t"]


def test_runs_start_in_order_a_failure_is_passed_over_a_cancelled_one_never_starts_and_the_creator_may_die(
        tmp_path, own_queue):
    data = tmp_path / "talk.jsonl"
    data.write_text("".join(json.dumps(RECORD) + "\n" for _ in range(16)), encoding="utf-8")
    files = {}
    for name in "abcd":
        raw = tiny_run_file(tmp_path / f"run-{name}", training={"max_steps": 2, "save_strategy": "no",
                                                                 "eval_strategy": "no"})
        if name == "b":
            raw["data"] = {"path": str(data), "validation_split": 0.0}
        files[name] = write_run_file(tmp_path / f"{name}.toml", raw)

    # The creator queues all four, then is killed with its whole process group while the first one trains.
    script = "; ".join(f"{sys.executable} -m tui_lora.cli run {files[name]} --queue" for name in "abcd")
    creator = subprocess.Popen(["sh", "-c", script + "; sleep 600"], cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (own_queue / "queue.json").is_file() and len(queue_now()["entries"]) == 4, 60, "4 entries")
    os.killpg(creator.pid, signal.SIGKILL)
    creator.wait()
    queued = creator.stdout.read()
    assert "queued as 1 and started" in queued and "queued as 4, position 3 of 3" in queued, queued

    cancelled = run_cli("queue", "cancel", "3")
    assert cancelled.returncode == 0 and "3: cancelled" in cancelled.stdout, cancelled.stderr
    data.write_text("this is not JSON\n", encoding="utf-8")  # b was checked when queued; it fails when it runs

    def ended():
        entries = queue_now()["entries"]
        return entries if all(entry["state"] not in ("waiting", "running") for entry in entries) else None

    entries = wait_for(ended, 300, "the queue to empty")
    assert [entry["state"] for entry in entries] == ["finished", "failed", "cancelled", "finished"], entries
    assert "talk.jsonl" in entries[1]["message"], entries[1]
    assert not (tmp_path / "run-c").exists()  # never started
    (a_start, a_end), (b_start, b_end), (d_start, d_end) = (span(tmp_path / f"run-{n}") for n in "abd")
    assert a_end <= b_start and b_end <= d_start, (a_start, a_end, b_start, b_end, d_start, d_end)
    # nothing of the queue is left behind but its list: the saved run files and environments went with the runs
    assert sorted(path.name for path in own_queue.iterdir()) == ["lock", "queue.json"]


def test_a_restart_pauses_the_queue_and_racing_commands_start_each_run_once_on_its_gpus(tmp_path, own_queue):
    assert run_cli("queue", "pause").returncode == 0
    assert run_cli("queue", "limit", "2").returncode == 0
    for name, gpus in (("e", "0"), ("f", "1")):
        raw = tiny_run_file(tmp_path / f"run-{name}", training={"max_steps": 400, "save_strategy": "no"})
        done = run_cli("run", str(write_run_file(tmp_path / f"{name}.toml", raw)), "--queue", "--gpus", gpus)
        assert done.returncode == 0 and "the queue is paused" in done.stdout, done.stderr

    # A machine restart, as the queue sees one: another boot id than the one it was written in.
    state = json.loads((own_queue / "queue.json").read_text())
    state.update(boot="an-earlier-boot", paused=False)
    (own_queue / "queue.json").write_text(json.dumps(state))
    assert run_cli("runs").returncode == 0  # any command looks at the queue
    after = queue_now()
    assert after["paused"] and "the machine restarted" in after["paused_why"], after
    assert [entry["state"] for entry in after["entries"]] == ["waiting", "waiting"]

    # Four commands race to resume it: each run starts once, both at once (different GPUs, limit 2).
    racers = [subprocess.Popen([sys.executable, "-m", "tui_lora.cli", "queue", "resume"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert all(racer.wait(60) == 0 for racer in racers), [racer.stderr.read() for racer in racers]
    entries = queue_now()["entries"]
    assert [entry["state"] for entry in entries] == ["running", "running"], entries
    for entry, gpus in zip(entries, ("0", "1")):
        console = (Path(entry["folder"]) / "console.log").read_text()
        assert console.count("\n--- ") == 1, console  # started once
        environ = Path(f"/proc/{entry['pid']}/environ").read_bytes().split(b"\0")
        assert f"CUDA_VISIBLE_DEVICES={gpus}".encode() in environ

    # One is killed outright (no chance to say so): the next command sees it died. The other is cancelled.
    os.kill(entries[0]["pid"], signal.SIGKILL)
    assert run_cli("queue", "cancel", "2").returncode == 0
    final = wait_for(lambda: (lambda e: e if e[1]["state"] not in ("running",) and e[0]["state"] != "running"
                              else None)(queue_now()["entries"]), 120, "both to end")
    assert final[0]["state"] == "died", final
    assert final[1]["state"] in ("aborted", "cancelled"), final


def test_bad_queue_commands_are_one_line_and_change_nothing(tmp_path, own_queue):
    run_file = write_run_file(tmp_path / "g.toml", tiny_run_file(tmp_path / "run-g"))
    assert run_cli("queue", "pause").returncode == 0
    assert run_cli("run", str(run_file), "--queue").returncode == 0
    before = (own_queue / "queue.json").read_text()
    refusals = {
        ("run", str(run_file), "--queue"): "is the run folder of queue entry 1",
        ("run", str(run_file), "--queue", "--gpus", "zero"): "'zero' is not a GPU",
        ("run", str(run_file), "--gpus", "0"): "--gpus goes with --queue",
        ("run", str(run_file), "--queue", "--print-command"): "do not go together",
        ("run", str(run_file), "--queue", "--set", "lora.r=0"): "lora.r",
        ("queue", "cancel", "9"): "no entry 9; waiting or running: 1",
        ("queue", "move", "1", "3"): "position 3 is out of range",
        ("queue", "move", "1"): "queue move takes an entry and a position",
        ("queue", "limit", "two"): "'two' is not a whole number of 1 or more",
        ("queue", "limit", "0"): "'0' is not a whole number of 1 or more",
        ("queue", "cancel"): "name the entries to cancel",
        ("queue", "pause", "1"): "takes no numbers",
    }
    for args, expected in refusals.items():
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, lines)
    assert (own_queue / "queue.json").read_text() == before

    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a state folder under a file: even root cannot make it
    done = run_cli("run", str(run_file), "--queue", env={**os.environ, "XDG_STATE_HOME": str(blocked / "state")})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "queue: cannot write in" in done.stderr and "XDG_STATE_HOME" in done.stderr, done.stderr

    (own_queue / "queue.json").write_text("{ damaged")
    done = run_cli("queue")
    assert done.returncode == 2 and "cannot read" in done.stderr and "move it aside" in done.stderr, done.stderr
    assert run_cli("runs").returncode == 0  # other commands do not trip over it


def test_the_wizards_queue_button_queues_the_run_and_the_review_then_refuses_its_folder(tmp_path, own_queue):
    import asyncio

    from textual.widgets import Button

    from tui_lora.tui.app import WizardApp
    from tui_lora.tui.screens.review import ReviewScreen

    assert run_cli("queue", "pause").returncode == 0  # so the queued run waits: nothing trains in this test
    preset = write_run_file(tmp_path / "h.toml", tiny_run_file(tmp_path / "run-h"))

    async def main():
        app = WizardApp(preset)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.go_to_step(7)
            await pilot.pause()
            assert isinstance(app.screen, ReviewScreen)
            await app.workers.wait_for_complete()  # the machine check
            await pilot.pause()
            app.screen.query_one("#queue", Button).press()
            deadline = time.monotonic() + 30
            while not (own_queue / "queue.json").is_file() or not json.loads(
                    (own_queue / "queue.json").read_text())["entries"]:
                assert time.monotonic() < deadline, "nothing was queued"
                await pilot.pause(0.2)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert any(n.title == "Queued" and "position 1 of 1" in n.message for n in app._notifications)
            app.screen.draft_changed()  # as any edit would: the review checks the folder again
            await pilot.pause()
            problems = " ".join(str(issue) for issue in app.start_problems())
            assert "is the run folder of queue entry 1 (waiting)" in problems, problems

    asyncio.run(main())
    entries = queue_now()["entries"]
    assert [(entry["state"], entry["folder"]) for entry in entries] == [("waiting", str(tmp_path / "run-h"))]
