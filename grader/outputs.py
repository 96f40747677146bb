"""Reading a batch's results back, and writing its outputs so that no reader, and no run killed
meanwhile, ever sees half a file or half a folder; and CSV cells a spreadsheet will not run.

Every output of a class is built from results.jsonl (`load_results`); `well_formed` is what a line
must hold to be used at all.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

# What every line of results.jsonl has (`batch._record` writes it); a line without them is ignored.
RECORD_KEYS = frozenset({"student", "exercise", "sha256", "grader_version", "result", "score", "max_score", "passed",
                         "report"})


def record_key(record: dict) -> tuple[str, str, str, str]:
    """What a result is the result of: a student's file for an exercise, graded by a version of the
    grader with its settings. A run reuses a result, and a class's outputs use it, only for this key."""
    return record["student"], record["exercise"], record["sha256"], record["grader_version"]


def well_formed(record: dict) -> bool:
    """Whether a results.jsonl line has every value a class's outputs read, of the type `batch._record`
    writes: a line cut, edited or written by something else is not one, and its submission is
    graded again (or, for `grade merge`, is missing)."""
    from grader.compare import FileResult

    text_or_none = (str, type(None))
    number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
    try:
        result = record["result"]
        if not (all(isinstance(record[k], str) for k in ("student", "exercise", "sha256", "grader_version", "report"))
                and number(record["score"]) and number(record["max_score"]) and isinstance(record["passed"], bool)
                and isinstance(result, dict) and isinstance(result["results"], list)
                and isinstance(result.get("error"), text_or_none)):
            return False
        for verdict in result["results"]:
            if not (isinstance(verdict["name"], str) and all(isinstance(verdict.get(k), text_or_none) for k in
                                                             ("hint", "policy", "about", "warning", "tensor"))):
                return False
        training = result.get("training")
        if training is not None and not (isinstance(training["passed"], bool)
                                         and isinstance(training.get("error"), text_or_none)):
            return False
        FileResult.from_dict(result)  # every verdict's status, shape and number, and the training run's
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return True


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
        if isinstance(record, dict) and RECORD_KEYS <= set(record) and well_formed(record):
            records.append(record)
    return records


# A spreadsheet runs a cell that starts with one of these as a formula, also after leading
# whitespace, and also in their fullwidth forms (＝ ＋ － ＠); a leading tab or CR, whatever follows.
FORMULA_SIGNS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    dangerous = text.startswith(("\t", "\r")) or text.lstrip().startswith(FORMULA_SIGNS)
    return "'" + text if dangerous else text


def write_atomically(path: Path, text: str) -> None:
    """Write a file so that a reader (or a run killed meanwhile) sees the old file or the new one,
    never half of one: a temporary file beside it, then a rename over it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_plainly(path: Path, text: str) -> None:
    """Write a file in a folder nobody reads yet (`replace_folder`'s new one)."""
    with open(path, "x", encoding="utf-8") as handle:
        handle.write(text)


def sync_folder(folder: Path) -> None:
    """Everything written to `folder`'s file system on disk: one syncfs(2) rather than an fsync per
    file (a class's feedback is two files a student)."""
    from grader.sandbox import libc

    descriptor = os.open(folder, os.O_RDONLY)
    try:
        if libc().syncfs(descriptor) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(descriptor)


def replace_folder(folder: Path, fill) -> None:
    """Build a new folder with `fill(new_folder)` (which may write it plainly), then swap it for
    `folder`: a reader sees the old folder, briefly none, or the new one, never a half-written one,
    and a crash leaves the old folder or the new one whole on disk."""
    new = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.new")
    old = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.old")
    try:
        new.mkdir()
        fill(new)
        sync_folder(new)
        if folder.exists():
            os.rename(folder, old)
        os.rename(new, folder)
    except BaseException:
        if old.exists() and not folder.exists():
            os.rename(old, folder)
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
