"""Batch grading: a class of untrusted submissions, graded in parallel, safely, nothing lost.

    discover  -> which file is which student's answer to which exercise
    grade     -> warm workers (sandboxed when bubblewrap is there) run the student code;
                 this process compares, and appends each result to OUT/results.jsonl at once
    outputs   -> gradebook.csv, feedback/<student>.txt|.json|.html, summary.json, report.html
                 (`grader.classbook`, from OUT/class.json and OUT/results.jsonl)

A run that is killed and started again grades only what `results.jsonl` does not
hold yet (same student, exercise, file content, grader version and settings) and writes the
same outputs as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import queue
import re
import stat
import sys
import tempfile
import threading
import unicodedata
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.classbook import CLASS_FILE, MAX_SHARDS, class_manifest, in_shard, valid_shard, write_outputs
from grader.compare import FileResult, Settings
from grader.exercises import EXERCISES, Exercise, assigned_exercises
from grader.execution import DEFAULT_TIMEOUT, SubmissionError, incidents, use_executor
from grader.grading import Loaded
from grader.lms import Named, in_folder, read_folder, read_name
from grader.outputs import load_results, record_key, write_atomically
from grader.reports import printable

SUFFIXES = (".py", ".ipynb")
THREADS_PER_WORKER = 2
MAX_ZIP_BYTES = 2 << 30
MAX_ZIP_FILES = 100_000
# A submission is a few kB; a larger file is never read whole, nor parsed.
MAX_SUBMISSION_BYTES = 1 << 20


class BatchError(Exception):
    """The batch cannot start: one sentence."""


def settings_digest(settings: Settings, timeout: float) -> str:
    """A short digest of what an instructor chose (a settings file, --timeout) that can change a verdict."""
    return hashlib.sha256(repr((settings, float(timeout))).encode()).hexdigest()[:10]


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
    loaded: Loaded | None = None  # what `load_submissions` read for this exercise, when the file could be read
    problem: str | None = None  # why the file cannot be graded (then it scores 0 with this error)
    late: bool = False  # its name says it was handed in late
    attempt: tuple[str, int] = ("", 0)  # which attempt its name says it is (`grader.lms`)

    @property
    def key(self) -> tuple[str, str]:
        return (self.student, self.exercise.id if self.exercise else "")


@dataclass
class Discovery:
    submissions: list[Submission] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # `name (why)`: links, paths out of the folder, oversized files
    unassigned: list[str] = field(default_factory=list)  # files for an exercise the assignment does not ask for
    owners: dict[str, str] = field(default_factory=dict)  # an ungraded file's student, when known


def student_from_name(stem: str, pattern: str | None) -> str:
    """The student a loose file belongs to, from its name (`grader.lms`); else the name itself."""
    return read_name(stem, pattern).student or stem


def shown(name: str) -> str:
    """A file name as text that can be written anywhere: bytes that are not UTF-8 (which Python keeps
    as lone surrogates, unwritable as UTF-8) become `\\xff` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _read(path: Path) -> bytes | None:
    """A submission's bytes, opened without following a link; None, unread, when it is over
    MAX_SUBMISSION_BYTES. Raises OSError (ELOOP for a link) for anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not hang us
    with open(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > MAX_SUBMISSION_BYTES:
            return None
        data = handle.read(MAX_SUBMISSION_BYTES + 1)  # it may have grown since fstat
    return data if len(data) <= MAX_SUBMISSION_BYTES else None


def _load(data: bytes, filename: str, name: str) -> tuple[list[Loaded], Exercise | None, str | None]:
    """(loaded, exercise, problem) of one file's bytes: one `Loaded` per exercise it answers (a
    lecture notebook may answer all four). A file that cannot be read or parsed but is named after
    an exercise is that exercise's `error`; one that is neither is unrecognised.

    `load_submissions` gets the bytes already read (and hashed), so what is graded is what was
    checked, whatever happens to the original meanwhile; `name` names the file in what it says."""
    from grader.exercises import recognise
    from grader.grading import load_submissions

    try:
        loaded = load_submissions(path=name, data=data)
        return loaded, loaded[0].exercise, None
    except SubmissionError as exc:
        problem = str(exc)
    except (RecursionError, MemoryError):  # what the parser raises for `1+1+...+1` or `---...-1`
        problem = f"{name} is too deeply nested to parse"
    except ValueError as exc:
        problem = f"{name} cannot be parsed ({type(exc).__name__})"
    return [], recognise(filename, set()), problem


def _hidden(name: str) -> bool:
    return name.startswith((".", "__"))


def _files(root: Path, found: Discovery, student_pattern: str | None,
           skip: Path | None = None) -> list[tuple[Named, Path]]:
    """(what the name says, path) of every file under `root`, in order. Links are never followed, at
    any depth: a submission is whatever the student's files hold, not whatever they point at. `skip`
    (the batch's own --out folder, when it is inside the submissions) is left out."""

    def kind(path: Path) -> str | None:
        """A path's kind, "dir" or "file"; anything else is listed as skipped, and is None."""
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            why = f"cannot be read: {exc.strerror}"
        else:
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                return "dir" if stat.S_ISDIR(mode) else "file"
            why = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        found.skipped.append(f"{shown(str(path.relative_to(root)))} ({why})")
        return None

    def outputs(path: Path) -> bool:
        """A batch's --out folder (this run's, or another's: a shard's beside it) is not a student."""
        if (skip is not None and _same(path, skip)) or ((path / "class.json").is_file() and (
                (path / "results.jsonl").is_file() or (path / "gradebook.csv").is_file())):
            found.skipped.append(f"{shown(str(path.relative_to(root)))} (the outputs of a grade batch)")
            return True
        return False

    files = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "__MACOSX")):
            continue
        what = kind(entry)
        if what == "file":
            files.append((read_name(shown(entry.stem), student_pattern), entry))
        elif what == "dir" and not _hidden(entry.name) and not outputs(entry):
            inside = []
            for folder, dirnames, filenames in os.walk(entry, followlinks=False):
                here = Path(folder)
                dirnames[:] = [d for d in dirnames if not _hidden(d) and kind(here / d) == "dir"
                               and not outputs(here / d)]
                inside += [here / f for f in filenames if not _hidden(f) and kind(here / f) == "file"]
            owner = read_folder(shown(entry.name))
            files += [(in_folder(owner, shown(path.stem)), path) for path in sorted(inside)]
    return files


