"""What a student starts from, wherever the kit is installed: the exercise stubs, their notebooks and
the word list; and the exercise folder `grade init` makes of them.

A checkout keeps them in `exercises/` and `data/`. An installed package carries copies in
`grader/kit_files/` (the build puts them there, see `setup.py`), never the solutions. Nothing here
imports torch: `grade init`, `grade reset` and `grade list` answer at once.
"""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from grader.exercises import EXERCISES, Exercise

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent
SUFFIXES = (".py", ".ipynb")
DEFAULT_FOLDER = "backprop-ninja"


class KitError(Exception):
    """Something `grade init`, `reset` or `list` cannot do, in one sentence."""


def kit_path(*parts: str) -> Path:
    """A file the kit ships (`exercises/ex1_backprop_all.py`, `data/names.txt`): the installed
    package's copy, else the checkout's."""
    for base in (PACKAGE / "kit_files", CHECKOUT):
        path = base.joinpath(*parts)
        if path.is_file():
            return path
    return CHECKOUT.joinpath(*parts)


def stub(exercise: Exercise, suffix: str) -> Path:
    """The fresh stub of an exercise, as the kit ships it (`.py` or `.ipynb`)."""
    return kit_path("exercises", f"{exercise.slug}{suffix}")


README = """# Becoming a backprop ninja

Each exercise is a stub, as a Python file and as a notebook: work in whichever you like.
Replace every `...` with the gradient's expression, then grade.

    grade                          every exercise, one line each, and what to fix next
    grade ex1_backprop_all.py      one file: each gradient's verdict, and why
    grade --watch ex1_backprop_all.py
                                   grade again at every save
    grade list                     where each exercise stands, without running anything
    grade hint dbnvar              a hint for one gradient
    grade reset ex1                start exercise 1 again (your files are kept as backups)

In a notebook, the last cell's `check()` grades the cells you ran.
"""


def init(directory: Path) -> list[Path]:
    """Write a fresh exercise folder: every stub, as a file and a notebook, and a short README.
    Refuses to overwrite a student's files."""
    taken = [directory / f"{e.slug}{s}" for e in EXERCISES for s in SUFFIXES if (directory / f"{e.slug}{s}").exists()]
    if taken:
        raise KitError(f"{directory} already holds {taken[0].name}: `grade reset EXERCISE` starts one exercise again")
    if directory.exists() and not directory.is_dir():
        raise KitError(f"{directory} is a file, not a folder")
    missing = [stub(e, s) for e in EXERCISES for s in SUFFIXES if not stub(e, s).is_file()]
    if missing:
        raise KitError(f"this installation of the kit has no {missing[0].name}: reinstall it")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for exercise in EXERCISES:
        for suffix in SUFFIXES:
            target = directory / f"{exercise.slug}{suffix}"
            shutil.copyfile(stub(exercise, suffix), target)
            written.append(target)
    readme = directory / "README.md"
    if not readme.exists():
        readme.write_text(README, encoding="utf-8")
        written.append(readme)
    return written


def exercise_folder(start: Path = Path(".")) -> Path | None:
    """The folder `grade` with no path works on: `exercises/` in a checkout, else the folder itself
    when it holds an exercise file (one `grade init` made); None when neither."""
    if (start / "exercises").is_dir():
        return start / "exercises"
    if any((start / f"{e.slug}{s}").exists() for e in EXERCISES for s in SUFFIXES):
        return start
    return None


def chosen_file(directory: Path, exercise: Exercise) -> tuple[Path | None, str]:
    """The file of an exercise that `grade` grades, and why that one: the one there is, else the one
    changed last (the `.py` when both are as new, as a fresh folder's are)."""
    found = [directory / f"{exercise.slug}{s}" for s in SUFFIXES if (directory / f"{exercise.slug}{s}").exists()]
    if not found:
        return None, "neither the .py nor the .ipynb is there"
    if len(found) == 1:
        return found[0], "the only one of the two there is"
    py, notebook = found
    if notebook.stat().st_mtime > py.stat().st_mtime + 1:
        return notebook, "changed after the .py"
    if py.stat().st_mtime > notebook.stat().st_mtime + 1:
        return py, "changed after the notebook"
    return py, "neither was changed after the other"


