"""Batch grading: a class of careless or hostile submissions, graded safely, nothing lost."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grader.batch import discover, run_batch, student_from_name
from grader.outputs import load_results, safe_cell
from grader.exercises import EX1, EX2
from grader.sandbox import bwrap_path

from conftest import SOLUTION, replace_line

HAVE_BWRAP = bwrap_path() is not None


def with_line(line: str) -> str:
    """The solution with `line` run just before `dh` is answered."""
    return replace_line(SOLUTION, "dh =", f"{line}\ndh = dlogits @ W2.T")


def quiet(*_args, **_kwargs):
    pass


def grade_class(folder: Path, out: Path, **options) -> dict:
    return run_batch(submissions=folder, out=out, log=quiet, progress_stream=open(os.devnull, "w"), **options)


def gradebook(out: Path) -> dict[str, dict]:
    with open(out / "gradebook.csv", newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def feedback(out: Path, student: str) -> list[dict]:
    return json.loads((out / "feedback" / f"{student}.json").read_text())


def test_student_names_from_lms_downloads_and_loose_files():
    assert student_from_name("smith_12345_67890_ex1_backprop_all", None) == "smith"
    assert student_from_name("smith_LATE_12345_67890_ex1_backprop_all", None) == "smith"
    assert student_from_name("alice_ex2_cross_entropy", None) == "alice"
    assert student_from_name("ex1_backprop_all", None) == "ex1_backprop_all"
    assert student_from_name("2024-bob--ex1", r"^\d+-(?P<student>[a-z]+)") == "bob"


def test_folders_loose_files_notebooks_and_unrecognised_files_are_sorted_out(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "ex1_backprop_all.py").write_text(SOLUTION)
    (tmp_path / "alice" / "homework.py").write_text(EX2.solution_path.read_text())  # recognised by its names
    (tmp_path / "smith_12345_67890_ex1_backprop_all.py").write_text(SOLUTION)
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "carol_ex9.py").write_text("x = 1\n")
    found = discover(tmp_path)
    assert sorted((s.student, s.exercise.id) for s in found.submissions) == [
        ("alice", "ex1"), ("alice", "ex2"), ("smith", "ex1")]
    assert sorted(found.unrecognised) == ["carol_ex9.py", "readme.txt"]


# What hostile students write. Against the guard, as they would write it: each reach for the
# machine is refused where it runs, and becomes a note or a failed line.
ADVERSARIAL = {
    "looper": with_line("while True: pass"),
    "forkbomb": with_line("import os\nwhile True: os.fork()"),
    "hog": with_line("x = torch.ones(50 * 2**30 // 4)"),
    "bigfile": with_line("f = open('big.bin', 'wb')\nfor _ in range(1024): f.write(b'x' * (1 << 20))"),
    "printer": with_line("print('y' * 100_000_000)"),
    "exiter": with_line("import os; os._exit(0)"),
    "selfkill": with_line("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
    "cheater": with_line("torch.allclose = torch.equal = lambda *a, **k: True\ndprobs = probs"),
    "recursion": with_line("def f(n): return f(n + 1)\nf(0)"),
    "empty": "",
}
# The same attacks from code that has escaped the guard (the `escaped` fixture puts `os`, `signal`,
# `ctypes`, `gc` and `sys` in its scope): the process limits and the sandbox must hold on their own.
ESCAPED_ATTACKS = {
    "forkbomb": with_line("while True: os.fork()"),
    "bigfile": with_line("f = os.open('big.bin', os.O_WRONLY | os.O_CREAT)\nfor _ in range(1024): os.write(f, b'x' * (1 << 20))"),
    "exiter": with_line("os.abort()"),
    "selfkill": with_line("os.kill(os.getpid(), signal.SIGKILL)"),
    "recursion": with_line("sys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1)\nf(0)"),
}


def adversarial_class(folder: Path, home: Path, attacks: dict[str, str], escaped: bool = False) -> None:
    for student, source in attacks.items():
        (folder / student).mkdir(parents=True)
        (folder / student / "ex1_backprop_all.py").write_text(source)
    reach = "" if escaped else "import os\n"
    vandal = with_line(
        f"{reach}[os.remove(f) for f in os.listdir('.')]\n"
        f"os.close(os.open({str(home / 'stolen.txt')!r}, os.O_WRONLY | os.O_CREAT))"
    )
    (folder / "vandal").mkdir()
    (folder / "vandal" / "ex1_backprop_all.py").write_text(vandal)
    (folder / "latin").mkdir()
    (folder / "latin" / "ex1_backprop_all.py").write_bytes("dh = 'caf\xe9'\n".encode("latin-1"))
    (folder / "broken").mkdir()
    (folder / "broken" / "ex2_cross_entropy.ipynb").write_text("{ not json")
    (folder / "good").mkdir()
    (folder / "good" / "ex1_backprop_all.py").write_text(SOLUTION)
    (folder / "wrong").mkdir()
    (folder / "wrong" / "ex1_backprop_all.py").write_text(replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h"))


def result_of(out: Path, student: str) -> dict:
    return {r["name"]: r for r in feedback(out, student)[0]["results"]}


def assert_honest_students_unharmed(out: Path, students: set[str]) -> None:
    book = gradebook(out)
    assert set(book) == students
    assert book["good"]["ex1"] == "26" and book["wrong"]["ex1"] == "25"
    wrong = feedback(out, "wrong")[0]
    assert [r["name"] for r in wrong["results"] if r["status"] == "fail"] == ["dW2"]
    assert "not UTF-8" in feedback(out, "latin")[0]["error"]
    assert "not a notebook" in feedback(out, "broken")[0]["error"]


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_hostile_submissions_are_refused_and_the_class_is_graded_right(tmp_path, sandbox):
    if sandbox == "bwrap" and not HAVE_BWRAP:
        pytest.skip("bubblewrap is not installed")
    home = tmp_path / "instructor"
    home.mkdir()
    folder = tmp_path / "class"
    adversarial_class(folder, home, ADVERSARIAL)
    out = tmp_path / "out"
    start = time.monotonic()
    grade_class(folder, out, jobs=2, timeout=2.0, sandbox=sandbox)
    assert time.monotonic() - start < 120
    assert_honest_students_unharmed(out, {*ADVERSARIAL, "vandal", "latin", "broken", "good"} | {"wrong"})
    assert "the limit for one statement" in feedback(out, "looper")[0]["error"]
    for student, what in [("forkbomb", "import os"), ("exiter", "import os"), ("selfkill", "import os"),
                          ("bigfile", "open"), ("vandal", "import os")]:
        notes = feedback(out, student)[0]["notes"]
        assert any(f"`{what}` is not allowed here" in n for n in notes), (student, notes)
        assert result_of(out, student)["dW2"]["status"] == "exact"  # the refused line alone is lost
    assert result_of(out, "cheater")["dprobs"]["status"] == "fail"  # the comparison is not the student's
    assert result_of(out, "printer")["dW2"]["status"] == "exact" and len(feedback(out, "printer")[0]["output"]) < 5000
    assert result_of(out, "hog")["dW2"]["status"] == "exact"  # the allocation failed; the line after it still ran
    assert result_of(out, "recursion")["dlogits"]["status"] == "exact"
    assert gradebook(out)["empty"]["ex1"] == "0"
    assert not (home / "stolen.txt").exists() and not list(folder.rglob("big.bin"))
    assert (folder / "vandal" / "ex1_backprop_all.py").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_past_the_guard_the_process_limits_and_the_sandbox_hold(tmp_path, sandbox, escaped):
    if sandbox == "bwrap" and not HAVE_BWRAP:
        pytest.skip("bubblewrap is not installed")
    home = tmp_path / "instructor"
    home.mkdir()
    folder = tmp_path / "class"
    adversarial_class(folder, home, ESCAPED_ATTACKS, escaped=True)
    out = tmp_path / "out"
    grade_class(folder, out, jobs=2, timeout=2.0, sandbox=sandbox)
    assert_honest_students_unharmed(out, {*ESCAPED_ATTACKS, "vandal", "latin", "broken", "good", "wrong"})
    assert "ended abruptly" in feedback(out, "exiter")[0]["error"]
    assert "ended abruptly" in feedback(out, "selfkill")[0]["error"]
    assert any("File too large" in n for n in feedback(out, "bigfile")[0]["notes"])
    assert result_of(out, "recursion")["dlogits"]["status"] == "exact"
    assert not list(folder.rglob("big.bin"))
    assert any("BlockingIOError" in n or "Resource temporarily unavailable" in n
               for n in feedback(out, "forkbomb")[0]["notes"]) or os.getuid() != 0
    if sandbox == "bwrap":
        assert not (home / "stolen.txt").exists()
        assert any("Permission denied" in n or "No such file" in n for n in feedback(out, "vandal")[0]["notes"])
    assert (folder / "vandal" / "ex1_backprop_all.py").exists()  # its own folder is not where it runs


@pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed")
def test_the_sandbox_has_no_network(tmp_path, escaped, monkeypatch):
    import socket

    from grader import policy

    monkeypatch.setattr(policy, "ESCAPED", (*policy.ESCAPED, "socket"))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        folder = tmp_path / "class"
        for student, sandbox_line in [("net", f"socket.socket().connect(('127.0.0.1', {port}))\nprint('connected')")]:
            (folder / student).mkdir(parents=True)
            (folder / student / "ex1_backprop_all.py").write_text(with_line(sandbox_line))
        out = tmp_path / "out"
        grade_class(folder, out, jobs=1, sandbox="bwrap")
        notes = feedback(out, "net")[0]["notes"]
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection came to the instructor's listening socket
            server.accept()
        # Its own network namespace has a loopback of its own, where nothing listens.
        assert any("Connection refused" in n or "Network is unreachable" in n for n in notes), notes
        # The control: without the sandbox, the same line reaches the listening socket.
        grade_class(folder, tmp_path / "open", jobs=1, sandbox="none")
        assert "connected" in feedback(tmp_path / "open", "net")[0]["output"]
        server.accept()[0].close()  # (and this one did come)
    finally:
        server.close()


@pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed")
def test_a_copy_of_the_kit_run_in_place_grades_with_its_own_code_in_the_sandbox(tmp_path):
    # Run from a copy of the checkout (an instructor's fork, say): the sandboxed worker must import that
    # copy, the only grader it can see, not the one the interpreter's site would find.
    import shutil

    import grader

    root = Path(grader.__file__).resolve().parent.parent
    kit = tmp_path / "kit"
    for part in ("grader", "data", "exercises", "solutions"):
        shutil.copytree(root / part, kit / part, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "class" / "ann").mkdir(parents=True)
    (tmp_path / "class" / "ann" / "ex1_backprop_all.py").write_text(SOLUTION)
    ran = subprocess.run([sys.executable, "-c", "import grader, sys; print(grader.__file__, file=sys.stderr); "
                          "from grader.cli import main; main()", "batch", str(tmp_path / "class"),
                          "--out", str(tmp_path / "out"), "--jobs", "1", "--sandbox", "bwrap"],
                         cwd=kit, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and ran.stderr.startswith(str(kit / "grader")), ran.stderr
    assert gradebook(tmp_path / "out")["ann"]["total"] == "26", feedback(tmp_path / "out", "ann")[0]["error"]


def test_a_zip_of_loose_lms_files_grades_like_the_folder(tmp_path):
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "smith_12345_67890_ex1_backprop_all.py").write_text(SOLUTION)
    (folder / "jones_22222_33333_ex1_backprop_all.py").write_text(EX1.stub_path.read_text())
    (folder / "jones_22222_33334_ex2_cross_entropy.py").write_text(EX2.solution_path.read_text())
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, f"class/{path.name}")
        zf.writestr("../escape.py", "dh = 1\n")
    grade_class(folder, tmp_path / "a", jobs=1)
    grade_class(archive, tmp_path / "b", jobs=1)
    assert (tmp_path / "a" / "gradebook.csv").read_text() == (tmp_path / "b" / "gradebook.csv").read_text()
    assert gradebook(tmp_path / "b")["jones"] == {"student": "jones", "total": "1", "max_total": "27", "status": "partial",
                                                 "late": "", "ex1": "0", "ex2": "1"}
    assert not (tmp_path / "escape.py").exists()


def test_csv_formula_injection_is_neutralised(tmp_path):
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and safe_cell("-1") == "'-1" and safe_cell("bob") == "bob"
    folder = tmp_path / "class"
    (folder / "=cmd|'calc'!A1").mkdir(parents=True)
    (folder / "=cmd|'calc'!A1" / "ex1_backprop_all.py").write_text(SOLUTION)
    grade_class(folder, tmp_path / "out", jobs=1)
    text = (tmp_path / "out" / "gradebook.csv").read_text()
    assert "\n'=cmd|'" in text.replace('"', "")


def test_summary_counts_the_class_mistakes(tmp_path):
    folder = tmp_path / "class"
    for i in range(3):
        (folder / f"s{i}").mkdir(parents=True)
    (folder / "s0" / "ex1_backprop_all.py").write_text(SOLUTION)
    (folder / "s1" / "ex1_backprop_all.py").write_text(replace_line(SOLUTION, "dbndiff =", "dbndiff = bnvar_inv * dbnraw"))
    (folder / "s2" / "ex1_backprop_all.py").write_text(replace_line(SOLUTION, "dbndiff =", "dbndiff = bnvar_inv * dbnraw"))
    summary = grade_class(folder, tmp_path / "out", jobs=2)
    dbndiff = summary["exercises"]["ex1"]["gradients"]["dbndiff"]
    assert dbndiff["passing"] == pytest.approx(1 / 3)
    assert dbndiff["mistakes"][0] == {"what": "misses the branch through `bndiff2`", "share": pytest.approx(2 / 3),
                                      "count": 2, "hint": "your `dbndiff` has the path through `bnraw` but not the "
                                      "one through `bndiff2`: `bndiff` is used in both, so its gradient is the sum of both paths"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["students"] == 3


def test_a_changed_file_is_regraded_and_an_unchanged_one_is_not(tmp_path):
    folder = tmp_path / "class"
    (folder / "alice").mkdir(parents=True)
    path = folder / "alice" / "ex1_backprop_all.py"
    path.write_text(EX1.stub_path.read_text())
    out = tmp_path / "out"
    grade_class(folder, out, jobs=1)
    grade_class(folder, out, jobs=1)
    assert len(load_results(out / "results.jsonl")) == 1
    path.write_text(SOLUTION)
    grade_class(folder, out, jobs=1)
    assert len(load_results(out / "results.jsonl")) == 2
    assert gradebook(out)["alice"]["ex1"] == "26"


@pytest.mark.slow
def test_a_killed_batch_resumes_to_the_same_gradebook_without_duplicates(tmp_path):
    folder = tmp_path / "class"
    for i in range(16):
        (folder / f"student{i:02d}").mkdir(parents=True)
        source = SOLUTION if i % 3 else replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h")
        (folder / f"student{i:02d}" / "ex1_backprop_all.py").write_text(source)
    command = [sys.executable, "-c", "from grader.cli import main; main()", "batch", str(folder), "--jobs", "1"]
    whole = subprocess.run(command + ["--out", str(tmp_path / "whole")], capture_output=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(command + ["--out", str(resumed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (resumed / "results.jsonl").exists() and len(load_results(resumed / "results.jsonl")) >= 4:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first = len(load_results(resumed / "results.jsonl"))
    assert 4 <= first < 16
    again = subprocess.run(command + ["--out", str(resumed)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"{first} already graded, {16 - first} to grade" in again.stdout
    records = load_results(resumed / "results.jsonl")
    assert len(records) == 16 == len({(r["student"], r["exercise"]) for r in records})
    assert (resumed / "gradebook.csv").read_text() == (tmp_path / "whole" / "gradebook.csv").read_text()
    # Counted by hand: every third student transposed dW2 (25 of 26), the rest are right.
    totals = {student: row["total"] for student, row in gradebook(resumed).items()}
    assert totals == {f"student{i:02d}": "25" if i % 3 == 0 else "26" for i in range(16)}


def test_bad_batch_input_is_one_sentence_and_exit_2(tmp_path):
    from click.testing import CliRunner

    from grader.cli import cli

    not_zip = tmp_path / "class.zip"
    not_zip.write_text("nope")
    for args, words in [
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist"),
        ([str(not_zip), "--out", str(tmp_path / "o")], "not a zip file"),
        ([str(tmp_path), "--out", str(tmp_path / "o"), "--exercise", "ex9"], "no exercise 'ex9'"),
        ([str(tmp_path), "--out", str(tmp_path / "o"), "--student-pattern", "("], "not a valid regular expression"),
    ]:
        result = CliRunner().invoke(cli, ["batch", *args])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, args
