"""Who handed in a file, whether late, and which attempt it is: read from the names that learning
management systems give their downloads, and from the names students give their own files.

    Canvas       smith_12345_67890_ex1_backprop_all.py       student `smith`
                 smith_LATE_12345_67890_ex1_backprop_all.py  ... late
                 smith_12345_67890_ex1_backprop_all-2.py      ... its third upload of that name
    Moodle       Carol Lee_123456_assignsubmission_file_ex1.py   student `Carol Lee`
    Blackboard   HW3_jdoe_attempt_2026-03-01-10-22-33_ex1.py     student `jdoe`, attempt by its time
    by hand      Carol Lee - ex1.py, alice_ex1_backprop_all.py, bob-LATE-ex2.ipynb, ex1 (2).py

A folder of its own is the student's name (a Moodle folder `Carol Lee_123456_assignsubmission_file_`
is `Carol Lee`). When one student hands in the same exercise more than once, the last attempt wins:
the latest Blackboard time, then the highest number (`-2`, ` (2)`); a name with no number is the
first attempt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A token `LATE` (or `late`) between separators, anywhere in the name.
LATE = re.compile(r"(?:^|[\s_.\-()])(?:LATE|late)(?=$|[\s_.\-()])")
# A numbered upload: Canvas's `-2`, a browser's ` (2)`; never the seconds of a Blackboard time.
ATTEMPT = re.compile(r"(?:(?<!\d{4}-\d\d-\d\d-\d\d-\d\d)-(?P<dash>\d{1,3})|\s*\((?P<paren>\d{1,3})\))$")
PATTERNS = [  # the most specific first: a Blackboard name also fits Canvas's rule when its user is a number
    # Blackboard: assignment, user name, the attempt's time, the file's own name
    r"^.+?_(?P<student>[^_]+)_attempt_(?P<when>\d{4}(?:-\d\d){5})(?:_(?P<file>.+))?$",
    # Moodle: full name, participant id, the plugin, the file's own name
    r"^(?P<student>.+?)_\d+_assignsubmission_[a-z]+_(?P<file>.*)$",
    # Canvas: name, LATE, user id, submission id, the file's own name
    r"^(?P<student>[^_]+?)(?:_LATE)?_\d+(?:_\d+)?_(?P<file>.+)$",
    # by hand: the student, separators (and maybe LATE), the exercise
    r"^(?P<student>.+?)[\s_.\-]+(?:(?:LATE|late)[\s_.\-]+)?(?P<file>ex\d.*)$",
]
MOODLE_FOLDER = re.compile(r"^(?P<student>.+?)_\d+_assignsubmission_[a-z]+_?$")


@dataclass(frozen=True)
class Named:
    """What a file's name says."""

    student: str | None  # None when the name does not say (then the file's stem stands in)
    late: bool = False
    attempt: tuple[str, int] = ("", 0)  # (time, number): a larger one is a later attempt
    file: str = ""  # the name the student gave the file, without what the LMS added


def _attempt(stem: str) -> tuple[str, int]:
    """(the stem without its attempt number, the number; 0 for none)."""
    match = ATTEMPT.search(stem)
    if not match:
        return stem, 0
    return stem[: match.start()], int(match.group("dash") or match.group("paren"))


def read_name(stem: str, pattern: str | None = None) -> Named:
    """Who a loose file belongs to, from its name (without the suffix). With `pattern` (a regex with
    `(?P<student>...)`, and optionally `(?P<late>...)` and `(?P<attempt>\\d+)`), only that is used."""
    if pattern:
        match = re.match(pattern, stem)
        if not (match and match.groupdict().get("student")):
            return Named(None, file=stem)
        groups = match.groupdict()
        number = groups.get("attempt")
        return Named(match.group("student"), late=bool(groups.get("late")),
                     attempt=("", int(number) if number and number.isdigit() else 0), file=stem)
    base, number = _attempt(stem)
    late = bool(LATE.search(base))
    for regex in PATTERNS:
        match = re.match(regex, base)
        if match and match.group("student").strip():
            groups = match.groupdict()
            return Named(match.group("student").strip(), late=late, attempt=(groups.get("when") or "", number),
                         file=groups.get("file") or "")
    return Named(None, late=late, attempt=("", number), file=base)


def read_folder(name: str) -> Named:
    """Who a folder of files belongs to: its name, or a Moodle folder's student."""
    match = MOODLE_FOLDER.match(name)
    student = match.group("student") if match else name
    return Named(student, late=bool(LATE.search(name)))


def in_folder(named_folder: Named, stem: str) -> Named:
    """A file inside a student's folder: the folder says who; the file may say late, and which attempt."""
    base, number = _attempt(stem)
    inner = read_name(stem)
    return Named(named_folder.student, late=named_folder.late or bool(LATE.search(base)),
                 attempt=(inner.attempt[0], number), file=inner.file or base)