def _same(path: Path, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def discover(root: Path, *, student_pattern: str | None = None, only: tuple[str, ...] | None = None,
             skip: Path | None = None) -> Discovery:
    """Find every submission under a folder (a folder per student, or loose files, or both). Of two
    files for one student's exercise, the later attempt is graded (`grader.lms`)."""
    from grader.exercises import recognise

    found = Discovery()
    seen: dict[tuple[str, str], Submission] = {}
    for named, path in _files(root, found, student_pattern, skip):
        name = shown(str(path.relative_to(root)))
        student = unicodedata.normalize("NFC", named.student or shown(path.stem))  # one student however typed
        if path.suffix not in SUFFIXES:
            found.unrecognised.append(name)
            if named.student:
                found.owners[name] = student
            continue
        try:
            data = _read(path)
        except OSError as exc:  # replaced by a link or a FIFO since it was listed, or unreadable
            why = "a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
            found.skipped.append(f"{name} ({why})")
            continue
        own_name = (named.file or path.stem) + path.suffix  # `Carol Lee - ex1.py` answers ex1 by its name
        if data is None:
            loads, exercise, problem = [], recognise(own_name, set()), f"{name} is larger than 1 MB"
            digest = hashlib.sha256(b"larger than MAX_SUBMISSION_BYTES").hexdigest()  # never read, so not hashed
            if exercise is None:
                found.skipped.append(f"{name} (larger than 1 MB)")
                continue
        else:
            loads, exercise, problem = _load(data, own_name, name)
            digest = hashlib.sha256(data).hexdigest()
            if problem is None and not any(loaded.source.strip() for loaded in loads):
                loads, problem = [], f"{name} is empty: there is nothing to grade"
        if exercise is None:
            found.unrecognised.append(name)
            if named.student:
                found.owners[name] = student
            continue
        for loaded in loads or [None]:
            answered = loaded.exercise if loaded is not None else exercise
            if only and answered.id not in only:  # not in the assignment: listed, and its student counted
                if name not in found.unassigned:
                    found.unassigned.append(name)
                found.owners[name] = student
                continue
            submission = Submission(student, path, name, answered, digest, loaded, problem, named.late, named.attempt)
            kept = seen.get(submission.key)
            if kept is None:
                seen[submission.key] = submission
            elif submission.attempt > kept.attempt:  # a later attempt replaces the one kept so far
                found.duplicates.append(f"{kept.name} (an earlier attempt than {name})")
                seen[submission.key] = submission
            else:
                found.duplicates.append(f"{name} (kept {kept.name})")
    found.submissions = list(seen.values())
    return found


def unsafe_member(member: zipfile.ZipInfo) -> str | None:
    """Why a zip member must not be unpacked (None when it may): a name that is absolute or climbs
    out with `..` lands outside its folder, maybe on another student's file; a link points anywhere."""
    name = member.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "a path through .."
    if stat.S_ISLNK(member.external_attr >> 16):
        return "a symbolic link"
    return None


def _unpack(zf: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> str | None:
    """Write one member, cut one byte past MAX_SUBMISSION_BYTES (enough to be seen as too large,
    never read whole); why it could not be written, or None."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(target, "xb") as dst:  # "x": never over a file, nor through a link
            dst.write(src.read(MAX_SUBMISSION_BYTES + 1))
    except FileExistsError:
        return "a second copy of a name already unpacked"
    except OSError as exc:
        return f"cannot be unpacked: {exc.strerror}"
    return None


def extract_zip(archive: Path, into: Path) -> tuple[Path, list[str]]:
    """Unpack a zip of submissions safely (nothing outside `into`, no links, bounded size): the
    folder to grade, and the members skipped, each `name (why)`."""
    skipped = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_FILES or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise BatchError(f"{archive} is too large to unpack (over {MAX_ZIP_FILES} files or 2 GB)")
            for member in members:
                why = unsafe_member(member)
                if why is None and not member.is_dir():
                    why = _unpack(zf, member, into / member.filename)
                if why:
                    skipped.append(f"{member.filename} ({why})")
    except zipfile.BadZipFile:
        raise BatchError(f"{archive} is not a zip file") from None
    entries = [e for e in into.iterdir() if not e.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():  # a zip of one folder: the folder is the batch
        return entries[0], skipped
    return into, skipped


# --- results ---


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
        """Write a record; after `close` it is dropped: a run that was stopped must not record the
        errors its own shutdown causes (a worker killed under a submission) as that student's result."""
        with self.lock:
            if self.handle.closed:
                return
            self.handle.write(json.dumps(record, sort_keys=True) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        with self.lock:
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


def _error_result(submission: Submission, message: str) -> FileResult:
    from grader.grading import _file_error, first_reference

    return _file_error(submission.exercise, first_reference(submission.exercise), submission.name, message)


def grade_submission(submission: Submission, *, timeout: float, settings: Settings) -> FileResult:
    """One submission's result; a file that cannot be read becomes an `error` result, never an exception."""
    from grader.grading import grade_loaded

    if submission.problem:
        return _error_result(submission, submission.problem)
    try:
        return grade_loaded(submission.loaded, filename=submission.name, timeout=timeout, settings=settings)
    except (RecursionError, MemoryError):  # the grader parses the source again, and may meet the same bomb
        return _error_result(submission, f"{submission.name} is too deeply nested to parse")


# --- running ---


class Progress:
    """A progress line: count, rate and ETA, redrawn on a terminal, plain lines otherwise.

    Writing it never raises: when the stream fails (a closed pipe), the error is kept in `failed`
    and the run decides what to do; a grading thread must not die of it."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.printed = -1
        self.failed: OSError | None = None

    def step(self, label: str) -> None:
        self.done += 1
        if self.failed:
            return
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        line = f"graded {self.done}/{self.total} · {rate:.1f}/s · ETA {eta:.0f}s · {printable(label)}"
        try:
            if self.tty:
                self.stream.write("\r\033[K" + line[:120])
                if self.done == self.total:
                    self.stream.write("\n")
            elif self.done * 10 // max(self.total, 1) > self.printed or self.done == self.total:
                self.printed = self.done * 10 // max(self.total, 1)
                self.stream.write(line + "\n")
            self.stream.flush()
        except OSError as exc:
            self.failed = exc


def run_batch(*, submissions: Path, out: Path, jobs: int | None = None, timeout: float = DEFAULT_TIMEOUT,
              exercises: tuple[str, ...] | None = None, sandbox: str = "auto", student_pattern: str | None = None,
              settings: Settings = Settings(), shard: tuple[int, int] | None = None, log=print, warn=None,
              progress_stream=sys.stderr) -> dict:
    """Grade a class and write the outputs; returns the summary. Raises `BatchError` on bad input.

    `exercises` is the assignment (default: every exercise someone handed in): only those are graded,
    and a student who did not hand one in is `missing` it. With `shard` (I, N), only the students of
    shard I of N are graded (`classbook.in_shard`); `grade merge` joins the N outputs."""
    from grader.sandbox import Worker, bwrap_path

    if exercises:
        try:
            exercises = assigned_exercises(exercises)
        except ValueError as exc:
            raise BatchError(str(exc)) from None
    if shard is not None and not valid_shard(*shard):
        raise BatchError(f"--shard {shard[0]}/{shard[1]}: I must be between 1 and N, and N at most {MAX_SHARDS}")
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

    if out.exists() and not out.is_dir():
        raise BatchError(f"--out {out} is a file: give a folder for the outputs")
    if submissions.is_file() and not zipfile.is_zipfile(submissions):
        raise BatchError(f"{submissions} is not a zip file")
    if not submissions.is_dir() and not submissions.is_file():
        raise BatchError(f"{submissions} is neither a folder nor a zip file")
    # Workers import torch while this process finds the submissions.
    workers = [Worker(bwrap, many=True) for _ in range(jobs or os.cpu_count() or 1)]
    try:
        return _run(submissions, out, workers, timeout, exercises, student_pattern, settings, shard, log,
                    progress_stream)
    finally:
        for worker in workers:
            worker.close()


def _run(submissions, out, workers, timeout, exercises, student_pattern, settings, shard, log, progress_stream) -> dict:
    with tempfile.TemporaryDirectory(prefix="grade-batch-") as scratch:
        root, unpacked_skipped = submissions, []
        if submissions.is_file():
            root, unpacked_skipped = extract_zip(submissions, Path(scratch))
        found = discover(root, student_pattern=student_pattern, only=exercises, skip=out if out.exists() else None)
        found.skipped[:0] = unpacked_skipped
    if not found.submissions and not found.unassigned:
        listed = len(found.unrecognised) + len(found.skipped)
        raise BatchError(f"there is no submission in {submissions}" + (
            f" ({listed} files, none of them an exercise's .py or .ipynb)" if listed else "")
            + ": is it the folder of the students' files?")
    # What discovery read lives until the end: no collection need scan it again (each would, with
    # every submission's syntax tree).
    gc.freeze()

    # Results are reused only when graded by this grader with these settings and time limit.
    version = f"{grader_version()} settings {settings_digest(settings, timeout)}"
    assigned = list(exercises) if exercises else [e.id for e in EXERCISES
                                                  if any(s.exercise is e for s in found.submissions)]
    manifest = class_manifest(found, version, assigned, shard)
    mine = [s for s in found.submissions if in_shard(s.student, shard)]
    results_path = out / "results.jsonl"
    done = {record_key(r) for r in load_results(results_path)}
    pending = [s for s in mine if (s.student, s.exercise.id, s.digest, version) not in done]
    log((f"shard {shard[0]}/{shard[1]}: " if shard else "")
        + f"{len(mine)} submissions from {len({s.student for s in mine})} students; "
        f"{len(mine) - len(pending)} already graded, {len(pending)} to grade"
        + (f"; {len(manifest['unrecognised'])} files not recognised" if manifest["unrecognised"] else "")
        + (f"; {len(manifest['skipped'])} not read" if manifest["skipped"] else ""))

    try:
        before = json.loads((out / CLASS_FILE).read_text(encoding="utf-8"))["assigned"]
    except (OSError, ValueError, KeyError, TypeError):
        before = None
    if before is not None and before != assigned:
        log(f"note: the last run into {out} was for {', '.join(map(str, before)) or 'no exercise'}; this one is for "
            f"{', '.join(assigned)}, and its outputs replace that run's")
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / CLASS_FILE, json.dumps(manifest, indent=1))
    if pending:
        _grade_all(pending, results_path, version, workers[: len(pending)], timeout, settings, progress_stream)
    return write_outputs(out, log=log)


def _grade_safely(submission: Submission, timeout: float, settings: Settings) -> FileResult:
    try:
        return grade_submission(submission, timeout=timeout, settings=settings)
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the rest of the class
        return _error_result(submission, f"the grader failed on this submission: {type(exc).__name__}")


class Solo:
    """Grading side by side, except for a submission graded again alone: `alone()` waits until
    nothing else runs, and holds every other grading back until it is done."""

    def __init__(self):
        self.condition = threading.Condition()
        self.running, self.waiting, self.solo = 0, 0, False

    @contextlib.contextmanager
    def shared(self):
        with self.condition:
            self.condition.wait_for(lambda: not self.solo and not self.waiting)
            self.running += 1
        try:
            yield
        finally:
            with self.condition:
                self.running -= 1
                self.condition.notify_all()

    @contextlib.contextmanager
    def alone(self):
        with self.condition:
            self.waiting += 1
            self.condition.wait_for(lambda: not self.solo and not self.running)
            self.waiting -= 1
            self.solo = True
        try:
            yield
        finally:
            with self.condition:
                self.solo = False
                self.condition.notify_all()


def _grade_all(pending, results_path, version, workers, timeout, settings, progress_stream) -> None:
    """Grade `pending`, appending each result to results.jsonl as it comes.

    An exception while grading one submission is that submission's `error` result. Anything that
    stops the run (Ctrl-C, SIGTERM as KeyboardInterrupt, a closed output pipe, a full disk) is
    raised here, after the results so far are on disk and before any output is written: a
    gradebook written then would show zeros for every student not graded yet."""
    import torch

    torch.set_num_threads(1)
    work: queue.Queue = queue.Queue()
    for submission in pending:
        work.put(submission)
    results = ResultLog(results_path)
    progress = Progress(len(pending), progress_stream)
    stop = threading.Event()
    failures: list[BaseException] = []
    solo = Solo()

    def loop(worker):
        try:
            torch.set_num_threads(1)  # again in each thread: the math library counts threads per thread
            use_executor(worker)
            while not stop.is_set():
                try:
                    submission = work.get_nowait()
                except queue.Empty:
                    return
                incidents()
                with solo.shared():
                    result = _grade_safely(submission, timeout, settings)
                retried = bool(incidents()) and not stop.is_set()
                if retried:  # a signal it did not send itself, or starved of CPU: once more, alone
                    with solo.alone():
                        result = _grade_safely(submission, timeout, settings)
                if stop.is_set():
                    return  # stopped meanwhile: a run being shut down is no verdict on this submission
                results.append({**_record(submission, result, version), "retried": retried})
                with results.lock:
                    progress.step(f"{submission.student} {submission.exercise.id}")
                if progress.failed:
                    stop.set()
        except BaseException as exc:  # noqa: BLE001 - a full disk, say: stop the run, write no outputs
            failures.append(exc)
            stop.set()

    # Two grading threads per worker: while one waits on a slow student process, the other keeps
    # its core busy (the worker only forks; the student processes run side by side). Side by side
    # in one sandbox they must be different users, which needs root; else, one at a time.
    sandboxed = any(worker.bwrap for worker in workers)
    per_worker = THREADS_PER_WORKER if os.getuid() == 0 or not sandboxed else 1
    threads = [threading.Thread(target=loop, args=(w,), daemon=True)
               for w in workers for _ in range(per_worker)][: len(pending)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        # Interrupted: the threads take no more work, and whatever they finish from now on is
        # dropped (the log is closed below, before run_batch closes the workers under them).
        stop.set()
        raise
    finally:
        results.close()
    if failures or progress.failed:
        raise failures[0] if failures else progress.failed
