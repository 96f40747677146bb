"""`grade --watch`: a real file write triggers a re-grade; Ctrl-C ends it cleanly."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

from grader.exercises import EX1

ANSWER = "dlogprobs = -1.0/n * F.one_hot(Yb, num_classes=vocab_size).float()"


def start(*args):
    process = subprocess.Popen([sys.executable, "-c", "from grader.cli import main; main()", "--watch", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()

    def next_report(timeout=60.0):
        report, deadline = [], time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            report.append(line)
            if line.startswith("[watching"):
                return "".join(report)

    def rest():
        process.wait(timeout=20)
        time.sleep(0.2)  # let the reader take the last lines
        out = []
        while not lines.empty():
            out.append(lines.get())
        return "".join(out)

    next_report.rest = rest
    return process, next_report


def test_saving_the_file_regrades_it_and_ctrl_c_stops(tmp_path):
    path = tmp_path / "ex1_backprop_all.py"
    stub = EX1.stub_path.read_text()
    path.write_text(stub)
    process, next_report = start(str(path))
    try:
        first = next_report()
        assert "0/26 passing" in first
        path.write_text(stub.replace("dlogprobs = ...", ANSWER))
        second = next_report(timeout=30)
        assert "1/26 passing: 1 exact" in second
        path.write_text(stub.replace("dlogprobs = ...", "dlogprobs = 1 +"))  # a syntax error is a result too
        assert "syntax error at line" in next_report(timeout=30)
    finally:
        process.send_signal(signal.SIGINT)
        output = next_report.rest()
    assert process.returncode == 0 and "stopped watching." in output and "Traceback" not in output


def test_watching_the_overview_notices_a_new_exercise_file(tmp_path):
    folder = tmp_path / "exercises"
    folder.mkdir()
    (folder / "ex1_backprop_all.py").write_text(EX1.stub_path.read_text())
    process, next_report = start("--dir", str(folder))
    try:
        assert "not started" in next_report()
        (folder / "ex2_cross_entropy.py").write_text(
            "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)) / n\n")
        assert "ex2  ██████████  1/1" in next_report(timeout=30)
    finally:
        process.send_signal(signal.SIGINT)
        next_report.rest()
    assert process.returncode == 0


def test_a_file_written_in_several_steps_is_graded_once_whole(tmp_path):
    """An editor that writes a file in pieces, keeping it open between them, gets one grade of the
    whole file: never one of the first piece (which alone would be a syntax error)."""
    path = tmp_path / "ex1_backprop_all.py"
    stub = EX1.stub_path.read_text()
    path.write_text(stub)
    process, next_report = start(str(path))
    try:
        assert "0/26 passing" in next_report()
        text = stub.replace("dlogprobs = ...", ANSWER)
        cut = text.index(ANSWER) + len("dlogprobs = -1.0/n * F.one_hot(")
        with open(path, "w") as handle:
            handle.write(text[:cut])
            handle.flush()
            time.sleep(0.02)
            handle.write(text[cut:])
        report = next_report(timeout=30)
        assert "1/26 passing: 1 exact" in report and "syntax error" not in report
        path.write_text(stub.replace("dlogprobs = ...", "dlogprobs = 1 +"))  # the next save is graded too
        assert "syntax error at line" in next_report(timeout=30)
    finally:
        process.send_signal(signal.SIGINT)
        next_report.rest()
    assert process.returncode == 0
