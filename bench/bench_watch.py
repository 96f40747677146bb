"""Re-grade latency of `grade --watch`: from saving a file to the new report being printed.

    python bench/bench_watch.py [--saves 10]

Starts `grade --watch` on a copy of a file, saves it `--saves` times and times each
save until the watcher has printed the new report: the exercise 1 stub (one line
filled, then blank again), then the solution with one mistake (a different one at
each save). Targets (2 cores): medians under 80 ms and 120 ms.
"""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_grade import compile_package

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "dlogprobs = -1.0/n * F.one_hot(Yb, num_classes=vocab_size).float()"


class Watcher:
    """`grade --watch PATH` in a subprocess, its output read line by line."""

    def __init__(self, path: Path):
        grade = shutil.which("grade") or sys.exit("install the kit first: `grade` is not on PATH")
        self.process = subprocess.Popen([grade, "--watch", str(path)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def next_report(self, timeout: float = 60.0) -> str:
        """Everything printed up to and including the next `[watching ...]` line."""
        report, deadline = [], time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            report.append(line)
            if line.startswith("[watching"):
                return "".join(report)

    def stop(self) -> int:
        self.process.send_signal(2)
        return self.process.wait(timeout=10)


def latencies(versions: list[str], saves: int) -> list[float]:
    """Watch a file holding `versions[0]`, save the versions in turn `saves` times, and time each
    save until the new report is printed (milliseconds)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "ex1_backprop_all.py"
        path.write_text(versions[0])
        watcher = Watcher(path)
        watcher.next_report()
        found = []
        for i in range(saves):
            time.sleep(0.3)
            start = time.perf_counter()
            path.write_text(versions[(i + 1) % len(versions)])
            watcher.next_report()
            found.append((time.perf_counter() - start) * 1000)
        watcher.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=11)
    args = parser.parse_args()
    compile_package()
    stub = (ROOT / "exercises" / "ex1_backprop_all.py").read_text()
    solution = (ROOT / "solutions" / "ex1_backprop_all.py").read_text()
    cases = {
        # A student starting out: one line filled, then blank again.
        "the stub": ([stub, stub.replace("dlogprobs = ...", ANSWER)], 80),
        # A student near the end: a file with one mistake, a different one at each save.
        "one mistake": ([solution.replace("dprobs = (1.0 / probs) * dlogprobs", "dprobs = (1.0 / counts) * dlogprobs"),
                         solution.replace("dh = dlogits @ W2.T", "dh = dlogits @ W2")], 120),
    }
    for name, (versions, target) in cases.items():
        found = latencies(versions, args.saves)
        median = statistics.median(found)
        print(f"{'ok  ' if median < target else 'MISS'} {name}: save to redrawn table, median {median:.0f} ms "
              f"(min {min(found):.0f}, max {max(found):.0f}, {args.saves} saves); target under {target} ms")


if __name__ == "__main__":
    main()
