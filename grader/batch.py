"""Batch grading: a class of untrusted submissions, graded in parallel, safely, nothing lost.

    discover  -> which file is which student's answer to which exercise
    grade     -> warm workers (sandboxed when bubblewrap is there) run the student code;
                 this process compares, and appends each result to OUT/results.jsonl at once
    outputs   -> gradebook.csv, feedback/<student>.txt|.json, summary.json

A run that is killed and started again grades only what `results.jsonl` does not
hold yet (same student, exercise, file content and grader version) and writes the
same outputs as an uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from grader.compare import FileResult, Settings
from grader.exercises import BY_ID, EXERCISES, Exercise
from grader.execution import DEFAULT_TIMEOUT, SubmissionError, use_executor
from grader.grading import Loaded

SUFFIXES = (".py", ".ipynb")
# LMS downloads: `smith_12345_67890_ex1_backprop_all.py` (Canvas adds `_LATE` after the name).
LMS_PATTERN = r"^(?P<student>[^_]+?)(?:_LATE)?_\d+(?:_\d+)?_(?P<file>.+)$"
# Otherwise `alice_ex1_backprop_all.py` or `alice-ex1.py`: the student is what precedes the exercise.
NAME_PATTERN = r"^(?P<student>.+?)[_\-. ](?P<file>ex\d.*)$"
THREADS_PER_WORKER = 2
MAX_ZIP_BYTES = 2 << 30
MAX_ZIP_FILES = 100_000


class BatchError(Exception):
    """The batch cannot start: one sentence."""


def grader_version() -> str:
    """The package version and a digest of the grader's own code: a result is reused only if both match."""
    try:
        from importlib.metadata import version

        base = version("backprop-ninja")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        base = "0"
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return f"{base}+{digest.hexdigest()[:10]}"


@dataclass
class Submission:
    student: str
    path: Path
    name: str  # the path shown in reports, relative to the submissions
    exercise: Exercise | None = None
    digest: str = ""
    loaded: Loaded | None = None  # what `load_submission` read, when the file could be read
    problem: str | None = None  # why the file cannot be graded (then it scores 0 with this error)

    @property
    def key(self) -> tuple[str, str]:
        return (self.student, self.exercise.id if self.exercise else "")


@dataclass
class Discovery:
    submissions: list[Submission] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def student_from_name(stem: str, pattern: str | None) -> str:
    """The student a loose file belongs to, from its name."""
    for regex in ([pattern] if pattern else [LMS_PATTERN, NAME_PATTERN]):
        match = re.match(regex, stem)
        if match and match.groupdict().get("student"):
            return match.group("student")
    return stem


def _load(path: Path, name: str) -> tuple[Loaded | None, Exercise | None, str | None, str]:
    """(loaded, exercise, problem, digest) of one file. A file that cannot be read but is
    named after an exercise is that exercise's `error`; one that is neither is unrecognised."""
    from grader.exercises import recognise
    from grader.grading import load_submission

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        loaded = load_submission(path=path)
        return loaded, loaded.exercise, None, digest
    except SubmissionError as exc:
        return None, recognise(path.name, set()), str(exc).replace(str(path), name), digest


def discover(root: Path, *, student_pattern: str | None = None, only: str | None = None) -> Discovery:
    """Find every submission under a folder (a folder per student, or loose files, or both)."""
    found = Discovery()
    files: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "__MACOSX")):
            continue
        if entry.is_dir():
            for path in sorted(entry.rglob("*")):
                if path.is_file() and not any(part.startswith((".", "__")) for part in path.relative_to(root).parts):
                    files.append((entry.name, path))
        elif entry.is_file():
            files.append((student_from_name(entry.stem, student_pattern), entry))
    seen: dict[tuple[str, str], Submission] = {}
    for student, path in files:
        name = str(path.relative_to(root))
        if path.suffix not in SUFFIXES:
            found.unrecognised.append(name)
            continue
        loaded, exercise, problem, digest = _load(path, name)
        if exercise is None:
            found.unrecognised.append(name)
            continue
        if only and exercise.id != only:
            continue
        submission = Submission(student, path, name, exercise, digest, loaded, problem)
        if submission.key in seen:
            found.duplicates.append(f"{name} (kept {seen[submission.key].name})")
            continue
        seen[submission.key] = submission
        found.submissions.append(submission)
    return found