def backup_name(path: Path) -> Path:
    """A free name for a backup of `path`: `ex1_backprop_all.py.bak`, then `.bak2`, ..."""
    for number in range(1, 1000):
        candidate = path.with_name(path.name + (".bak" if number == 1 else f".bak{number}"))
        if not candidate.exists():
            return candidate
    raise KitError(f"too many backups of {path.name}: delete some")


def reset(directory: Path, exercise: Exercise) -> list[tuple[Path, Path | None]]:
    """Put an exercise's stubs back (the file and the notebook), each changed one first kept as a
    backup: (restored, its backup or None), for each."""
    done = []
    for suffix in SUFFIXES:
        fresh, target = stub(exercise, suffix), directory / f"{exercise.slug}{suffix}"
        if not fresh.is_file():
            raise KitError(f"this installation of the kit has no {fresh.name}: reinstall it")
        backup = None
        if target.exists() and target.read_bytes() != fresh.read_bytes():
            backup = backup_name(target)
            target.replace(backup)
        shutil.copyfile(fresh, target)
        done.append((target, backup))
    return done


def find_exercise(name: str) -> Exercise:
    """An exercise by id (`ex1`), number (`1`) or file stem (`ex1_backprop_all`)."""
    for exercise in EXERCISES:
        if name.lower() in (exercise.id, exercise.id[2:], exercise.slug):
            return exercise
    raise KitError(f"there is no exercise {name!r}; choose one of {', '.join(e.id for e in EXERCISES)}")


@dataclass(frozen=True)
class Standing:
    """Where an exercise stands, read from its file without running it."""

    exercise: Exercise
    path: Path | None
    why: str  # why this file (`chosen_file`)
    written: int = 0  # gradients with an expression in place of their blank
    total: int = 0
    problem: str | None = None  # the file cannot be read or parsed


def _code(path: Path) -> list[str]:
    """The code of a file: the whole `.py`, or each code cell of a notebook."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return [text]
    cells = json.loads(text).get("cells", [])
    return ["".join(c["source"]) if isinstance(c.get("source"), list) else str(c.get("source", ""))
            for c in cells if c.get("cell_type") == "code"]


def _written(sources: list[str], names: tuple[str, ...]) -> tuple[int, int]:
    """How many of `names` a file's last top-level assignment gives an expression (not `...`), and in
    how many of its code cells the parser stopped (a cell with a shell command, say)."""
    last: dict[str, bool] = {}
    broken = 0
    for source in sources:
        try:
            body = ast.parse(source).body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            broken += 1
            continue
        for node in body:
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                blank = isinstance(node.value, ast.Constant) and node.value.value is Ellipsis
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in names:
                        last[target.id] = not blank if isinstance(node, ast.Assign) else last.get(target.id, True)
    return sum(last.get(name, False) for name in names), broken


def standing(directory: Path) -> list[Standing]:
    """Every exercise's file in `directory` and how many of its gradients are written."""
    out = []
    for exercise in EXERCISES:
        names = exercise.blanks or exercise.targets
        path, why = chosen_file(directory, exercise)
        if path is None:
            out.append(Standing(exercise, None, why, total=len(names)))
            continue
        try:
            written, broken = _written(_code(path), names)
        except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as exc:
            out.append(Standing(exercise, path, why, total=len(names), problem=f"cannot be read ({type(exc).__name__})"))
            continue
        problem = None
        if broken and path.suffix == ".py":
            problem = "does not parse: `grade` says where"
        out.append(Standing(exercise, path, why, written, len(names), problem))
    return out


def standing_text(rows: list[Standing]) -> str:
    """`grade list`: one line per exercise, then what to run to grade them."""
    lines = []
    for row in rows:
        title = row.exercise.title.split(": ", 1)[-1]
        if row.path is None:
            state = "no file (grade init makes a fresh folder)"
        elif row.problem:
            state = f"{row.path.name} {row.problem}"
        elif row.written == 0:
            state = f"{row.path.name}: not started"
        else:
            state = f"{row.path.name}: {row.written}/{row.total} gradients written"
        lines.append(f"{row.exercise.id}  {state}\n     {title}")
    lines.append("grade checks them: `grade` for all, `grade FILE` for one")
    return "\n".join(lines)
