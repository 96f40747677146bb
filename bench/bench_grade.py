"""How much grading one file costs beyond importing torch, the floor of any PyTorch grader.

    python bench/bench_grade.py [--runs 15]

Times `grade solutions/ex1_backprop_all.py`, the same file with one wrong line (what the
error model costs: it runs only for failing lines) and `python -c "import torch"` as whole
commands, alternating them, and prints the medians, their difference and ratio.
Target: grading costs at most 0.5 s more than importing torch.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    grade = shutil.which("grade") or sys.exit("install the kit first: `grade` is not on PATH")
    solution = (ROOT / "solutions" / "ex1_backprop_all.py").read_text(encoding="utf-8")
    wrong = Path(tempfile.mkdtemp()) / "ex1_backprop_all.py"
    wrong.write_text(solution.replace("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (1.0 / counts) * dlogprobs"))
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "grade solution": [grade, "solutions/ex1_backprop_all.py"],
        "one mistake": [grade, str(wrong)],
    }
    for command in commands.values():  # warm the file cache
        timed(command)
    times = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(timed(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:15} median {value:.3f} s over {args.runs} runs (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
    print(f"naming one mistake costs {medians['one mistake'] - medians['grade solution']:+.3f} s")
    extra = medians["grade solution"] - medians["import torch"]
    print(f"grading costs {extra:+.3f} s beyond importing torch (ratio {medians['grade solution'] / medians['import torch']:.2f}); target: at most +0.5 s")


if __name__ == "__main__":
    main()
