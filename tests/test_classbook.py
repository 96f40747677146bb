"""The instructor's view of a class: LMS names, the gradebook's statuses, feedback that opens with
the score, report.html, and a class graded in shards and merged."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.batch import discover
from grader.classbook import exercise_status
from grader.exercises import EX1, EX2, EX3, EX4
from grader.lms import Named, in_folder, read_folder, read_name

from conftest import SOLUTION, replace_line
from messy import lecture_cells, notebook
from test_picture import png_pixels

GRADE = [sys.executable, "-c", "from grader.cli import main; main()"]
EX2_SOLUTION, EX3_SOLUTION, EX4_SOLUTION = (e.solution_path.read_text() for e in (EX2, EX3, EX4))
BRANCH = replace_line(SOLUTION, "dbndiff =", "dbndiff = bnvar_inv * dbnraw")  # forgets the bndiff2 branch
TRANSPOSED = replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h")
NO_BESSEL = replace_line(SOLUTION, "dbndiff2 =", "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar")


@pytest.mark.parametrize("stem, student, late, attempt", [
    ("smith_12345_67890_ex1_backprop_all", "smith", False, ("", 0)),  # Canvas
    ("smith_LATE_12345_67890_ex1_backprop_all", "smith", True, ("", 0)),
    ("smith_12345_67890_ex1_backprop_all-2", "smith", False, ("", 2)),  # Canvas's third upload of one name
    ("vanderberg_LATE_7_8_ex2_cross_entropy-11", "vanderberg", True, ("", 11)),
    ("Carol Lee_123456_assignsubmission_file_ex1_backprop_all", "Carol Lee", False, ("", 0)),  # Moodle
    ("HW4_jdoe_attempt_2026-11-21-09-30-00_ex3_batchnorm", "jdoe", False, ("2026-11-21-09-30-00", 0)),  # Blackboard
    ("Carol Lee - ex1", "Carol Lee", False, ("", 0)),  # by hand
    ("Anne-Marie O'Neil_ex2", "Anne-Marie O'Neil", False, ("", 0)),
    ("alice-ex1", "alice", False, ("", 0)),
    ("bob-LATE-ex2_cross_entropy", "bob", True, ("", 0)),
    ("jones_late_ex1 (2)", "jones", True, ("", 2)),
    ("ex1_backprop_all", None, False, ("", 0)),  # no student in the name: the caller uses the stem
    ("readme", None, False, ("", 0)),
    ("Latey_ex1", "Latey", False, ("", 0)),  # a name with `late` in it is not LATE
    ("chocolate_ex1", "chocolate", False, ("", 0)),
    ("Homework 4_20231234_attempt_2026-03-01-10-00-00_ex2_cross_entropy", "20231234", False,
     ("2026-03-01-10-00-00", 0)),  # a Blackboard user that is a number is not Canvas's user id
    ("HW_4_jdoe_attempt_2026-03-01-10-00-00_ex2", "jdoe", False, ("2026-03-01-10-00-00", 0)),
])
def test_lms_names_say_who_when_and_which_attempt(stem, student, late, attempt):
    named = read_name(stem)
    assert (named.student, named.late, named.attempt) == (student, late, attempt)


@pytest.mark.parametrize("stem, student, file", [
    ("smith_12345_67890_ex1_backprop_all-2", "smith", "ex1_backprop_all"),
    ("Carol Lee_123456_assignsubmission_file_ex1_backprop_all", "Carol Lee", "ex1_backprop_all"),
    ("HW4_jdoe_attempt_2026-11-21-09-30-00_ex3_batchnorm", "jdoe", "ex3_batchnorm"),
    ("HW4_jdoe_attempt_2026-11-21-09-30-00", "jdoe", ""),  # the LMS kept no name of the student's
    ("Carol Lee - ex1", "Carol Lee", "ex1"),
    ("notes (3)", None, "notes"),
])
def test_a_name_says_the_file_name_the_student_gave(stem, student, file):
    # What the exercise is recognised from (`Carol Lee - ex1.py` answers ex1 by its own name).
    assert (read_name(stem).student, read_name(stem).file) == (student, file)


def test_a_file_in_a_students_folder_keeps_the_folders_student():
    pat = read_folder("pat")
    assert in_folder(pat, "ex2_cross_entropy (2)") == Named("pat", late=False, attempt=("", 2), file="ex2_cross_entropy")
    assert in_folder(pat, "smith_1_2_ex1_backprop_all") == Named("pat", file="ex1_backprop_all")
    assert in_folder(pat, "ex1-LATE").late and in_folder(read_folder("pat LATE"), "ex1").late
    assert not in_folder(pat, "ex1").late
    kim = in_folder(read_folder("kim"), "HW_kim_attempt_2026-11-21-09-30-00_ex3")
    assert (kim.student, kim.attempt, kim.file) == ("kim", ("2026-11-21-09-30-00", 0), "ex3")


def test_a_pattern_of_the_instructors_own_can_say_late_and_attempt():
    named = read_name("2026-bob-v3-LATE", r"^\d+-(?P<student>[a-z]+)-v(?P<attempt>\d+)(?P<late>-LATE)?")
    assert (named.student, named.late, named.attempt) == ("bob", True, ("", 3))
    assert read_name("bob-ex1", r"^\d+-(?P<student>[a-z]+)") == Named(None, file="bob-ex1")
    assert read_name("2026-bob-ex1", r"^\d+-(?P<student>[a-z]+)") == Named("bob", file="2026-bob-ex1")
    assert read_name("2026-bob-vX", r"^\d+-(?P<student>[a-z]+)-(?P<attempt>\w+)").attempt == ("", 0)
    assert read_folder("Carol Lee_123456_assignsubmission_file_").student == "Carol Lee"
    assert read_folder("dave LATE").late and not read_folder("dave").late


def test_the_last_attempt_wins_and_the_rest_are_listed(tmp_path):
    (tmp_path / "dave_4_5_ex1_backprop_all.py").write_text(EX1.stub_path.read_text())
    (tmp_path / "dave_4_6_ex1_backprop_all-1.py").write_text(TRANSPOSED)
    (tmp_path / "dave_4_7_ex1_backprop_all-2.py").write_text(SOLUTION)
    (tmp_path / "HW_kim_attempt_2026-11-21-09-30-00_ex3_batchnorm.py").write_text(EX3_SOLUTION)
    (tmp_path / "HW_kim_attempt_2026-11-20-10-00-00_ex3_batchnorm.py").write_text("dhprebn = 0\n")
    (tmp_path / "pat").mkdir()
    (tmp_path / "pat" / "ex2_cross_entropy (2).py").write_text(EX2_SOLUTION)
    (tmp_path / "pat" / "ex2_cross_entropy.py").write_text("dlogits = 0\n")
    found = discover(tmp_path)
    kept = {(s.student, s.exercise.id): s.name for s in found.submissions}
    assert kept == {("dave", "ex1"): "dave_4_7_ex1_backprop_all-2.py",
                    ("kim", "ex3"): "HW_kim_attempt_2026-11-21-09-30-00_ex3_batchnorm.py",
                    ("pat", "ex2"): "pat/ex2_cross_entropy (2).py"}
    assert len(found.duplicates) == 4


def record(result: dict, passed: bool = False) -> dict:
    return {"result": {"results": [], "error": None, "training": None, **result}, "passed": passed}


def test_each_status_is_said_for_what_went_wrong():
    assert exercise_status(record({}, passed=True)) == "ok"
    assert exercise_status(record({"results": [{"name": "dh", "status": "fail"}]})) == "partial"
    assert exercise_status(record({"results": [{"name": "dh", "status": "fail", "policy": "autograd"}]})) == "policy"
    assert exercise_status(record({"error": "syntax error at line 3: invalid syntax"})) == "error"
    assert exercise_status(record({"error": "time limit of 5 s exceeded (still running line 9)"})) == "timeout"
    assert exercise_status(record({"error": "line 9 used more than 0.1 s of CPU, the limit for one statement "
                                            "(an endless loop?): grading stopped there"})) == "timeout"
    assert exercise_status(record({"training": {"error": "time limit of 60 s exceeded", "passed": False}})) == "timeout"


# --- a class as an instructor downloads it ---

def _class(folder: Path) -> None:
    """About 40 files from 24 students: honest, partial, blank, crashing, looping, cheating, late,
    misnamed, resubmitted, a notebook answering all four exercises, and a file that answers none."""
    folder.mkdir()
    files = {
        "smith_1_1_ex1_backprop_all.py": SOLUTION, "smith_1_2_ex2_cross_entropy.py": EX2_SOLUTION,
        "smith_1_3_ex3_batchnorm.py": EX3_SOLUTION, "smith_1_4_ex4_training.py": EX4_SOLUTION,
        "jones_LATE_2_1_ex1_backprop_all.py": TRANSPOSED,
        "Carol Lee - ex1.py": BRANCH, "Carol Lee - ex2.py": EX2_SOLUTION,
        "dave_4_5_ex1_backprop_all.py": EX1.stub_path.read_text(),
        "dave_4_6_ex1_backprop_all-1.py": TRANSPOSED, "dave_4_7_ex1_backprop_all-2.py": SOLUTION,
        "lee_ex1_backprop_all.py": replace_line(SOLUTION, "dh =", "while True: pass\ndh = dlogits @ W2.T"),
        "mallory_ex1_backprop_all.py": replace_line(SOLUTION, "dh =", "dh = torch.autograd.grad(loss, h)[0]"),
        "oscar_ex1_backprop_all.py": SOLUTION.replace("dW2 = h.T @ dlogits", "dW2 = (h.T @ dlogits"),
        "eve_ex1_backprop_all.py": "",
        "ben_ex1_backprop_all.py": EX1.stub_path.read_text(),
        "Zoe Park_778899_assignsubmission_file_ex2_cross_entropy.py": EX2_SOLUTION,
        "HW4_kim_attempt_2026-11-20-10-00-00_ex3_batchnorm.py": "dhprebn = bngain * dhpreact\n",
        "HW4_kim_attempt_2026-11-21-09-30-00_ex3_batchnorm.py": EX3_SOLUTION,
        "ivan_ex4_training.py": replace_line(EX4_SOLUTION, "dW1 =", "dW1 = (embcat.T @ dhprebn) * 2"),
        "tom_ex3_batchnorm.py": replace_line(EX3_SOLUTION, "dhprebn = bngain*", "dhprebn = bngain * dhpreact"),
    }
    mistakes = [BRANCH] * 4 + [TRANSPOSED] * 2 + [NO_BESSEL] * 2
    mistakes.append(replace_line(BRANCH, "dW2 =", "dW2 = dlogits.T @ h"))
    mistakes += [SOLUTION] * 3
    for i, source in enumerate(mistakes, start=1):
        files[f"s{i:02d}_ex1_backprop_all.py"] = source
        if i >= 10:
            files[f"s{i:02d}_ex2_cross_entropy.py"] = EX2_SOLUTION
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "quinn").mkdir()
    (folder / "quinn" / "my notes.txt").write_text("I ran out of time, sorry\n")
    (folder / "nina").mkdir()  # the lecture's notebook, worked through: scratch cells, a training loop, plots
    (folder / "nina" / "makemore_part4.ipynb").write_text(notebook(lecture_cells()))
    (folder / "rita").mkdir()
    (folder / "rita" / "ex2.ipynb").write_text(notebook(["import matplotlib.pyplot as plt\nplt.plot([1, 2])",
                                                         "scratch = 2 + 2", EX2_SOLUTION]))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once, as an instructor runs it."""
    root = tmp_path_factory.mktemp("class")
    _class(root / "submissions")
    ran = subprocess.run([*GRADE, "batch", str(root / "submissions"), "--out", str(root / "out"), "--jobs", "2",
                          "--exercise", "ex1,ex2", "--exercise", "ex3,ex4"],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert ran.returncode == 0, ran.stderr
    return root, ran.stdout


def rows(out: Path) -> dict[str, dict]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_the_gradebook_has_a_row_per_student_with_status_late_and_hand_computed_totals(graded):
    root, _ = graded
    book = rows(root / "out")
    assert list(next(iter(book.values()))) == ["student", "total", "max_total", "status", "late",
                                               "ex1", "ex2", "ex3", "ex4"]
    assert len(book) == 28 and all(row["max_total"] == "36" for row in book.values())
    want = {  # student: (total, status, late, ex1, ex2, ex3, ex4)
        "smith": ("36", "ok", "", "26", "1", "1", "8"),
        "jones": ("25", "missing", "ex1", "25", "", "", ""),  # the LATE in the name is kept, not the student's
        "Carol Lee": ("26", "missing", "", "25", "1", "", ""),  # `Carol Lee - ex1.py`
        "dave": ("26", "missing", "", "26", "", "", ""),  # the last of three uploads
        "kim": ("1", "missing", "", "", "", "1", ""),  # the later of two Blackboard attempts
        "Zoe Park": ("1", "missing", "", "", "1", "", ""),
        "mallory": ("25", "policy", "", "25", "", "", ""),
        "oscar": ("0", "error", "", "0", "", "", ""),
        "eve": ("0", "error", "", "0", "", "", ""),
        "ben": ("0", "missing", "", "0", "", "", ""),
        "ivan": ("6", "missing", "", "", "", "", "6"),  # dW1 and the training run
        "quinn": ("0", "missing", "", "", "", "", ""),
        "s09": ("24", "missing", "", "24", "", "", ""),
        "s10": ("27", "missing", "", "26", "1", "", ""),
    }
    for student, (total, status, late, *scores) in want.items():
        row = book[student]
        assert (row["total"], row["status"], row["late"], row["ex1"], row["ex2"], row["ex3"], row["ex4"]) == \
            (total, status, late, *scores), student
    assert book["lee"]["status"] == "timeout"
    assert book["nina"]["status"] in ("ok", "partial") and float(book["nina"]["total"]) >= 30


@pytest.mark.slow
def test_feedback_opens_with_the_score_and_names_what_was_not_submitted(graded):
    root, _ = graded
    feedback = root / "out" / "feedback"
    text = (feedback / "Carol_Lee.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "Carol Lee: 26/36 · ex1 25/26 · ex2 1/1 · ex3 not submitted · ex4 not submitted"
    assert lines[1] == "Not submitted: ex3 (ex3_batchnorm.py or .ipynb), ex4 (ex4_training.py or .ipynb)"
    assert "dbndiff" in text and "bndiff2" in text  # then the report, with the hint
    assert (feedback / "jones.txt").read_text().splitlines()[2] == "Handed in late (by the file name): ex1"
    quinn = (feedback / "quinn.txt").read_text()
    assert quinn.startswith("quinn: 0/36 · ex1 not submitted") and "quinn/my notes.txt" in quinn
    page = (feedback / "Carol_Lee.html").read_text()
    assert page.count("class='bn-result'") == 2 and "Carol Lee: 26/36" in page  # both exercises, drawn
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert json.loads((feedback / "smith.json").read_text())[3]["exercise"] == "ex4"


@pytest.mark.slow
def test_the_printed_summary_has_the_five_hardest_gradients_and_who_needs_attention(graded):
    _, printed = graded
    hardest = printed.split("hardest gradients:\n")[1].split("\n\n")[0].splitlines()
    assert len(hardest) == 5
    # Of the 18 exercise 1 files that ran and were not left blank (ben's): dbndiff, s01-s04, s09 and Carol
    # Lee forgot the branch; dW2, s05, s06, s09 and jones transposed it. Of 3 exercise 4 files, ivan doubled dW1.
    assert hardest[0].split()[:3] == ["ex1", "dbndiff", "12/18"] and "6 misses the branch through `bndiff2`" in hardest[0]
    assert [row.split()[:3] for row in hardest[1:]] == [["ex4", "dW1", "2/3"], ["ex4", "training", "run"],
                                                        ["ex3", "dhprebn", "3/4"], ["ex1", "dW2", "14/18"]]
    attention = printed.split("needs attention (")[1]
    assert attention.startswith("6 files)")
    for student, words in [("mallory", "ex1 policy: uses autograd for `dh`"), ("lee", "ex1 timeout"),
                           ("oscar", "ex1 error: syntax error"), ("eve", "is empty")]:
        assert f"{student}  {words}" in attention or (student in attention and words in attention), student
    assert attention.index("mallory") < attention.index("lee") < attention.index("oscar")  # the most urgent first
    assert "\n  ex1 not submitted by 6: ivan, kim, quinn, rita, tom, Zoe Park\n" in attention  # by name, any case
    assert "\n  ex2 not submitted by 20: ben, dave, eve, ivan, jones, kim ...\n" in attention  # Zoe did, by Moodle
    assert "26 dbndiff" not in printed and len(printed.splitlines()) < 45


@pytest.mark.slow
def test_the_report_lists_who_needs_attention_and_the_hardest_gradients_with_the_hints(graded):
    root, _ = graded
    out = root / "out"
    summary = json.loads((out / "summary.json").read_text())
    needs = {(n["student"], n["exercise"], n["status"]) for n in summary["needs_attention"]}
    assert {("mallory", "ex1", "policy"), ("lee", "ex1", "timeout"), ("oscar", "ex1", "error"),
            ("eve", "ex1", "error"), ("quinn", None, "unrecognised"), ("quinn", "ex1", "missing"), ("ben", "ex1", "blank"),
            ("jones", "ex2", "missing")} <= needs
    assert not [n for n in needs if n[0] == "smith"]
    first = summary["hardest"][0]
    assert (first["gradient"], first["passing"], first["graded"]) == ("dbndiff", 12, 18)
    assert first["mistakes"][0]["count"] == 6 and "bndiff2" in first["mistakes"][0]["hint"]
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    for student in rows(out):  # every student's feedback is linked, and there
        name = student.replace(" ", "_")
        assert f"href='feedback/{name}.html'" in page and (out / "feedback" / f"{name}.html").exists(), student
    attention, gradients = page.split("Gradients, hardest first")
    assert "mallory" in attention and "uses autograd for <code>dh</code>" in attention
    assert gradients.index("<code>dbndiff</code>") < gradients.index("<code>dW2</code>")
    assert "that is the transpose" in gradients  # dW2's mistake, in the hint's words


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (Debian package chromium)")
def test_the_report_renders_with_its_heatmap_histogram_and_badges(graded):
    root, _ = graded
    shot = root / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1300,2600", f"--screenshot={shot}", (root / "out" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = set(png_pixels(shot))
    for colour in ("#cf222e", "#1a7f37", "#0969da", "#8250df", "#bc4c00"):  # fail and policy; exact; approx and
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # the histogram; error; the timeout badge
        assert any(sum(abs(a - b) for a, b in zip(p, rgb)) <= 6 for p in pixels), colour


# --- past one machine ---


@pytest.mark.slow
def test_a_class_graded_in_three_shards_and_merged_is_the_class_graded_at_once(graded, tmp_path):
    root, _ = graded
    shards = [tmp_path / f"shard{i}" for i in (1, 2, 3)]
    for i, out in enumerate(shards, start=1):
        ran = subprocess.run([*GRADE, "batch", str(root / "submissions"), "--out", str(out), "--jobs", "2",
                              "--exercise", "ex1,ex2,ex3,ex4", "--shard", f"{i}/3"],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert ran.returncode == 0 and ran.stdout.startswith(f"shard {i}/3: "), ran.stderr
    sizes = [len((out / "results.jsonl").read_text().splitlines()) for out in shards]
    assert all(sizes) and sum(sizes) == len((root / "out" / "results.jsonl").read_text().splitlines())

    # Resume works per shard: a shard cut short grades only what it lacks.
    lines = (shards[1] / "results.jsonl").read_text().splitlines(keepends=True)
    (shards[1] / "results.jsonl").write_text("".join(lines[:-2]))
    merged = tmp_path / "merged"
    early = subprocess.run([*GRADE, "merge", *map(str, shards), "--out", str(merged)], capture_output=True, text=True)
    assert early.returncode == 2 and f"no result yet ({shards[1]} lacks 2)" in early.stderr and not merged.exists()
    again = subprocess.run([*GRADE, "batch", str(root / "submissions"), "--out", str(shards[1]), "--jobs", "1",
                            "--exercise", "ex1,ex2,ex3,ex4", "--shard", "2/3"], capture_output=True, text=True, timeout=600)
    assert f"{sizes[1] - 2} already graded, 2 to grade" in again.stdout

    done = subprocess.run([*GRADE, "merge", *map(str, shards), "--out", str(merged)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    whole = root / "out"
    for name in ("gradebook.csv", "summary.json", "report.html"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    feedback = sorted(p.name for p in (whole / "feedback").iterdir())
    assert feedback == sorted(p.name for p in (merged / "feedback").iterdir()) and len(feedback) == 3 * 28
    for name in feedback:
        assert (merged / "feedback" / name).read_bytes() == (whole / "feedback" / name).read_bytes(), name

    for parts, words in [(shards[:2], "shard 3/3 is missing"), ([shards[0], *shards], "shard 1/3 is given twice"),
                         ([*shards, tmp_path], "holds no class.json"), ([root / "out"], "graded without --shard")]:
        bad = subprocess.run([*GRADE, "merge", *map(str, parts), "--out", str(tmp_path / "bad")],
                             capture_output=True, text=True)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr, words
    inside = subprocess.run([*GRADE, "merge", *map(str, shards), "--out", str(shards[0] / "feedback" / "all")],
                            capture_output=True, text=True)  # grading shard 1 again would delete it
    assert inside.returncode == 2 and "outside the shards' folders" in inside.stderr


def test_shards_of_two_different_classes_are_refused(tmp_path):
    from grader.classbook import MergeError, merged_manifest

    part = {"shard": [1, 2], "fingerprint": "a", "grader_version": "1", "assigned": ["ex1"], "submissions": [],
            "unrecognised": [], "unassigned": [], "duplicates": [], "skipped": [], "owners": {}}
    assert merged_manifest([part, {**part, "shard": [2, 2]}])["shard"] is None
    for change, words in [({"fingerprint": "b"}, "different submissions"), ({"grader_version": "2"}, "versions"),
                          ({"assigned": ["ex2"]}, "different exercises"), ({"shard": [2, 3]}, "numbers of shards")]:
        with pytest.raises(MergeError, match=words):
            merged_manifest([part, {**part, "shard": [2, 2], **change}])


def test_a_bad_shard_is_one_sentence_and_exit_2(tmp_path):
    for shard in ("0/3", "4/3", "two", "1/0"):
        ran = subprocess.run([*GRADE, "batch", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", shard],
                             capture_output=True, text=True)
        assert ran.returncode == 2 and "--shard" in ran.stderr and "Traceback" not in ran.stderr, shard


def test_a_shard_folder_not_written_by_a_batch_is_refused_in_one_sentence(tmp_path):
    good = {"grader_version": "1", "fingerprint": "f", "assigned": ["ex1"], "shard": [1, 1], "submissions": [],
            "unrecognised": [], "unassigned": [], "duplicates": [], "skipped": [], "owners": {}}
    for number, broken in enumerate(["{ cut short", "[]", json.dumps({**good, "shard": "1/1"}),
                                     json.dumps({k: v for k, v in good.items() if k != "owners"}),
                                     json.dumps({**good, "assigned": ["ex9"]}),
                                     json.dumps({**good, "submissions": [{"student": 1}]}),
                                     json.dumps({**good, "shard": [0, 3]}), json.dumps({**good, "shard": ["1", "1"]})]):
        part = tmp_path / f"part{number}"
        part.mkdir()
        (part / "class.json").write_text(broken)
        ran = subprocess.run([*GRADE, "merge", str(part), "--out", str(tmp_path / f"out{number}")],
                             capture_output=True, text=True)
        assert ran.returncode == 2 and "Traceback" not in ran.stderr, (broken, ran.stderr)
        assert "class.json" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
        assert not (tmp_path / f"out{number}").exists()


def test_a_student_who_handed_in_only_another_exercise_is_missing_the_assigned_one(tmp_path):
    from grader.batch import run_batch

    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "bob").mkdir()
    (tmp_path / "class" / "alice" / "ex1_backprop_all.py").write_text(EX1.stub_path.read_text())
    (tmp_path / "class" / "bob" / "ex2_cross_entropy.py").write_text(EX2_SOLUTION)
    summary = run_batch(submissions=tmp_path / "class", out=tmp_path / "out", jobs=1, exercises=("ex1",),
                        log=lambda text: None, progress_stream=open(os.devnull, "w"))
    book = rows(tmp_path / "out")
    assert (book["bob"]["total"], book["bob"]["status"], book["bob"]["ex1"]) == ("0", "missing", "")
    assert "ex2" not in book["bob"] and summary["unassigned"] == ["bob/ex2_cross_entropy.py"]
    assert book["alice"]["status"] == "partial"
    said = []
    run_batch(submissions=tmp_path / "class", out=tmp_path / "out", jobs=1, exercises=("ex1", "ex2"),
              log=said.append, progress_stream=open(os.devnull, "w"))
    assert any(line.startswith("note: the last run into") and "was for ex1; this one is for ex1, ex2" in line
               for line in said), said
    assert rows(tmp_path / "out")["bob"]["ex2"] == "1"


def test_the_output_folder_inside_the_submissions_is_not_taken_for_a_student(tmp_path):
    from grader.batch import run_batch

    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "alice" / "ex1_backprop_all.py").write_text(EX1.stub_path.read_text())
    out = tmp_path / "class" / "graded"
    for _ in range(2):  # the second run finds the first one's outputs beside the students' folders
        summary = run_batch(submissions=tmp_path / "class", out=out, jobs=1, log=lambda text: None,
                            progress_stream=open(os.devnull, "w"))
    assert list(rows(out)) == ["alice"] and summary["unrecognised"] == []


def test_a_folder_without_submissions_is_one_sentence_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    for folder, words in [("empty", "there is no submission in"), ("notes", "(1 files, none of them an exercise's")]:
        ran = subprocess.run([*GRADE, "batch", str(tmp_path / folder), "--out", str(tmp_path / "out")],
                             capture_output=True, text=True, timeout=120)
        assert ran.returncode == 2 and words in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
        assert not (tmp_path / "out" / "gradebook.csv").exists()


# --- what a hostile name, a corrupt file or a careless command must not do ---


def stub_class(folder: Path, students: list[str]) -> None:
    """A folder per student, each with exercise 1's stub (graded without running anything)."""
    for name in students:
        (folder / name).mkdir(parents=True)
        (folder / name / "ex1_backprop_all.py").write_text(EX1.stub_path.read_text())


def batch(folder: Path, out: Path, **options) -> dict:
    from grader.batch import run_batch

    said = options.pop("said", [])
    return run_batch(submissions=folder, out=out, jobs=1, log=said.append, progress_stream=open(os.devnull, "w"),
                     **options)


def test_no_name_can_take_a_file_name_that_breaks_the_outputs_or_is_anothers(tmp_path):
    from grader.classbook import feedback_names

    names = ["(alice)", "Alice", "alice", "(BOB)", "bob", "b" * 250, "\u202eevil", "ctl\x1b[2Jx"]
    stub_class(tmp_path / "class", names)
    batch(tmp_path / "class", tmp_path / "out")
    files = {name: stem for name, stem in feedback_names(sorted(names, key=lambda n: (n.casefold(), n))).items()}
    assert files["Alice"] == "Alice" and files["(alice)"].startswith("alice-")  # an exact name is its owner's
    assert files["alice"].startswith("alice-")  # (on a disk that ignores case, `Alice` had it first)
    assert len(files["b" * 250]) == 80 and len({stem.casefold() for stem in files.values()}) == len(names)
    written = sorted(p.name for p in (tmp_path / "out" / "feedback").iterdir())
    assert len(written) == 3 * len(names)
    assert (tmp_path / "out" / "feedback" / "Alice.txt").read_text().startswith("Alice: 0/26")
    for path in (tmp_path / "out").rglob("*"):
        if path.suffix in (".txt", ".csv"):
            assert "\x1b" not in path.read_text() and "\u202e" not in path.read_text(), path
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<bdi>\u202eevil</bdi>" in page  # the override cannot turn the names after it around


def test_a_corrupt_line_of_results_is_graded_again_and_a_changed_setting_regrades(tmp_path):
    stub_class(tmp_path / "class", ["alice", "bob"])
    out = tmp_path / "out"
    batch(tmp_path / "class", out)
    lines = (out / "results.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    for broken in ({**record, "result": {}}, {**record, "score": "1"}, {**record, "report": None},
                   {**record, "result": {**record["result"], "results": [{"name": "dh", "status": "bogus"}]}},
                   {**record, "result": {**record["result"], "training": {"passed": False}}}):
        (out / "results.jsonl").write_text(json.dumps(broken) + "\n" + lines[1] + "\n")
        said = []
        batch(tmp_path / "class", out, said=said)
        assert "1 already graded, 1 to grade" in said[0], said
        lines = (out / "results.jsonl").read_text().splitlines()[-2:]
    said = []
    batch(tmp_path / "class", out, said=said, timeout=7.0)  # another --timeout: its verdicts may differ
    assert "0 already graded, 2 to grade" in said[0], said


def test_the_outputs_of_other_batches_among_the_submissions_are_not_students(tmp_path):
    stub_class(tmp_path / "class", ["alice"])
    batch(tmp_path / "class", tmp_path / "class" / "graded-1")  # (a shard's folder, say)
    summary = batch(tmp_path / "class", tmp_path / "class" / "graded-2")
    assert summary["unrecognised"] == [] and summary["skipped"] == ["graded-1 (the outputs of a grade batch)"]


def test_one_student_however_their_name_is_typed(tmp_path):
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "Jos\u00e9_ex1_backprop_all.py").write_text(EX1.stub_path.read_text())  # é as one character
    (tmp_path / "class" / "Jose\u0301_ex2_cross_entropy.py").write_text(EX2_SOLUTION)  # e and a combining accent
    assert {s.student for s in discover(tmp_path / "class").submissions} == {"Jos\u00e9"}


def test_an_unusable_out_or_shard_is_one_sentence(tmp_path):
    stub_class(tmp_path / "class", ["alice"])
    (tmp_path / "afile").write_text("")
    for args, words in [(["--out", str(tmp_path / "afile")], "is a file"),
                        (["--out", str(tmp_path / "o"), "--shard", "1/99999999999999999999"], "write it I/N"),
                        (["--out", str(tmp_path / "o"), "--shard", "1/20000"], "at most 10000")]:
        ran = subprocess.run([*GRADE, "batch", str(tmp_path / "class"), *args], capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 2 and words in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
