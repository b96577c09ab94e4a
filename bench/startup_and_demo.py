"""Wall time of the commands a user meets first: --help, validate, show, and the whole demo run.

Run from the repository root with the project installed:  python bench/startup_and_demo.py
Prints a Markdown table for BENCHMARKS.md. Each light command is timed 10 times (median);
the demo once per --demo-runs (default 1), into a fresh temporary run folder.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIGHT = {
    "tui-lora --help": ["--help"],
    "tui-lora validate demo": ["validate", "demo"],
    "tui-lora show demo": ["show", "demo"],
}


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tui_lora.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo-runs", type=int, default=1)
    runs = parser.parse_args().demo_runs
    rows = [(name, statistics.median(timed(args) for _ in range(10))) for name, args in LIGHT.items()]
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(("tui-lora run demo (whole run)",
                         timed(["run", "demo", "--plain", "--set", f"training.output_dir={Path(tmp) / 'run'}"])))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print("| command | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| `{name}` | {seconds:.2f} |")


if __name__ == "__main__":
    main()
