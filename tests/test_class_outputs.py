"""A class's outputs built in this process from a class.json and a results.jsonl written here, with
every total, status and count worked out by hand. (The class tests grade real files through the
command; these pin down what the outputs make of given results, in a fraction of a second.)"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.batch import _record
from grader.classbook import (
    CLASS_FILE, MergeError, attention, feedback_names, gradebook_csv, hint_kind, in_shard, merge, merged_manifest,
    safe_filename, score_line, standings, summary_text, untouched, valid_shard, well_formed, why,
    write_outputs,
)
from grader.compare import FileResult, Status, TensorResult
from grader.exercises import BY_ID, EX1, EX2
from grader.outputs import load_results, record_key, safe_cell
from grader.outputs import well_formed as record_well_formed
from grader.training import TrainingComparison

VERSION = "0.1.0+test settings 1"
ASSIGNED = ["ex1", "ex2", "ex4"]
TRANSPOSE = "`dW2` has shape (27, 64) but `W2` has shape (64, 27): that is the transpose; did you mean `.T`?"
BRANCH = "your `dbndiff` has the path through `bnraw` but not the one through `bndiff2`: add both paths"
TRACKS = TrainingComparison(1000, 1e-5, 4e-7, 2.25, 2.25, None)
DRIFTS = TrainingComparison(1000, 1e-5, 3e-2, 2.4, 2.25, 12)


def file_result(exercise, *, wrong=None, status=Status.EXACT, error=None, training=None, policy=None) -> FileResult:
    """Every target `status`, but those in `wrong` ({name: (status, hint)})."""
    wrong = wrong or {}
    rows = []
    for name in BY_ID[exercise].targets:
        got, hint = wrong.get(name, (status, None))
        rows.append(TensorResult(name=name, tensor=name[1:], status=got, hint=hint,
                                 policy=policy if name in wrong and policy else None))
    return FileResult(file=f"{exercise}.py", exercise=exercise, results=tuple(rows), error=error, training=training)


def submission(student, exercise, text, late=False):
    digest = f"{abs(hash((student, exercise, text))):064x}"[-64:]
    return SimpleNamespace(student=student, name=f"{student}_{BY_ID[exercise].slug}.py", exercise=BY_ID[exercise],
                           digest=digest, late=late)


# (student, exercise, late, result): what the class handed in, and what grading gave.
CLASS = [
    ("alice", "ex1", False, file_result("ex1")),
    ("alice", "ex2", False, file_result("ex2")),
    ("alice", "ex4", False, file_result("ex4", training=TRACKS)),
    ("bob", "ex1", True, file_result("ex1", wrong={"dW2": (Status.FAIL, TRANSPOSE), "dbndiff": (Status.FAIL, BRANCH)})),
    ("Carol Lee", "ex1", False, file_result("ex1", wrong={"dh": (Status.FAIL, "uses autograd")}, policy="autograd")),
    ("Carol Lee", "ex2", False, file_result("ex2", status=Status.ERROR, error="syntax error at line 3: '(' was never closed")),
    ("dan", "ex1", False, file_result("ex1", status=Status.ERROR, error="time limit of 5 s exceeded")),
    ("dan", "ex4", True, file_result("ex4", training=DRIFTS)),
    ("eve", "ex1", False, file_result("ex1", status=Status.BLANK)),
    ("Alice", "ex2", False, file_result("ex2", wrong={"dlogits": (Status.FAIL, "`dlogits` is n times the right gradient")})),
    ("=frank", "ex1", False, file_result("ex1", wrong={"dW2": (Status.FAIL, TRANSPOSE)})),
]
# Worked out by hand: the total (ex1 is worth 26, ex2 1, ex4 8: 35), the status, what was late.
EXPECTED = {
    "alice": ("35", "ok", "", "26", "1", "8"),
    "Alice": ("0", "missing", "", "", "0", ""),
    "bob": ("24", "missing", "ex1", "24", "", ""),
    "Carol Lee": ("25", "policy", "", "25", "0", ""),
    "dan": ("7", "timeout", "ex4", "0", "", "7"),
    "eve": ("0", "missing", "", "0", "", ""),
    "'=frank": ("25", "missing", "", "25", "", ""),
}


def write_class(out: Path, entries=CLASS, shard=None, version=VERSION) -> dict:
    """class.json and results.jsonl as `grade batch` writes them, for the entries in `shard`."""
    out.mkdir(parents=True, exist_ok=True)
    found = [(submission(student, exercise, repr(result), late), result) for student, exercise, late, result in entries]
    chosen = [(s, r) for s, r in found if in_shard(s.student, shard)]
    owners = {"eve/notes.txt": "eve"}
    manifest = {
        "grader_version": version, "assigned": ASSIGNED, "shard": list(shard) if shard else None,
        "fingerprint": "f" * 64,
        "submissions": [{"student": s.student, "exercise": s.exercise.id, "file": s.name, "sha256": s.digest,
                         "late": s.late} for s, _ in chosen],
        "unrecognised": [n for n, who in owners.items() if in_shard(who, shard)],
        "unassigned": [], "duplicates": [], "skipped": [],
        "owners": {n: who for n, who in owners.items() if in_shard(who, shard)},
    }
    (out / CLASS_FILE).write_text(json.dumps(manifest))
    (out / "results.jsonl").write_text("".join(json.dumps(_record(s, r, version), sort_keys=True) + "\n"
                                                 for s, r in chosen))
    return manifest


def quiet(_text):
    pass


@pytest.fixture
def written(tmp_path):
    out = tmp_path / "out"
    write_class(out)
    summary = write_outputs(out, log=quiet)
    return out, summary


def book(out: Path) -> dict:
    return {row["student"]: row for row in csv.DictReader(io.StringIO((out / "gradebook.csv").read_text()))}


def test_the_gradebook_holds_the_hand_computed_totals_statuses_and_late_flags(written):
    out, _ = written
    rows = book(out)
    assert list(rows) == ["'=frank", "Alice", "alice", "bob", "Carol Lee", "dan", "eve"]  # by name, ignoring case
    for student, (total, status, late, ex1, ex2, ex4) in EXPECTED.items():
        assert rows[student] == {"student": student, "total": total, "max_total": "35", "status": status,
                                 "late": late, "ex1": ex1, "ex2": ex2, "ex4": ex4}, student


def test_the_summary_counts_statuses_exercises_and_gradients(written):
    _, summary = written
    assert summary["students"] == 7 and summary["submissions"] == 11 and summary["late"] == 2
    assert summary["statuses"] == {"ok": 1, "missing": 4, "policy": 1, "timeout": 1}
    assert summary["assigned"] == ASSIGNED and summary["unrecognised"] == ["eve/notes.txt"]
    ex1 = summary["exercises"]["ex1"]
    assert (ex1["submissions"], ex1["complete"], ex1["max_score"]) == (6, 1, 26.0)
    assert ex1["mean_score"] == pytest.approx((26 + 24 + 25 + 0 + 0 + 25) / 6)
    assert summary["exercises"]["ex2"]["mean_score"] == pytest.approx(1 / 3)
    assert summary["exercises"]["ex4"]["complete"] == 1
    # Counted over files that ran through and are not blank stubs: alice, bob, Carol Lee, =frank.
    dW2 = ex1["gradients"]["dW2"]
    assert dW2["passing"] == pytest.approx(2 / 4)
    assert dW2["mistakes"] == [{"what": "transposed", "share": pytest.approx(2 / 4), "count": 2, "hint": TRANSPOSE}]
    assert ex1["gradients"]["dbndiff"]["mistakes"][0]["what"] == "misses the branch through `bndiff2`"
    assert ex1["gradients"]["dh"]["mistakes"][0]["what"] == "used autograd"
    assert ex1["gradients"]["dlogprobs"] == {"passing": 1.0, "mistakes": []}
    training = summary["exercises"]["ex4"]["gradients"]["training run"]
    assert training["passing"] == pytest.approx(1 / 2) and training["mistakes"][0]["count"] == 1
    # Hardest first, ties in the exercises' order: half pass dW2, dlogits and the run; three in four dh and dbndiff.
    hardest = [(row["exercise"], row["gradient"], row["passing"], row["graded"]) for row in summary["hardest"]]
    assert hardest[:5] == [("ex1", "dW2", 2, 4), ("ex2", "dlogits", 1, 2), ("ex4", "training run", 1, 2),
                           ("ex1", "dh", 3, 4), ("ex1", "dbndiff", 3, 4)]


def test_attention_lists_the_most_urgent_first_with_a_reason(written):
    _, summary = written
    said = [(a["student"], a["exercise"], a["status"], a["why"]) for a in summary["needs_attention"]]
    assert said[:5] == [
        ("Carol Lee", "ex1", "policy", "uses autograd for `dh`"),
        ("dan", "ex1", "timeout", "time limit of 5 s exceeded"),
        ("Carol Lee", "ex2", "error", "syntax error at line 3: '(' was never closed"),
        ("eve", None, "unrecognised", "eve/notes.txt answers no exercise"),
        ("eve", "ex1", "blank", "handed in with no gradient written"),
    ]
    missing = [(a["student"], a["exercise"]) for a in summary["needs_attention"] if a["status"] == "missing"]
    assert missing == [("=frank", "ex2"), ("=frank", "ex4"), ("Alice", "ex1"), ("Alice", "ex4"), ("bob", "ex2"),
                       ("bob", "ex4"), ("Carol Lee", "ex4"), ("dan", "ex2"), ("eve", "ex2"), ("eve", "ex4")]
    assert len(said) == 5 + len(missing)


def test_each_student_gets_feedback_that_opens_with_the_score(written):
    out, _ = written
    names = sorted(p.name for p in (out / "feedback").iterdir())
    assert names == sorted(f"{stem}.{ext}" for stem in ("Alice", "alice-2", "bob", "Carol_Lee", "dan", "eve", "frank")
                           for ext in ("txt", "json", "html"))
    bob = (out / "feedback" / "bob.txt").read_text().splitlines()
    assert bob[:3] == ["bob: 24/35 · ex1 24/26 · ex2 not submitted · ex4 not submitted",
                       "Not submitted: ex2 (ex2_cross_entropy.py or .ipynb), ex4 (ex4_training.py or .ipynb)",
                       "Handed in late (by the file name): ex1"]
    eve = (out / "feedback" / "eve.txt").read_text()
    assert "Not graded, as they answer no exercise: eve/notes.txt" in eve
    carol = json.loads((out / "feedback" / "Carol_Lee.json").read_text())
    assert [r["exercise"] for r in carol] == ["ex1", "ex2"] and carol[0]["score"] == 25.0
    assert "alice: 35/35" in (out / "feedback" / "alice-2.html").read_text()


def test_a_resubmission_uses_the_last_line_for_its_key_and_ignores_other_versions(tmp_path):
    out = tmp_path / "out"
    write_class(out)
    manifest = json.loads((out / CLASS_FILE).read_text())
    alice_ex2 = next(s for s in manifest["submissions"] if s["student"] == "alice" and s["exercise"] == "ex2")
    failed = _record(SimpleNamespace(student="alice", name="a.py", exercise=EX2, digest=alice_ex2["sha256"]),
                     file_result("ex2", status=Status.FAIL), VERSION)
    other = _record(SimpleNamespace(student="bob", name="b.py", exercise=EX1,
                                    digest=next(s["sha256"] for s in manifest["submissions"] if s["student"] == "bob")),
                    file_result("ex1"), "another version")
    with open(out / "results.jsonl", "a") as handle:
        handle.write(json.dumps(failed) + "\n" + json.dumps(other) + "\n")
    write_outputs(out, log=quiet)
    rows = book(out)
    assert (rows["alice"]["total"], rows["alice"]["ex2"], rows["alice"]["status"]) == ("34", "0", "partial")
    assert rows["bob"]["total"] == "24"  # another grader version's result is not this run's


def test_merged_shards_give_the_same_outputs_as_the_whole_class(tmp_path):
    whole = tmp_path / "whole"
    write_class(whole)
    write_outputs(whole, log=quiet)
    shards = [tmp_path / f"shard{i}" for i in (1, 2, 3)]
    for i, folder in enumerate(shards, start=1):
        write_class(folder, shard=(i, 3))
    assert sum(len(load_results(f / "results.jsonl")) for f in shards) == len(CLASS)
    merged = tmp_path / "merged"
    merge(shards, merged, log=quiet)
    for name in ("gradebook.csv", "summary.json", "report.html"):
        assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
    for path in (whole / "feedback").iterdir():
        assert (merged / "feedback" / path.name).read_bytes() == path.read_bytes(), path.name


def test_merge_refuses_what_is_not_one_class_in_every_shard(tmp_path):
    shards = [tmp_path / f"shard{i}" for i in (1, 2, 3)]
    for i, folder in enumerate(shards, start=1):
        write_class(folder, shard=(i, 3))

    def refused(parts, out=None) -> str:
        with pytest.raises(MergeError) as raised:
            merge(parts, out or tmp_path / "merged", log=quiet)
        assert not (tmp_path / "merged").exists()
        return str(raised.value)

    assert refused(shards[:2]) == "shard 3/3 is missing: merge needs every shard's output"
    assert refused([shards[0], *shards]) == "shard 1/3 is given twice"
    assert refused(shards, shards[1] / "inside") == "--out must be a new folder outside the shards' folders"
    assert refused([*shards, tmp_path / "nothing"]).endswith("holds no class.json: is it the --out folder of a `grade batch`?")
    write_class(tmp_path / "whole")
    assert refused([tmp_path / "whole"]).endswith("was graded without --shard: merge joins the outputs of "
                                                  "`grade batch --shard I/N`, one for each I from 1 to N")
    write_class(tmp_path / "four", shard=(4, 4))
    assert refused([*shards, tmp_path / "four"]) == "these outputs were split into different numbers of shards"
    write_class(tmp_path / "other", shard=(3, 3), version="another")
    assert refused([*shards[:2], tmp_path / "other"]) == (
        "these shards were graded by different versions of the grader, or with different settings (--config, "
        "--timeout): grade every shard again with the same command")
    assert refused(shards[1:]) == "shard 1/3 is missing: merge needs every shard's output"
    manifest = json.loads((shards[2] / CLASS_FILE).read_text())
    (shards[2] / CLASS_FILE).write_text(json.dumps({**manifest, "assigned": ["ex1"]}))
    assert refused(shards) == ("these shards were graded for different exercises (--exercise): grade every shard "
                               "again with the same command")
    (shards[2] / CLASS_FILE).write_text(json.dumps({**manifest, "fingerprint": "0" * 64}))
    assert refused(shards) == "these shards were graded from different submissions: grade every shard again with the same command"
    (shards[2] / CLASS_FILE).write_text(json.dumps({**manifest, "shard": ["3", 3]}))
    assert refused(shards).endswith("is not as this version of `grade batch` writes it: grade that shard again")
    (shards[2] / CLASS_FILE).write_text("{not json")
    assert refused(shards).endswith("is not as this version of `grade batch` writes it: grade that shard again")
    (shards[2] / CLASS_FILE).write_text(json.dumps(manifest))
    lines = (shards[1] / "results.jsonl").read_text().splitlines(keepends=True)
    (shards[1] / "results.jsonl").write_text("".join(lines[:-1]))
    (shards[2] / "results.jsonl").write_text("")
    third = len(json.loads((shards[2] / CLASS_FILE).read_text())["submissions"])
    assert refused(shards) == (f"some submissions have no result yet ({shards[1]} lacks 1; {shards[2]} lacks {third}): "
                               "run those shards' `grade batch` again to finish them")
    (shards[2] / "results.jsonl").unlink()
    (shards[2] / "results.jsonl").mkdir()
    assert refused(shards) == f"cannot read {shards[2] / 'results.jsonl'}: Is a directory"
    (shards[0] / CLASS_FILE).unlink()
    (shards[0] / CLASS_FILE).mkdir()
    assert refused(shards) == f"cannot read {shards[0] / CLASS_FILE}: Is a directory"


@pytest.mark.parametrize("change", [
    lambda m: m.pop("owners"), lambda m: m.update(grader_version=1), lambda m: m.update(assigned=["ex9"]),
    lambda m: m.update(shard=[0, 3]), lambda m: m.update(shard=[1, 2, 3]), lambda m: m.update(shard=[True, 3]),
    lambda m: m.update(unrecognised=[1]), lambda m: m.update(owners={"a": 1}), lambda m: m.update(submissions={}),
    lambda m: m["submissions"][0].update(late="no"), lambda m: m["submissions"][0].update(exercise="ex9"),
    lambda m: m["submissions"][0].pop("sha256"), lambda m: m.update(fingerprint=None),
])
def test_a_class_json_that_is_not_as_batch_writes_it_is_refused(tmp_path, change):
    manifest = write_class(tmp_path / "out", shard=(1, 3))
    assert well_formed(manifest)
    broken = json.loads(json.dumps(manifest))
    broken["submissions"] = broken["submissions"] or [{"student": "a", "exercise": "ex1", "file": "f", "sha256": "s",
                                                       "late": False}]
    assert well_formed(broken)
    change(broken)
    assert not well_formed(broken)


def test_shards_split_a_class_the_same_way_everywhere():
    assert valid_shard(1, 1) and valid_shard(3, 3) and valid_shard(10000, 10000)
    assert not valid_shard(0, 3) and not valid_shard(4, 3) and not valid_shard(10001, 10001)
    names = [f"student{i}" for i in range(60)]
    split = [[n for n in names if in_shard(n, (i, 3))] for i in (1, 2, 3)]
    assert sorted(sum(split, [])) == sorted(names) and all(split)  # each in exactly one, none empty
    assert all(in_shard(n, None) for n in names)
    # Fixed by the name's SHA-256, not by the run: these are what every machine computes.
    assert [in_shard("alice", (i, 3)) for i in (1, 2, 3)].count(True) == 1
    assert [i for i in (1, 2, 3) if in_shard("alice", (i, 3))] == [int.from_bytes(
        __import__("hashlib").sha256(b"alice").digest()[:8], "big") % 3 + 1]


def test_merged_manifest_joins_the_lists_and_the_owners():
    parts = [{"shard": [i, 2], "assigned": ["ex1"], "grader_version": "v", "fingerprint": "f",
              "submissions": [{"student": s}], "unrecognised": [f"u{i}"], "unassigned": [f"a{3 - i}"],
              "duplicates": [], "skipped": [f"k{i}"], "owners": {f"u{i}": s}}
             for i, s in ((2, "zed"), (1, "amy"))]
    whole = merged_manifest(parts)
    assert whole == {"grader_version": "v", "assigned": ["ex1"], "fingerprint": "f", "shard": None,
                     "submissions": [{"student": "zed"}, {"student": "amy"}], "unrecognised": ["u1", "u2"],
                     "unassigned": ["a1", "a2"], "duplicates": [], "skipped": ["k1", "k2"],
                     "owners": {"u2": "zed", "u1": "amy"}}


def test_feedback_file_names_are_safe_short_and_unique_ignoring_case():
    taken: set[str] = set()
    assert safe_filename("Carol Lee", taken) == "Carol_Lee" and safe_filename("carol lee", taken) == "carol_lee-2"
    assert safe_filename("../..", set()) == "student" and safe_filename("._x_.", set()) == "x"
    long = safe_filename("a" * 300, set())
    assert long == "a" * 80
    crowded = {"a" * 80}
    assert safe_filename("a" * 300, crowded) == "a" * 72 + "-2" and "a" * 72 + "-2" in crowded
    assert safe_filename("a" * 300, crowded) == "a" * 72 + "-3"
    # A name that is already a safe file name keeps it, whoever comes first.
    assert feedback_names(["(alice)", "alice"]) == {"(alice)": "alice-2", "alice": "alice"}
    assert feedback_names(["Bob", "bob"]) == {"Bob": "Bob", "bob": "bob-2"}


def test_score_lines_and_cells():
    student = standings(json.loads(json.dumps({
        "grader_version": VERSION, "assigned": ["ex1", "ex2"], "submissions": [], "owners": {"x.txt": "zoe"},
        "unrecognised": ["x.txt"]})), [])[0]
    assert score_line(student, ["ex1", "ex2"]) == "zoe: 0/27 · ex1 not submitted · ex2 not submitted"
    assert student.strays == ["x.txt"] and student.status == "missing"
    assert [a["status"] for a in attention([student])] == ["unrecognised", "missing", "missing"]
    assert safe_cell("=1+1") == "'=1+1" and safe_cell(" @x") == "' @x" and safe_cell("\tx") == "'\tx"
    assert safe_cell("\rx") == "'\rx" and safe_cell("x\r") == "x\r"
    assert safe_cell("\uff1dx") == "'\uff1dx" and safe_cell(None) == "" and safe_cell(3) == "3" and safe_cell("a=b") == "a=b"
    assert gradebook_csv({"assigned": ["ex1"]}, []) == "student,total,max_total,status,late,ex1\r\n"


@pytest.mark.parametrize("result, kind", [
    ({"status": "exact"}, None), ({"status": "approx", "hint": "rounding"}, None),
    ({"status": "blank"}, "blank"), ({"status": "missing"}, "missing"), ({"status": "error"}, "error"),
    ({"status": "fail", "policy": "autograd", "hint": "transpose"}, "used autograd"),
    ({"status": "fail", "hint": BRANCH}, "misses the branch through `bndiff2`"),
    ({"status": "fail", "hint": "line 3 hard-coded 32"}, "hard-codes a size"),
    ({"status": "fail", "hint": "right only because the gradient is zero in truth"}, "right only because the true gradient is zero"),
    ({"status": "fail", "hint": TRANSPOSE}, "transposed"),
    ({"status": "fail", "hint": "a size-1 axis is missing"}, "forgets keepdim=True"),
    ({"status": "fail", "hint": "was broadcast to (32, 64)"}, "forgets to sum over a broadcast dimension"),
    ({"status": "fail", "hint": "the opposite sign"}, "has the sign flipped"),
    ({"status": "fail", "hint": "Bessel"}, "forgets Bessel's correction"),
    ({"status": "fail", "hint": "2 times the right gradient"}, "is off by a constant factor"),
    ({"status": "fail", "hint": "is all zeros"}, "is all zeros (an overwritten accumulation?)"),
    ({"status": "fail", "hint": "a float, not a tensor"}, "is not a tensor"),
    ({"status": "fail", "hint": "has dtype float64"}, "has the wrong dtype"),
    ({"status": "fail", "hint": "2 NaN values"}, "has NaN or infinite values"),
    ({"status": "fail", "hint": "right except in 2 of 7"}, "is wrong in a few entries"),
    ({"status": "fail", "hint": "right for these upstream gradients only"}, "has a wrong formula"),
    ({"status": "fail", "hint": "something else"}, "wrong values"), ({"status": "fail"}, "wrong values"),
])
def test_each_hint_is_counted_as_its_kind_of_mistake(result, kind):
    assert hint_kind(result) == kind


def test_a_results_line_is_used_only_when_every_value_is_as_batch_writes_it(tmp_path):
    good = _record(submission("amy", "ex4", "x"), file_result("ex4", training=TRACKS), VERSION)
    assert record_well_formed(good) and record_key(good) == ("amy", "ex4", good["sha256"], VERSION)
    breaks = [
        lambda r: r.update(student=3), lambda r: r.update(score="26"), lambda r: r.update(score=True),
        lambda r: r.update(max_score=None), lambda r: r.update(passed=1), lambda r: r.update(report=None),
        lambda r: r.update(result=[]), lambda r: r["result"].update(results={}),
        lambda r: r["result"].update(error=5), lambda r: r["result"]["results"][0].update(name=None),
        lambda r: r["result"]["results"][0].update(hint=7), lambda r: r["result"]["results"][0].update(status="great"),
        lambda r: r["result"]["results"][0].update(policy=1), lambda r: r["result"]["results"][0].update(about=2),
        lambda r: r["result"]["results"][0].update(warning=3), lambda r: r["result"]["results"][0].update(tensor=4),
        lambda r: r["result"]["training"].update(passed="yes"), lambda r: r["result"]["training"].update(error=1),
        lambda r: r["result"]["training"].pop("steps"), lambda r: r.pop("grader_version"),
        lambda r: r["result"].pop("points"),
    ]
    lines = []
    for change in breaks:
        broken = json.loads(json.dumps(good))
        change(broken)
        assert not record_well_formed(broken), broken
        lines.append(json.dumps(broken))
    path = tmp_path / "results.jsonl"
    bare = {k: v for k, v in good.items() if k != "file"}  # only the keys every line must have
    path.write_text("\n".join([json.dumps(good), *lines, "[1, 2]", '{"cut', json.dumps(bare)]) + "\n")
    with open(path, "ab") as handle:  # a line that is not UTF-8 (a disk error, an edit) spoils only itself
        handle.write(b'{"student": "\xff\xfe"}\n' + json.dumps(good).encode() + b"\n")
    assert load_results(path) == [good, bare, good]
    assert load_results(tmp_path / "none.jsonl") == []
    no_training = _record(submission("amy", "ex1", "y"), file_result("ex1"), VERSION)
    assert record_well_formed(no_training) and no_training["result"]["training"] is None


def test_outputs_written_again_replace_the_old_ones_whole(tmp_path):
    out = tmp_path / "out"
    write_class(out)
    write_outputs(out, log=quiet)
    (out / "feedback" / "stale.txt").write_text("from an earlier run")
    write_class(out, entries=[e for e in CLASS if e[0] != "bob"])
    write_outputs(out, log=quiet)
    names = {p.name for p in (out / "feedback").iterdir()}
    assert "bob.txt" not in names and "stale.txt" not in names and "dan.txt" in names
    assert sorted(p.name for p in out.iterdir()) == ["class.json", "feedback", "gradebook.csv", "report.html",
                                                     "results.jsonl", "summary.json"]  # nothing half-done left


def test_a_folder_whose_filling_fails_is_left_as_it_was(tmp_path):
    from grader.outputs import replace_folder, write_atomically

    folder = tmp_path / "feedback"
    replace_folder(folder, lambda new: (new / "a.txt").write_text("first"))
    assert [p.name for p in tmp_path.iterdir()] == ["feedback"] and (folder / "a.txt").read_text() == "first"

    def fails(new):
        (new / "b.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_folder(folder, fails)
    assert [p.name for p in tmp_path.iterdir()] == ["feedback"] and [p.name for p in folder.iterdir()] == ["a.txt"]
    replace_folder(folder, lambda new: (new / "c.txt").write_text("second"))
    assert [p.name for p in tmp_path.iterdir()] == ["feedback"] and [p.name for p in folder.iterdir()] == ["c.txt"]
    write_atomically(tmp_path / "g.csv", "one\u00e9")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(tmp_path / "g.csv", "\ud800")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feedback", "g.csv"]
    assert (tmp_path / "g.csv").read_bytes() == "one\u00e9".encode("utf-8")


PRINTED = """7 students, 11 graded submissions, 2 late: 1 policy · 1 timeout · 4 missing · 1 ok
  ex1: 1/6 complete, mean score 16.7/26
  ex2: 1/3 complete, mean score 0.3/1
  ex4: 1/2 complete, mean score 7.5/8

