"""Notebooks: the source to grade from a `.ipynb`, with every line traced back to its cell.

Two kinds of notebook are graded:

- a stub notebook made by `grader.stubs`: the cells tagged `gradient` are the answer;
- any other notebook, such as a student's own copy of the lecture: only the
  statements that assign the exercise's gradient names are taken (with the helper
  assignments they read), so data loading, training and plotting never run.
  `names` maps a student's own names (`d_log_probs`) to the lecture's.
"""

from __future__ import annotations

import ast
import builtins
import json
from dataclasses import dataclass, field

import nbformat

from grader.execution import SubmissionError, parse

GRADIENT_TAG = "gradient"
SKIPPED_CALLS = {"cmp", "print", "display", "plot", "show", "imshow", "hist", "figure", "legend", "title"}


@dataclass
class NotebookSource:
    """Python source assembled from cells, and where each of its lines came from."""

    source: str
    origin: dict[int, tuple[int, int]] = field(default_factory=dict)  # line -> (cell, line in cell), 1-based
    tagged: bool = False


def read_notebook(path: str, text: str):
    """The notebook in a file's text, or a `SubmissionError` saying in one sentence why not."""
    try:
        return nbformat.reads(text, as_version=4)
    except (json.JSONDecodeError, nbformat.reader.NotJSONError):
        raise SubmissionError(f"{path} is not a notebook (not JSON)") from None
    except Exception as exc:  # nbformat raises several kinds for a malformed notebook
        raise SubmissionError(f"{path} is not a valid notebook: {str(exc).splitlines()[0][:200]}") from None


def _cell_code(cell) -> str:
    """A code cell's source with IPython magics and shell escapes turned into comments."""
    return "\n".join(f"# {line}" if line.lstrip().startswith(("%", "!")) else line
                     for line in str(cell.get("source", "")).splitlines())


def parse_names(text: str | None) -> dict[str, str]:
    """`old=new,old2=new2` (or a file of such lines) as a mapping; `ValueError` when malformed."""
    if not text:
        return {}
    mapping = {}
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        old, sep, new = part.partition("=")
        if not sep or not old.strip().isidentifier() or not new.strip().isidentifier():
            raise ValueError(f"--names expects old=new pairs of Python names, not {part!r}")
        mapping[old.strip()] = new.strip()
    return mapping


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in self.names:
            node.id = self.names[node.id]
        return node


def _statements(notebook, names: dict[str, str]):
    """(cell number, statement) for every top-level statement of every code cell that parses."""
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = parse(_cell_code(cell), "<cell>")
        except SyntaxError:
            continue
        if names:
            tree = _Rename(names).visit(tree)
        for node in tree.body:
            yield number, node


def _is_skipped_call(node: ast.stmt) -> bool:
    """`cmp(...)`, `print(...)`, `plt.plot(...)`: calls whose only effect is to show something."""
    if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Call):
        return False
    func = node.value.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in SKIPPED_CALLS


def _source_from(chosen: list[tuple[int, ast.stmt]]) -> NotebookSource:
    lines: list[str] = []
    origin: dict[int, tuple[int, int]] = {}
    for cell, node in chosen:
        for offset, text in enumerate(ast.unparse(node).splitlines()):
            lines.append(text)
            origin[len(lines)] = (cell, node.lineno + offset)
    return NotebookSource("\n".join(lines) + "\n", origin)


def tagged_source(notebook) -> NotebookSource | None:
    """The gradient cells of a stub notebook, or None when no cell carries the tag."""
    cells = [(number, cell) for number, cell in enumerate(notebook.cells, start=1)
             if cell.get("cell_type") == "code" and GRADIENT_TAG in cell.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    lines, origin = [], {}
    for number, cell in cells:
        for line_in_cell, text in enumerate(_cell_code(cell).splitlines(), start=1):
            lines.append(text)
            origin[len(lines)] = (number, line_in_cell)
    return NotebookSource("\n".join(lines) + "\n", origin, tagged=True)


def lecture_source(notebook, targets: tuple[str, ...], scope: set[str], names: dict[str, str]) -> NotebookSource:
    """The statements of any notebook that assign the targets, and the helper assignments they read."""
    from grader.execution import assigned_names

    statements = list(_statements(notebook, names))
    known = set(targets) | scope | {"torch", "F", "nn"} | set(dir(builtins))
    chosen: set[int] = set()
    for index, (_, node) in enumerate(statements):
        if assigned_names(node) & set(targets) and not _is_skipped_call(node):
            chosen.add(index)
    # Helpers: the latest earlier assignment of each name a chosen statement reads (not a forward tensor).
    todo = list(chosen)
    while todo:
        index = todo.pop()
        reads = {n.id for n in ast.walk(statements[index][1]) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for name in reads - known:
            for earlier in range(index - 1, -1, -1):
                node = statements[earlier][1]
                if name in assigned_names(node) and not (assigned_names(node) & scope):
                    if earlier not in chosen:
                        chosen.add(earlier)
                        todo.append(earlier)
                    break
    return _source_from([statements[i] for i in sorted(chosen)])


def notebook_source(path: str, text: str, *, targets: tuple[str, ...] | None = None, scope: set[str] | None = None,
                    names: dict[str, str] | None = None) -> NotebookSource:
    """What to grade in a notebook: its gradient cells, else the lecture-style statements."""
    notebook = read_notebook(path, text)
    tagged = tagged_source(notebook)
    if tagged is not None:
        return tagged
    if targets is None:  # no exercise known yet: every code cell, to recognise it by its names
        chosen = list(_statements(notebook, names or {}))
        return _source_from(chosen)
    return lecture_source(notebook, targets, scope or set(), names or {})
