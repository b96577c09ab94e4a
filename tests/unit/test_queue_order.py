"""Which waiting runs the queue starts, and in what order (runs/queue.py `due`): pure logic on entries."""

from __future__ import annotations

from tui_lora.runs.queue import Entry, Queue, due


def entry(number: int, state: str = "waiting", gpus=None) -> Entry:
    return Entry(id=number, state=state, run_file="r.toml", folder=f"/runs/{number}", gpus=gpus, user="u",
                 queued_at=0.0, cwd="/", python="python")


def started(entries, limit=1, paused=False) -> list[int]:
    return [chosen.id for chosen in due(Queue(entries, paused=paused, limit=limit))]


def test_one_at_a_time_in_order():
    assert started([entry(1), entry(2), entry(3)]) == [1]
    assert started([entry(1, "finished"), entry(2), entry(3)]) == [2]
    assert started([entry(1, "running"), entry(2)]) == []


def test_a_run_that_asks_for_no_gpu_in_particular_runs_alone_whatever_the_limit():
    assert started([entry(1, "running"), entry(2)], limit=4) == []
    assert started([entry(1, "running", ["0"]), entry(2)], limit=4) == []
    assert started([entry(1), entry(2, gpus=["1"])], limit=4) == [1]


def test_runs_on_different_gpus_run_together_up_to_the_limit():
    entries = [entry(1, gpus=["0"]), entry(2, gpus=["1"]), entry(3, gpus=["2", "3"]), entry(4, gpus=["4"])]
    assert started(entries, limit=3) == [1, 2, 3]
    assert started([entry(1, "running", ["0", "1"]), entry(2, gpus=["1"]), entry(3, gpus=["2"])], limit=3) == [3]


def test_a_later_run_never_takes_a_gpu_an_earlier_one_waits_for():
    # 2 waits for GPUs 0 and 1 (0 is busy); 3 wants 1 only: it must not start and keep 2 waiting longer
    entries = [entry(1, "running", ["0"]), entry(2, gpus=["0", "1"]), entry(3, gpus=["1"]), entry(4, gpus=["2"])]
    assert started(entries, limit=4) == [4]


def test_cpu_runs_share_nothing_and_a_paused_queue_starts_nothing():
    assert started([entry(1, "running", []), entry(2, gpus=[])], limit=2) == [2]
    assert started([entry(1), entry(2)], paused=True) == []