hardest gradients:
  ex1 dW2              2/4 pass   2 transposed
  ex2 dlogits          1/2 pass   1 is off by a constant factor
  ex4 training run     1/2 pass   1 training
  ex1 dh               3/4 pass   1 used autograd
  ex1 dbndiff          3/4 pass   1 misses the branch through `bndiff2`

needs attention (5 files):
  Carol Lee  ex1 policy: uses autograd for `dh`
  dan  ex1 timeout: time limit of 5 s exceeded
  Carol Lee  ex2 error: syntax error at line 3: '(' was never closed
  eve  file unrecognised: eve/notes.txt answers no exercise
  eve  ex1 blank: handed in with no gradient written
  ex1 not submitted by 1: Alice
  ex2 not submitted by 4: =frank, bob, dan, eve
  ex4 not submitted by 5: =frank, Alice, bob, Carol Lee, eve

not recognised (1): eve/notes.txt

report: {out}/report.html"""


def test_the_printed_summary_says_what_was_worked_out(tmp_path):
    # Every figure checked by hand: ex1's mean is (26 + 24 + 25 + 0 + 0 + 25) / 6; ex2's 1/3; ex4's (8 + 7) / 2.
    out = tmp_path / "out"
    write_class(out)
    said = []
    summary = write_outputs(out, log=said.append)
    assert said == [PRINTED.format(out=out)]
    assert (out / "summary.json").read_text() == json.dumps(summary, indent=2)
    assert set(summary) == {"grader_version", "students", "submissions", "assigned", "statuses", "late",
                            "unrecognised", "unassigned", "duplicates", "skipped", "exercises", "hardest",
                            "needs_attention"}
    assert (summary["grader_version"], summary["unassigned"], summary["duplicates"], summary["skipped"]) == (
        VERSION, [], [], [])
    assert [row["gradient"] for row in summary["hardest"]][:3] == ["dW2", "dlogits", "training run"]
    missing = next(a for a in summary["needs_attention"] if a["status"] == "missing")
    assert missing == {"student": "=frank", "exercise": "ex2", "status": "missing", "why": "not submitted",
                       "feedback": "frank"}
    stray = next(a for a in summary["needs_attention"] if a["status"] == "unrecognised")
    assert stray["feedback"] == "eve" and stray["exercise"] is None


def test_a_long_summary_is_cut_where_it_says():
    summary = {"students": 30, "submissions": 0, "statuses": {"error": 20}, "exercises": {}, "hardest": [],
               "needs_attention": [{"student": f"s{i:02d}", "exercise": "ex1", "status": "error", "why": "x" * 150}
                                   for i in range(20)] +
                                  [{"student": f"m{i}", "exercise": "ex2", "status": "missing", "why": "not submitted"}
                                   for i in range(8)],
               "unrecognised": [f"f{i}.txt" for i in range(11)], "unassigned": ["a.py"], "duplicates": ["d.py", "e.py"],
               "skipped": ["big.bin"]}
    text = summary_text(summary, most=3).splitlines()
    assert text[0] == "30 students, 0 graded submissions: 20 error"
    assert text[2:8] == ["needs attention (20 files):", "  s00  ex1 error: " + "x" * 100, "  s01  ex1 error: " + "x" * 100,
                         "  s02  ex1 error: " + "x" * 100, "  ... and 17 more in report.html",
                         "  ex2 not submitted by 8: m0, m1, m2, m3, m4, m5 ..."]
    assert text[8:] == ["", "not recognised (11): " + ", ".join(f"f{i}.txt" for i in range(10)) + " ...",
                        "not in the assignment, not graded (1): a.py",
                        "earlier attempts and duplicates not graded (2): d.py, e.py", "not read (1): big.bin"]
    quiet_class = {**summary, "statuses": {}, "needs_attention": [], "unrecognised": [], "unassigned": [],
                   "duplicates": [], "skipped": [], "late": 0}
    assert summary_text(quiet_class) == "30 students, 0 graded submissions"


def test_counting_mistakes_across_a_class(tmp_path):
    # dW2, by five students: two transposed, one sign, one factor, one blank line, and one approx (a pass).
    wrong = {"transposed": (Status.FAIL, TRANSPOSE), "sign": (Status.FAIL, "`dW2` has the right size but the opposite sign"),
             "factor": (Status.FAIL, "`dW2` is 2 times the right gradient"), "blank": (Status.BLANK, None),
             "approx": (Status.APPROX, "rounding")}
    entries = [(f"s{i}", "ex1", False, file_result("ex1", wrong={"dW2": wrong[kind]}))
               for i, kind in enumerate(["transposed", "transposed", "sign", "factor", "blank", "approx"])]
    entries.append(("z", "ex2", False, file_result("ex2", status=Status.ERROR, error="syntax error at line 1: x")))
    entries += [(f"t{i}", "ex4", False, file_result("ex4", training=run)) for i, run in enumerate(
        [DRIFTS, DRIFTS, TrainingComparison.skipped("time limit of 60 s exceeded"), TRACKS])]
    out = tmp_path / "out"
    write_class(out, entries)
    summary = write_outputs(out, log=quiet)
    dW2 = summary["exercises"]["ex1"]["gradients"]["dW2"]
    assert dW2["passing"] == pytest.approx(1 / 6)
    # The commonest first, then by name; three at most; a blank line is counted in words of its own.
    assert [(m["what"], m["count"], m["hint"]) for m in dW2["mistakes"]] == [
        ("transposed", 2, TRANSPOSE), ("blank", 1, "left blank"), ("has the sign flipped", 1,
                                                                  "`dW2` has the right size but the opposite sign")]
    assert "ex2" not in {row["exercise"] for row in summary["hardest"]}  # nothing of ex2 ran through
    training = summary["exercises"]["ex4"]["gradients"]["training run"]
    assert training["passing"] == pytest.approx(1 / 4)
    assert [(m["hint"], m["count"]) for m in training["mistakes"]] == [
        ("does not track autograd's training", 2), ("time limit of 60 s exceeded", 1)]
    timeout = next(a for a in summary["needs_attention"] if a["student"] == "t2")
    assert (timeout["status"], timeout["why"]) == ("timeout", "time limit of 60 s exceeded")


def test_policy_reasons_name_the_gradients_and_each_kind(tmp_path):
    names = ["dh", "dW2", "db2", "dhpreact", "dbngain"]
    rows = tuple(TensorResult(n, n[1:], Status.FAIL, policy="autograd") for n in names) + (
        TensorResult("dC", "C", Status.FAIL, policy="shortcut"), TensorResult("dW1", "W1", Status.EXACT))
    record = _record(submission("p", "ex1", "x"), FileResult("p.py", "ex1", rows), VERSION)
    assert why(record, "policy") == "uses autograd for `dh`, `dW2`, `db2`, `dhpreact` and 1 more; uses shortcut for `dC`"
    four = _record(submission("q", "ex1", "y"), FileResult("q.py", "ex1", rows[:4]), VERSION)
    assert why(four, "policy") == "uses autograd for `dh`, `dW2`, `db2`, `dhpreact`"
    missing = _record(submission("r", "ex1", "z"), file_result("ex1", status=Status.MISSING), VERSION)
    assert untouched(missing) and not untouched(_record(submission("r", "ex1", "w"), file_result("ex1"), VERSION))
    assert why(missing, "partial") == "partial"


def test_two_late_exercises_and_two_stray_files_are_each_listed(tmp_path):
    out = tmp_path / "out"
    write_class(out, [("lou", "ex1", True, file_result("ex1")), ("lou", "ex4", True, file_result("ex4", training=TRACKS))])
    manifest = json.loads((out / CLASS_FILE).read_text())
    manifest["owners"] = {"lou/a.txt": "lou", "lou/b.md": "lou"}
    manifest["unrecognised"] = ["lou/a.txt", "lou/b.md"]
    (out / CLASS_FILE).write_text(json.dumps(manifest))
    write_outputs(out, log=quiet)
    assert book(out)["lou"]["late"] == "ex1 ex4"
    header = (out / "feedback" / "lou.txt").read_text().splitlines()[:4]
    assert header == ["lou: 34/35 · ex1 26/26 · ex2 not submitted · ex4 8/8",
                      "Not submitted: ex2 (ex2_cross_entropy.py or .ipynb)",
                      "Handed in late (by the file name): ex1, ex4",
                      "Not graded, as they answer no exercise: lou/a.txt, lou/b.md"]


def test_a_name_the_file_system_could_not_decode_still_has_a_shard():
    odd = "caf\udce9"  # the undecodable byte of a Latin-1 file name, as Python reads it
    assert [in_shard(odd, (i, 4)) for i in range(1, 5)].count(True) == 1
    assert safe_filename(odd, set()) == "caf"


def test_a_class_graded_as_one_shard_merges_alone(tmp_path):
    write_class(tmp_path / "only", shard=(1, 1))
    write_class(tmp_path / "whole")
    write_outputs(tmp_path / "whole", log=quiet)
    merge([tmp_path / "only"], tmp_path / "a" / "b" / "merged", log=quiet)  # its parents made too
    merged = tmp_path / "a" / "b" / "merged"
    assert (merged / "gradebook.csv").read_text() == (tmp_path / "whole" / "gradebook.csv").read_text()
    lines = (merged / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == sorted((json.loads(line) for line in lines), key=record_key)
    assert all(line == json.dumps(json.loads(line), sort_keys=True) for line in lines)
    assert (merged / CLASS_FILE).read_text() == json.dumps(json.loads((merged / CLASS_FILE).read_text()), indent=1)
    (tmp_path / "empty").mkdir()
    merge([tmp_path / "only"], tmp_path / "empty", log=quiet)  # an empty folder that exists is fine
    assert (tmp_path / "empty" / "gradebook.csv").exists()


def test_a_folder_swap_cut_short_puts_the_old_folder_back(tmp_path, monkeypatch):
    from grader import outputs

    folder = tmp_path / "feedback"
    outputs.replace_folder(folder, lambda new: (new / "a.txt").write_text("old"))
    real, calls = outputs.os.rename, []

    def second_fails(source, target):
        calls.append((source, target))
        if len(calls) == 2:  # the old folder is aside; the new one cannot take its place
            raise OSError("no space left")
        real(source, target)

    monkeypatch.setattr(outputs.os, "rename", second_fails)
    with pytest.raises(OSError, match="no space left"):
        outputs.replace_folder(folder, lambda new: (new / "b.txt").write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["feedback"] and [p.name for p in folder.iterdir()] == ["a.txt"]
    assert calls[-1] == (calls[0][1], folder)  # put back from where it was set aside


def _row(gradient, passing, graded=4, mistakes=("wrong values",)):
    return {"exercise": "ex1", "gradient": gradient, "graded": graded, "passing": passing,
            "mistakes": [{"what": m, "count": graded - passing, "hint": "h"} for m in mistakes]}


def test_the_printed_summary_lists_five_hard_gradients_and_cuts_lists_at_their_lengths():
    base = {"students": 3, "submissions": 3, "statuses": {"ok": 3}, "exercises": {}, "unrecognised": [],
            "needs_attention": []}
    rows = [_row("dall", 10, 10)] + [_row(f"d{i}", i, 10) for i in range(7)]  # one everyone passed, seven not
    text = summary_text({**base, "hardest": rows}).splitlines()
    assert text[1:] == ["", "hardest gradients:"] + [
        f"  ex1 d{i}{' ' * 14} {i}/10 pass   {10 - i} wrong values" for i in range(5)]
    few = summary_text({**base, "hardest": [_row("dx", 3, mistakes=())]}).splitlines()
    assert few[1:] == ["", "hardest gradients:", "  ex1 dx               3/4 pass"]
    twelve = [{"student": f"s{i:02d}", "exercise": "ex1", "status": "error", "why": "w"} for i in range(12)]
    six = [{"student": f"m{i}", "exercise": "ex2", "status": "missing", "why": "not submitted"} for i in range(6)]
    text = summary_text({**base, "hardest": [], "needs_attention": twelve + six,
                         "unrecognised": [f"f{i}" for i in range(10)]}).splitlines()
    assert text[1:] == (["", "needs attention (12 files):"] + [f"  s{i:02d}  ex1 error: w" for i in range(12)]
                        + ["  ex2 not submitted by 6: m0, m1, m2, m3, m4, m5", "",
                           "not recognised (10): " + ", ".join(f"f{i}" for i in range(10))])
    thirteen = summary_text({**base, "hardest": [], "needs_attention": twelve + twelve[:1]}).splitlines()
    assert thirteen[-1] == "  ... and 1 more in report.html" and thirteen[-2] == "  s11  ex1 error: w"
    only_missing = summary_text({**base, "hardest": [], "needs_attention": six[:1]}).splitlines()
    assert only_missing[1:] == ["", "needs attention:", "  ex2 not submitted by 1: m0"]
    seven = [{"student": f"m{i}", "exercise": "ex2", "status": "missing", "why": "not submitted"} for i in range(7)]
    assert summary_text({**base, "hardest": [], "needs_attention": seven}).splitlines()[-1] == (
        "  ex2 not submitted by 7: m0, m1, m2, m3, m4, m5 ...")


def test_training_reasons_are_cut_at_three_and_merge_prints_its_summary(tmp_path):
    errors = ["time limit of 60 s exceeded", "the run stopped early", "NameError: x", "NameError: y"]
    entries = [(f"t{i}", "ex4", False, file_result("ex4", training=TrainingComparison.skipped(e)))
               for i, e in enumerate(errors + errors[:1])]
    write_class(tmp_path / "out", entries)
    summary = write_outputs(tmp_path / "out", log=quiet)
    assert list(summary["exercises"]) == ["ex4"]  # ex1 and ex2, handed in by nobody, are skipped, not the end
    mistakes = summary["exercises"]["ex4"]["gradients"]["training run"]["mistakes"]
    assert [(m["hint"], m["count"]) for m in mistakes] == [(errors[0], 2), (errors[1], 1), (errors[2], 1)]
    write_class(tmp_path / "shard", entries, shard=(1, 1))
    said = []
    merge([tmp_path / "shard"], tmp_path / "merged", log=said.append)
    assert said and said[0].startswith("6 students, 5 graded submissions: 2 timeout · 4 missing")
    feedback = (tmp_path / "merged" / "feedback" / "t1.txt").read_text()
    record = load_results(tmp_path / "merged" / "results.jsonl")[1]
    assert record["student"] == "t1" and feedback.endswith("\n\n" + record["report"] + "\n")
    assert safe_filename("Xavier_", set()) == "Xavier" and safe_filename("_.Zoe", set()) == "Zoe"


def test_class_json_says_what_a_batch_found_and_one_fingerprint_for_every_shard():
    from grader.classbook import class_manifest

    subs = [SimpleNamespace(student=s, exercise=BY_ID[e], name=f"{s}_{e}.py", digest=d, late=late)
            for s, e, d, late in [("ann", "ex1", "a1", False), ("ben", "ex2", "b2", True), ("cy", "ex1", "c1", False)]]
    found = SimpleNamespace(submissions=subs, unrecognised=["ann/notes.txt", "stray.txt"], unassigned=["ben_ex3.py"],
                            owners={"ann/notes.txt": "ann", "ben_ex3.py": "ben"}, duplicates=["cy"], skipped=["big.py"])
    whole = class_manifest(found, "v1", ["ex1", "ex2"])
    assert well_formed(whole) and json.loads(json.dumps(whole)) == whole
    assert whole == {
        "grader_version": "v1", "assigned": ["ex1", "ex2"], "shard": None, "fingerprint": whole["fingerprint"],
        "submissions": [{"student": "ann", "exercise": "ex1", "file": "ann_ex1.py", "sha256": "a1", "late": False},
                        {"student": "ben", "exercise": "ex2", "file": "ben_ex2.py", "sha256": "b2", "late": True},
                        {"student": "cy", "exercise": "ex1", "file": "cy_ex1.py", "sha256": "c1", "late": False}],
        "unrecognised": ["ann/notes.txt", "stray.txt"], "unassigned": ["ben_ex3.py"],
        "owners": {"ann/notes.txt": "ann", "ben_ex3.py": "ben"}, "duplicates": ["cy"], "skipped": ["big.py"]}
    import hashlib

    assert whole["fingerprint"] == hashlib.sha256("\n".join(
        ["ann\0ex1\0a1", "ben\0ex2\0b2", "cy\0ex1\0c1", "ann/notes.txt", "stray.txt"]).encode()).hexdigest()
    parts = [class_manifest(found, "v1", ["ex1", "ex2"], (i, 2)) for i in (1, 2)]
    assert all(p["fingerprint"] == whole["fingerprint"] and p["shard"] == [i, 2] for i, p in zip((1, 2), parts))
    for key in ("submissions", "unrecognised", "unassigned", "duplicates", "skipped"):
        assert sorted(map(json.dumps, parts[0][key] + parts[1][key])) == sorted(map(json.dumps, whole[key])), key
    # Each student's files, and files owned by nobody by their own name, fall in the student's shard.
    ann = next(i for i in (1, 2) if in_shard("ann", (i, 2)))
    assert "ann/notes.txt" in parts[ann - 1]["unrecognised"] and parts[ann - 1]["owners"].get("ann/notes.txt") == "ann"
    stray = next(i for i in (1, 2) if in_shard("stray.txt", (i, 2)))
    assert "stray.txt" in parts[stray - 1]["unrecognised"]
    assert merged_manifest(parts)["fingerprint"] == whole["fingerprint"]
    changed = SimpleNamespace(**{**found.__dict__, "unrecognised": ["ann/notes.txt"]})
    assert class_manifest(changed, "v1", ["ex1"])["fingerprint"] != whole["fingerprint"]
