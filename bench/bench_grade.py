"""How long `grade FILE`, `grade --help` and `grade hint` take, against the floor of any PyTorch grader.

    python bench/bench_grade.py [--runs 11]

The floor is `python -c "import torch, os; os._exit(0)"`: starting Python and importing
torch, without torch's slow interpreter shutdown (which `grade` skips too). Every
command runs as a whole process, the commands alternate, and each figure is the
median of `--runs` runs, printed beside the floor measured in the same run.

Targets (2 cores): `grade solutions/ex1_backprop_all.py` at most 0.15 s above the floor;
`grade --help` and `grade hint NAME` under 0.25 s (they never import torch).
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


def grade_script() -> str:
    """The installed `grade` of this interpreter, called directly (not through a shell shim)."""
    beside = Path(sys.executable).parent / "grade"
    found = str(beside) if beside.exists() else shutil.which("grade")
    return found or sys.exit("install the kit first: `grade` is not on PATH")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def compile_package() -> None:
    """Write the package's bytecode, as `pip install` does: an interpreter that may not write it (say,
    with PYTHONDONTWRITEBYTECODE set) would otherwise compile every module on every run."""
    import compileall

    import grader

    compileall.compile_dir(str(Path(grader.__file__).parent), quiet=1)


def measure(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Each command `runs` times, alternating, after one unmeasured run each (a warm file cache)."""
    for command in commands.values():
        timed(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(timed(command))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    grade = grade_script()
    compile_package()
    solution = (ROOT / "solutions" / "ex1_backprop_all.py").read_text(encoding="utf-8")
    wrong = Path(tempfile.mkdtemp()) / "ex1_backprop_all.py"
    wrong.write_text(solution.replace("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (1.0 / counts) * dlogprobs"))
    commands = {
        "floor": [sys.executable, "-c", "import torch, os; os._exit(0)"],
        "grade solution": [grade, "solutions/ex1_backprop_all.py"],
        "grade one mistake": [grade, str(wrong)],
        "grade --help": [grade, "--help"],
        "grade hint dbnvar": [grade, "hint", "dbnvar"],
    }
    times = measure(commands, args.runs)
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians["floor"]
    print(f"medians of {args.runs} runs each, alternating (min-max in brackets)")
    for name, value in medians.items():
        spread = f"[{min(times[name]):.3f}-{max(times[name]):.3f}]"
        print(f"  {name:18} {value:6.3f} s {spread:15}" + (f" floor {value - floor:+.3f} s" if name != "floor" else ""))
    targets = [
        ("grade solution", medians["grade solution"] - floor, 0.15, "s above the floor"),
        ("grade --help", medians["grade --help"], 0.25, "s"),
        ("grade hint dbnvar", medians["grade hint dbnvar"], 0.25, "s"),
    ]
    for name, value, limit, unit in targets:
        print(f"{'ok  ' if value <= limit else 'MISS'} {name}: {value:.3f} {unit} (target: at most {limit:g})")


if __name__ == "__main__":
    main()
