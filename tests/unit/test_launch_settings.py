"""[launch]: the rules for several processes and machines, and the command `run --print-command` prints."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tui_lora.cli import main
from tui_lora.config import ConfigError, config_from_dict
from tui_lora.runs.launcher import needs_launcher

REPO = Path(__file__).resolve().parents[2]


def raw_run_file(tmp_path: Path, **sections) -> dict:
    raw = {"model": {"name_or_path": "builtin:tiny-chat"}, "data": {"path": "builtin:belle-sample"},
           "training": {"output_dir": str(tmp_path / "run")}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def problems(tmp_path: Path, **sections) -> list[str]:
    try:
        config_from_dict(raw_run_file(tmp_path, **sections))
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return []


def test_one_process_is_the_default_and_trains_in_process(tmp_path):
    config = config_from_dict(raw_run_file(tmp_path))
    assert (config.launch.num_processes, config.launch.num_machines, config.launch.machine_rank) == (1, 1, 0)
    assert not needs_launcher(config)
    assert needs_launcher(config_from_dict(raw_run_file(tmp_path, launch={"num_processes": 2})))


@pytest.mark.parametrize(("sections", "expected"), [
    ({"launch": {"num_machines": 2, "machine_rank": 2, "num_processes": 4, "main_process_ip": "10.0.0.1",
                 "main_process_port": 29500}},
     "launch.machine_rank: 2 is not a machine of 2; machines are numbered 0 to 1"),
    ({"launch": {"num_machines": 2, "num_processes": 3, "main_process_ip": "10.0.0.1", "main_process_port": 29500}},
     "launch.num_processes: 3 processes cannot be shared evenly by 2 machines"),
    ({"launch": {"num_machines": 2, "num_processes": 16, "main_process_port": 29500}},
     "launch.main_process_ip: is required with 2 machines"),
    ({"launch": {"num_machines": 2, "num_processes": 16, "main_process_ip": "10.0.0.1"}},
     "launch.main_process_port: 0 (any free port) only works on one machine"),
    ({"launch": {"num_processes": 2, "config_file": "/no/such/accelerate.yaml"}},
     "launch.config_file: '/no/such/accelerate.yaml' does not exist"),
    ({"launch": {"num_processes": 2}, "model": {"device_map": "balanced"}},
     "model.device_map: 'balanced' spreads one model over several GPUs, but with launch.num_processes = 2"),
    ({"launch": {"num_processes": 4}, "model": {"device_map": "cuda:0"}},
     "model.device_map: 'cuda:0' puts every one of the 4 processes on the same device; use \"auto\""),
    ({"launch": {"mixed_precision": "fp16"}, "training": {"bf16": True}},
     "launch.mixed_precision: is 'fp16' but training.bf16 is true"),
    ({"launch": {"mixed_precision": "no"}, "training": {"fp16": True}},
     "launch.mixed_precision: is 'no' but training.fp16 is true"),
    ({"launch": {"main_process_port": 70000}}, "launch.main_process_port: 70000 is too large"),
])
def test_launch_combinations_that_cannot_work_are_refused(tmp_path, sections, expected):
    found = problems(tmp_path, **sections)
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize("sections", [
    {"launch": {"num_processes": 8}},  # device_map "auto": each process on its own GPU
    {"launch": {"num_processes": 2}, "model": {"device_map": "cpu"}},
    {"launch": {"num_processes": 16, "num_machines": 2, "machine_rank": 1, "main_process_ip": "node0",
                "main_process_port": 29500}},
    {"launch": {"mixed_precision": "bf16"}, "training": {"bf16": True}},
    {"launch": {"mixed_precision": "bf16"}},
    {"model": {"device_map": "balanced"}},  # one process may spread its model over the GPUs
])
def test_launch_combinations_that_work_are_accepted(tmp_path, sections):
    assert problems(tmp_path, **sections) == []


def test_print_command_for_one_process_is_tui_lora_run(tmp_path, capsys):
    assert main(["run", "demo", "--print-command", "--set", "training.output_dir=runs/my run"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed[:2] == ["tui-lora", "run"] and printed[2].endswith("presets/demo.toml")
    assert printed[3:] == ["--set", "training.output_dir=runs/my run"]


def test_print_command_for_two_machines_is_the_accelerate_launch_command(tmp_path, capsys):
    overrides = ["--set", "launch.num_processes=16", "--set", "launch.num_machines=2", "--set",
                 "launch.main_process_ip=10.0.0.1", "--set", "launch.main_process_port=29500", "--set",
                 "launch.machine_rank=1", "--set", "model.device_map=auto"]
    assert main(["run", "demo", "--print-command", *overrides, "--resume"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    # `accelerate launch` from this environment (or python -m accelerate.commands.launch where there is no script)
    program = 2 if printed[1] == "launch" else 3
    assert Path(printed[0]).name == "accelerate" if program == 2 else printed[1:3] == ["-m", "accelerate.commands.launch"]
    worker = printed.index("-m", program)
    assert printed[worker + 1] == "tui_lora.engine.worker" and printed[worker + 2].endswith("presets/demo.toml")
    assert printed[worker + 3:] == overrides + ["--resume", "latest"]  # every machine reads the run file the same way
    flags = " ".join(printed[program:worker])
    assert flags == ("--multi_gpu --dynamo_backend no --num_processes 16 --num_machines 2 --machine_rank 1 "
                     "--main_process_port 29500 --main_process_ip 10.0.0.1 --mixed_precision no")


def test_print_command_refuses_a_bad_launch_in_one_line(capsys):
    assert main(["run", "demo", "--print-command", "--set", "launch.num_machines=2",
                 "--set", "launch.num_processes=2"]) == 2
    err = capsys.readouterr().err
    assert "launch.main_process_ip: is required with 2 machines" in err and "Traceback" not in err


def test_print_command_imports_no_ml_library(tmp_path):
    script = ("import sys, contextlib, io\nfrom tui_lora.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n"
              "    main(['run', 'demo', '--print-command', '--set', 'launch.num_processes=2'])\n"
              "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'peft', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
