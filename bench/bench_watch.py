"""Re-grade latency of `grade --watch`: from saving a file to the new report being printed.

    python bench/bench_watch.py [--saves 10]

Starts `grade --watch` on a copy of the exercise 1 stub, then saves the file
`--saves` times (alternately filling and blanking one line) and times each save
until the watcher has printed the new report. Target: under 300 ms.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "ex1_backprop_all.py"
        stub = (ROOT / "exercises" / "ex1_backprop_all.py").read_text()
        path.write_text(stub)
        watcher = Watcher(path)
        watcher.next_report()
        latencies = []
        for i in range(args.saves):
            text = stub.replace("dlogprobs = ...", ANSWER) if i % 2 == 0 else stub
            time.sleep(0.3)
            start = time.perf_counter()
            path.write_text(text)
            watcher.next_report()
            latencies.append((time.perf_counter() - start) * 1000)
        watcher.stop()
    print(f"re-grade after a save: median {statistics.median(latencies):.0f} ms, "
          f"max {max(latencies):.0f} ms over {args.saves} saves (target: under 300 ms)")


if __name__ == "__main__":
    main()