def extract_zip(archive: Path, into: Path) -> Path:
    """Unpack a zip of submissions safely (no path outside `into`, no links, bounded size)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_FILES or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise BatchError(f"{archive} is too large to unpack (over {MAX_ZIP_FILES} files or 2 GB)")
            for member in members:
                target = (into / member.filename).resolve()
                is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
                if member.is_dir() or is_link or not str(target).startswith(str(into.resolve()) + os.sep):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile:
        raise BatchError(f"{archive} is not a zip file") from None
    entries = [e for e in into.iterdir() if not e.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():  # a zip of one folder: the folder is the batch
        return entries[0]
    return into


# --- results ---


def load_results(path: Path) -> list[dict]:
    """Every complete line of results.jsonl (a line cut short by a kill is ignored)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"student", "exercise", "sha256", "grader_version", "result"} <= set(record):
            records.append(record)
    return records


class ResultLog:
    """Appends one JSON line per graded submission, flushed to disk before the next one."""

    def __init__(self, path: Path):
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                cut_short = handle.read(1) != b"\n"
        else:
            cut_short = False
        self.handle = open(path, "a", encoding="utf-8")
        if cut_short:  # the last run was killed mid-line: start on a fresh line
            self.handle.write("\n")

    def append(self, record: dict) -> None:
        with self.lock:
            self.handle.write(json.dumps(record, sort_keys=True) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _record(submission: Submission, result: FileResult, version: str) -> dict:
    from grader.reports import text_report

    return {
        "student": submission.student,
        "exercise": submission.exercise.id,
        "file": submission.name,
        "sha256": submission.digest,
        "grader_version": version,
        "score": result.score,
        "max_score": result.max_score,
        "passed": result.passed,
        "result": result.to_dict(),
        "report": text_report(result),
    }


def grade_submission(submission: Submission, *, timeout: float, settings: Settings) -> FileResult:
    """One submission's result; a file that cannot be read becomes an `error` result, never an exception."""
    from grader.grading import _file_error, first_reference, grade_loaded

    exercise = submission.exercise
    if submission.problem:
        return _file_error(exercise, first_reference(exercise), submission.name, submission.problem)
    return grade_loaded(submission.loaded, filename=submission.name, timeout=timeout, settings=settings)


# --- running ---


class Progress:
    """A progress line: count, rate and ETA, redrawn on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.printed = -1

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        line = f"graded {self.done}/{self.total} · {rate:.1f}/s · ETA {eta:.0f}s · {label}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:120])
            if self.done == self.total:
                self.stream.write("\n")
        elif self.done * 10 // max(self.total, 1) > self.printed or self.done == self.total:
            self.printed = self.done * 10 // max(self.total, 1)
            self.stream.write(line + "\n")
        self.stream.flush()


def run_batch(*, submissions: Path, out: Path, jobs: int | None = None, timeout: float = DEFAULT_TIMEOUT,
              exercise: str | None = None, sandbox: str = "auto", student_pattern: str | None = None,
              settings: Settings = Settings(), log=print, warn=None, progress_stream=sys.stderr) -> dict:
    """Grade a class and write the outputs; returns the summary. Raises `BatchError` on bad input."""
    from grader.sandbox import Worker, bwrap_path

    if exercise is not None and exercise not in BY_ID:
        raise BatchError(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
    if student_pattern is not None:
        try:
            if "student" not in re.compile(student_pattern).groupindex:
                raise BatchError("--student-pattern needs a named group (?P<student>...)")
        except re.error as exc:
            raise BatchError(f"--student-pattern is not a valid regular expression: {exc}") from None
    if not submissions.exists():
        raise BatchError(f"{submissions} does not exist")
    bwrap = None
    if sandbox in ("auto", "bwrap"):
        bwrap = bwrap_path()
        if bwrap is None and sandbox == "bwrap":
            raise BatchError("--sandbox bwrap: bubblewrap is not installed or cannot make a sandbox here")
    if bwrap is None:
        (warn or log)("warning: no sandbox (bubblewrap is not in use): student code runs as you, can read and write "
            "your files and reach the network; only the time and resource limits apply. Install bubblewrap "
            "for the sandbox.")

    if submissions.is_file() and not zipfile.is_zipfile(submissions):
        raise BatchError(f"{submissions} is not a zip file")
    if not submissions.is_dir() and not submissions.is_file():
        raise BatchError(f"{submissions} is neither a folder nor a zip file")
    # Workers import torch while this process finds the submissions.
    workers = [Worker(bwrap) for _ in range(jobs or os.cpu_count() or 1)]
    try:
        return _run(submissions, out, workers, timeout, exercise, student_pattern, settings, log, progress_stream)
    finally:
        for worker in workers:
            worker.close()


def _run(submissions, out, workers, timeout, exercise, student_pattern, settings, log, progress_stream) -> dict:
    with tempfile.TemporaryDirectory(prefix="grade-batch-") as scratch:
        root = submissions
        if submissions.is_file():
            root = extract_zip(submissions, Path(scratch))
        found = discover(root, student_pattern=student_pattern, only=exercise)

    version = grader_version()
    results_path = out / "results.jsonl"
    done = {(r["student"], r["exercise"], r["sha256"], r["grader_version"]) for r in load_results(results_path)}
    pending = [s for s in found.submissions if (s.student, s.exercise.id, s.digest, version) not in done]
    log(f"{len(found.submissions)} submissions from {len({s.student for s in found.submissions})} students; "
        f"{len(found.submissions) - len(pending)} already graded, {len(pending)} to grade"
        + (f"; {len(found.unrecognised)} files not recognised" if found.unrecognised else ""))

    if pending:
        _grade_all(pending, results_path, version, workers[: len(pending)], timeout, settings, progress_stream)
    return write_outputs(found, out, version, log=log)


def _grade_all(pending, results_path, version, workers, timeout, settings, progress_stream) -> None:
    import torch

    torch.set_num_threads(1)
    work: queue.Queue = queue.Queue()
    for submission in pending:
        work.put(submission)
    results = ResultLog(results_path)
    progress = Progress(len(pending), progress_stream)
    failures: list[BaseException] = []

    def loop(worker):
        use_executor(worker)
        while True:
            try:
                submission = work.get_nowait()
            except queue.Empty:
                return
            try:
                result = grade_submission(submission, timeout=timeout, settings=settings)
            except Exception as exc:  # noqa: BLE001 - a bug must not lose the rest of the class
                failures.append(exc)
                continue
            results.append(_record(submission, result, version))
            with results.lock:
                progress.step(f"{submission.student} {submission.exercise.id}")

    # Two grading threads per worker: while one waits on a slow student process, the other keeps
    # its core busy (the worker only forks; the student processes run side by side).
    threads = [threading.Thread(target=loop, args=(w,), daemon=True)
               for w in workers for _ in range(THREADS_PER_WORKER)][: len(pending)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        results.close()
    if failures:
        raise failures[0]


# --- outputs ---

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _score(value: float) -> str:
    return f"{value:g}"


def safe_filename(student: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", student).strip("._") or "student"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def hint_kind(result: dict) -> str | None:
    """A short label for what went wrong, to count across a class."""
    status, hint = result["status"], result.get("hint") or ""
    if status in ("exact", "approx"):
        return None
    if status in ("blank", "missing", "error"):
        return status
    if result.get("policy"):
        return f"used {result['policy']}"
    match = re.search(r"but not the one through `(\w+)`", hint)
    if match:
        return f"misses the branch through `{match.group(1)}`"
    for needle, label in [
        ("hard-coded", "hard-codes a size"), ("zero in truth", "right only because the true gradient is zero"),
        ("transpose", "transposed"), ("size-1 axis is missing", "forgets keepdim=True"),
        ("broadcast to", "forgets to sum over a broadcast dimension"), ("opposite sign", "has the sign flipped"),
        ("Bessel", "forgets Bessel's correction"), ("times the right gradient", "is off by a constant factor"),
        ("all zeros", "is all zeros (an overwritten accumulation?)"), ("not a tensor", "is not a tensor"),
        ("dtype", "has the wrong dtype"), ("NaN", "has NaN or infinite values"),
        ("right except in", "is wrong in a few entries"), ("upstream gradients only", "has a wrong formula"),
    ]:
        if needle in hint:
            return label
    return "wrong values"


def write_outputs(found: Discovery, out: Path, version: str, *, log=print) -> dict:
    """The gradebook, per-student feedback and the class summary, from results.jsonl."""
    records = {}
    for record in load_results(out / "results.jsonl"):  # the last line for a key wins
        records[(record["student"], record["exercise"], record["sha256"], record["grader_version"])] = record
    current = [records.get((s.student, s.exercise.id, s.digest, version)) for s in found.submissions]
    graded = [r for r in current if r is not None]
    students = sorted({s.student for s in found.submissions})
    exercises = [e.id for e in EXERCISES if any(r["exercise"] == e.id for r in graded)]
    by_student: dict[str, dict[str, dict]] = {s: {} for s in students}
    for record in graded:
        by_student[record["student"]][record["exercise"]] = record

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "total", "max_total", *exercises])
    for student in students:
        rows = by_student[student]
        total = sum(r["score"] for r in rows.values())
        max_total = sum(BY_ID[e].max_score for e in exercises)
        writer.writerow([safe_cell(student), _score(total), _score(max_total),
                         *[_score(rows[e]["score"]) if e in rows else "" for e in exercises]])
    (out / "gradebook.csv").write_text(buffer.getvalue(), encoding="utf-8")

    feedback = out / "feedback"
    if feedback.exists():
        shutil.rmtree(feedback)
    feedback.mkdir()
    taken: set[str] = set()
    for student in students:
        rows = [by_student[student][e] for e in BY_ID if e in by_student[student]]
        name = safe_filename(student, taken)
        (feedback / f"{name}.txt").write_text("\n\n".join(r["report"] for r in rows) + "\n", encoding="utf-8")
        (feedback / f"{name}.json").write_text(json.dumps([r["result"] for r in rows], indent=2), encoding="utf-8")

    summary = {"grader_version": version, "students": len(students), "submissions": len(graded),
               "unrecognised": found.unrecognised, "duplicates": found.duplicates, "exercises": {}}
    for exercise_id in exercises:
        rows = [r for r in graded if r["exercise"] == exercise_id]
        gradients = {}
        for target in BY_ID[exercise_id].targets:
            results = [next(x for x in r["result"]["results"] if x["name"] == target) for r in rows]
            kinds = Counter(k for k in (hint_kind(x) for x in results) if k)
            gradients[target] = {
                "passing": sum(x["status"] in ("exact", "approx") for x in results) / len(results),
                "mistakes": [{"what": k, "share": c / len(results)} for k, c in kinds.most_common(3)],
            }
        summary["exercises"][exercise_id] = {
            "submissions": len(rows),
            "complete": sum(r["passed"] for r in rows),
            "mean_score": sum(r["score"] for r in rows) / len(rows),
            "max_score": BY_ID[exercise_id].max_score,
            "gradients": gradients,
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log(summary_text(summary))
    return summary


def summary_text(summary: dict) -> str:
    """The class summary an instructor reads to plan the next lecture."""
    lines = [f"{summary['students']} students, {summary['submissions']} graded submissions"]
    for exercise_id, data in summary["exercises"].items():
        lines.append(f"\n{exercise_id}: {data['complete']}/{data['submissions']} complete, "
                     f"mean score {data['mean_score']:.1f}/{data['max_score']:g}")
        for target, info in data["gradients"].items():
            mistakes = " · ".join(f"{m['share']:.0%} {m['what']}" for m in info["mistakes"][:2])
            lines.append(f"  {target:16} {info['passing']:5.0%} pass" + (f"   {mistakes}" if mistakes else ""))
    if summary["unrecognised"]:
        lines.append(f"\nnot recognised ({len(summary['unrecognised'])}): " + ", ".join(summary["unrecognised"][:10])
                     + (" ..." if len(summary["unrecognised"]) > 10 else ""))
    if summary["duplicates"]:
        lines.append("duplicates ignored: " + ", ".join(summary["duplicates"][:10]))
    return "\n".join(lines)
