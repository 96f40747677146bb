"""Notebooks: what to grade in a `.ipynb`, exercise by exercise, with every line traced back to its cell.

Two kinds of notebook are graded:

- a stub notebook made by `grader.stubs`: the cells tagged `gradient` are the answer;
- any other notebook, such as a student's own copy of the lecture, which may answer
  several exercises. It is split into exercise blocks (`blocks`):
  - exercise 4: the backward pass inside a training loop (a loop whose body assigns
    the parameter gradients), under `with torch.no_grad():` or not;
  - exercise 2: a `dlogits` written in one expression from `logits`, in a cell of its
    own, with the statements after it in that cell that change it (`dlogits /= n`);
  - exercise 3: the same for `dhprebn`, from `dhpreact`;
  - exercise 1: every other statement that assigns one of its gradients.
  A block holds its gradient statements and the helper assignments they read, and
  nothing else: never the forward pass, the data, the parameters or the training loop
  (the grader provides those), never a loop or comprehension variable, never the
  lecture's scaffolding (`cmp`, `loss.backward()`, plots). Of several attempts at a gradient
  (`dX = ...` again, from scratch), the last counts unless a line that counts used an earlier one.

Cells are numbered as a person sees them in Jupyter: code cells only, by their execution
count when they have one (`In [12]`), else by their place among the code cells.
`names` maps a student's own names (`d_log_probs`) to the lecture's.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from dataclasses import dataclass, field

from grader.execution import (
    SubmissionError, assigned_names, called_writes, global_writes, parse, statement_binds,
)

GRADIENT_TAG = "gradient"
ALWAYS_THERE = {"torch", "F", "nn", "math"} | set(dir(builtins))
# The lecture's names for its data and its training state: never followed as helpers, and a statement
# that reads them is never a helper either (the grader provides the batch and the parameters).
DATA = {"words", "chars", "stoi", "itos", "build_dataset", "Xtr", "Ytr", "Xdev", "Ydev", "Xte", "Yte",
        "parameters", "lossi", "stepi", "cmp", "split_loss"}


@dataclass
class NotebookSource:
    """Python source assembled from cells, and where each of its lines came from."""

    source: str
    origin: dict[int, tuple[int, int]] = field(default_factory=dict)  # line -> (cell, line in cell), 1-based
    tagged: bool = False
    exercise: str | None = None  # the exercise block this is, for a notebook that is not a stub


@dataclass
class Cell:
    """One code cell: the number a person sees, its text (magics commented out) and its syntax tree."""

    number: int
    text: str
    tree: ast.Module | None
    problem: str | None = None  # why it does not parse

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def read_notebook(path: str, text: str):
    """The notebook in a file's text, or a `SubmissionError` saying in one sentence why not."""
    import nbformat

    try:
        return nbformat.reads(text, as_version=4)
    except (json.JSONDecodeError, nbformat.reader.NotJSONError):
        raise SubmissionError(f"{path} is not a notebook (not JSON)") from None
    except Exception as exc:  # nbformat raises several kinds for a malformed notebook
        raise SubmissionError(f"{path} is not a valid notebook: {str(exc).splitlines()[0][:200]}") from None


PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}  # the rest of the cell is still Python
_HELP = re.compile(r"\??[\w.]+\?\??")  # `F.one_hot?`, `??torch.tanh`


def _code_line(line: str) -> str:
    """One line as Python: `%time x = ...` runs `x = ...`; other magics, shell escapes (`!pip`,
    `files = !ls`) and help requests (`F.one_hot?`) become comments."""
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    for magic in ("%time ", "%timeit "):
        if stripped.startswith(magic):
            return indent + stripped[len(magic):]
    if stripped.startswith(("%", "!")) or _HELP.fullmatch(stripped.rstrip()) or re.match(r"[\w, ]+=\s*[!%]", stripped):
        return f"# {line}"
    return line


def _cell_code(source: str) -> str:
    """A code cell's source as Python (see `_code_line`); a cell magic that makes the cell another
    language (`%%bash`, `%%html`) leaves nothing to grade."""
    lines = str(source).splitlines()
    first = lines[0].strip() if lines else ""
    if first.startswith("%%") and first[2:].split(" ")[0] not in PYTHON_CELL_MAGICS:
        return "\n".join("# " + line for line in lines)
    return "\n".join(_code_line(line) for line in lines)


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


def _utf8_slice(line: str, start: int | None = None, end: int | None = None) -> str:
    """A slice of a line by the UTF-8 byte offsets that `ast` reports."""
    return line.encode("utf-8")[start:end].decode("utf-8", errors="replace")


def renamed(text: str, names: dict[str, str]) -> str:
    """The cell's text with every variable in `names` renamed, everything else kept as written."""
    if not names:
        return text
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return text
    lines = text.splitlines(keepends=True)
    spots = sorted(((n.lineno, n.col_offset, n.end_col_offset, names[n.id]) for n in ast.walk(tree)
                    if isinstance(n, ast.Name) and n.id in names), reverse=True)
    for lineno, start, end, new in spots:  # right to left, so earlier offsets stay true
        data = lines[lineno - 1].encode("utf-8")
        lines[lineno - 1] = (data[:start] + new.encode("utf-8") + data[end:]).decode("utf-8")
    return "".join(lines)


def cells_of(sources: list[tuple[int, str]], names: dict[str, str] | None = None) -> list[Cell]:
    """(number, source) of code cells as `Cell`s, each parsed once (renamed first)."""
    cells = []
    for number, source in sources:
        text = renamed(_cell_code(source), names or {})
        try:
            tree, problem = parse(text, "<cell>"), None
        except SyntaxError as exc:
            tree, problem = None, f"cell {number} is not valid Python (line {exc.lineno}: {exc.msg}); it is not graded"
        cells.append(Cell(number, text, tree, problem))
    return cells


def notebook_cells(notebook, names: dict[str, str] | None = None) -> list[Cell]:
    """The code cells of a notebook, numbered as Jupyter shows them."""
    sources = []
    code = [cell for cell in notebook.cells if cell.get("cell_type") == "code"]
    for ordinal, cell in enumerate(code, start=1):
        count = cell.get("execution_count")
        sources.append((count if isinstance(count, int) and count > 0 else ordinal, str(cell.get("source", ""))))
    return cells_of(sources, names)


# --- statements ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stmt:
    """A statement of a cell (at its top level, or in a training loop's body); `calls` are the names
    it assigns by calling a function of the notebook that declares them `global`."""

    cell: Cell
    node: ast.stmt
    calls: frozenset[str] = frozenset()

    @property
    def binds(self) -> set[str]:
        return statement_binds(self.node) | self.calls


def _free_reads(node: ast.stmt) -> set[str]:
    """The names a statement reads from before it: not those it binds itself first (a loop's
    `ix = Xb[k, j]`, a comprehension's variable), but the targets of its `x += ...` and `x[i] = ...`."""
    loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    changed = set()
    for child in ast.walk(node):
        if isinstance(child, ast.AugAssign):
            changed |= assigned_names(child)
        elif isinstance(child, ast.Assign):  # `x[i] = ...`, `x.attr = ...`: a change to x, which it reads
            changed |= {n for t in child.targets for part in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])
                        if isinstance(part, (ast.Subscript, ast.Attribute)) for n in assigned_names(part)}
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr.endswith("_"):
            changed |= assigned_names(child)
    local = set()
    for child in ast.walk(node):
        if isinstance(child, (ast.For, ast.comprehension)):
            local |= assigned_names(child.target)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local |= {a.arg for a in child.args.args + child.args.kwonlyargs + child.args.posonlyargs}
    if isinstance(node, (ast.For, ast.While, ast.With, ast.If)):  # a loop body's own helpers (`ix = Xb[k, j]`)
        local |= {n for child in ast.walk(node) if isinstance(child, ast.Assign)
                  for t in child.targets if isinstance(t, ast.Name) for n in [t.id]}
    return (loads - local) | changed


def _is_fresh(node: ast.stmt, name: str) -> bool:
    """`name = ...` that does not read `name`: a new value, replacing what came before."""
    if isinstance(node, ast.Assign):
        plain = any(isinstance(t, ast.Name) and t.id == name or
                    isinstance(t, ast.Tuple) and any(isinstance(e, ast.Name) and e.id == name for e in t.elts)
                    for t in node.targets)
    elif isinstance(node, ast.AnnAssign):
        plain = node.value is not None and isinstance(node.target, ast.Name) and node.target.id == name
    else:
        plain = False
    return plain and name not in _free_reads(node)


def _flat(body: list[ast.stmt], *, wanted: set[str] | None = None) -> list[ast.stmt]:
    """Statements, with the bodies of `with` blocks (`with torch.no_grad():`) taken as their own; with
    `wanted`, also the branch of an `if` that alone assigns wanted names (`if manual: ... else:
    loss.backward()` in a training loop)."""
    out = []
    for node in body:
        if isinstance(node, (ast.With, ast.AsyncWith)):
            out.extend(_flat(node.body, wanted=wanted))
        elif wanted is not None and isinstance(node, ast.If):
            branches = [b for b in (node.body, node.orelse) if any(statement_binds(n) & wanted for n in b)]
            out.extend(_flat(branches[0], wanted=wanted) if len(branches) == 1 else [node])
        else:
            out.append(node)
    return out


def _walk_code(node: ast.AST):
    """Every node inside a statement, but not inside a `def`, `lambda` or `class` it defines."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield from _walk_code(child)


def _may_help(node: ast.stmt, name: str) -> bool:
    """Whether a statement that binds `name` may be brought in as a helper for it: an assignment, an
    in-place call, a `def`, an import, or a loop or `if` that changes it, but never one where `name`
    is a loop or comprehension variable (`for p in parameters: ...`)."""
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.FunctionDef, ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Call) and bool(statement_binds(node))
    if isinstance(node, (ast.For, ast.While, ast.If)):
        variables = {v for n in ast.walk(node) if isinstance(n, (ast.For, ast.comprehension))
                     for v in assigned_names(n.target)}
        return name not in variables
    return False


# --- exercise blocks ----------------------------------------------------------------------------------------


@dataclass
class Block:
    """One exercise's part of a notebook: its gradient statements, in order, and the pool of earlier
    statements its helpers may come from."""

    exercise: str
    statements: list[Stmt]
    pool: list[Stmt]


def _training_loop(stmts: list[Stmt], ex4_targets: set[str], wanted: set[str]) -> tuple[int, ast.stmt] | None:
    """The last loop whose body assigns at least three of exercise 4's gradients, the innermost when
    such loops are nested (`for epoch ...: for step ...:`): (index of its statement, the loop)."""
    def qualifies(loop) -> bool:
        assigned = set().union(set(), *(statement_binds(n) for n in _flat(loop.body, wanted=wanted)))
        return len(assigned & ex4_targets) >= 3

    found = None
    for index, stmt in enumerate(stmts):
        loops = [n for n in _walk_code(stmt.node) if isinstance(n, (ast.For, ast.While)) and qualifies(n)]
        innermost = [loop for loop in loops if not any(other is not loop and other in set(_walk_code(loop))
                                                       for other in loops)]
        if innermost:
            found = (index, innermost[-1])
    return found


def blocks(cells: list[Cell], exercises, gradient_names: set[str], forced: str | None = None) -> list[Block]:
    """The exercise blocks of a notebook that is not a stub, in exercise order (see the module's docstring).
    `exercises`: the four exercises, by id; `gradient_names`: every gradient name of every exercise;
    `forced`: the exercise the notebook is known to answer (`setup("ex4")`): when no block looks
    like it, every statement that assigns one of its gradients is its block."""
    ex1, ex2, ex3, ex4 = (exercises[i] for i in ("ex1", "ex2", "ex3", "ex4"))
    nodes = [(cell, node) for cell in cells if cell.tree is not None for node in _flat(cell.tree.body)]
    writes = global_writes(node for _, node in nodes)
    top = [Stmt(cell, node, frozenset(called_writes(node, writes))) for cell, node in nodes]
    found: list[Block] = []
    if forced is not None:
        found = [b for b in blocks(cells, exercises, gradient_names) if b.exercise == forced]
        if found:
            return found
        own = set(exercises[forced].targets) | set(exercises[forced].blanks or ())
        everything = [s for s in top if s.binds & own and not isinstance(s.node, ast.FunctionDef)]
        return [Block(forced, everything, top)] if everything else []
    loop = _training_loop(top, set(ex4.targets), gradient_names)
    if loop is not None:
        index, node = loop
        body = [Stmt(top[index].cell, n, frozenset(called_writes(n, writes)))
                for n in _flat(node.body, wanted=gradient_names)]
        chosen = [s for s in body if s.binds & gradient_names]  # the whole chain of exercise 1, if it is that
        found.append(Block("ex4", chosen, top[:index] + body))  # helpers: from the loop, or before it
        top = top[:index] + top[index + 1:]
    g1 = set(ex1.targets)
    grads = [i for i, s in enumerate(top) if s.binds & g1 and not isinstance(s.node, ast.FunctionDef)]
    chains = [top[i] for i in grads]

    def one_expression(i: int, name: str, allowed: set[str]) -> bool:
        """Whether `top[i]`, a `name = ...` from forward tensors alone in a cell of its own, is that
        exercise's answer rather than exercise 1's: it is exercise 1's only when the lines after it
        use it, and no earlier `name` was used already (exercise 1 had moved past it)."""
        stmt = top[i]
        if not _is_fresh(stmt.node, name) or _free_reads(stmt.node) & (gradient_names - allowed):
            return False
        same_cell = {n for j in grads if top[j].cell is stmt.cell for n in top[j].binds & g1}
        if same_cell - {name} - allowed:  # its cell writes other gradients: it is exercise 1's
            return False
        at = grads.index(i)
        return not (_used_after(chains, at, name) and not any(
            _used_after(chains, grads.index(j), name) for j in grads[:at] if _is_fresh(top[j].node, name)))

    taken: set[int] = set()
    for exercise, name, allowed in ((ex2, "dlogits", set()), (ex3, "dhprebn", {"dhpreact"})):
        starts = [i for i in grads if name in top[i].binds and one_expression(i, name, allowed)]
        members: list[int] = []
        for start in starts:  # every attempt, with the lines after it in its cell that change it; the last counts
            members = [start] + [j for j in grads if j > start and top[j].cell is top[start].cell
                                 and top[j].binds & g1 == {name} and not _is_fresh(top[j].node, name)]
            taken |= set(members)
        if starts:
            found.append(Block(exercise.id, [top[j] for j in members], top[:members[-1] + 1]))
    rest = [top[i] for i in grads if i not in taken]
    if rest:
        found.append(Block(ex1.id, rest, top))
    return sorted(found, key=lambda b: b.exercise)


def _used_after(statements: list[Stmt], at: int, name: str, ignored=frozenset()) -> bool:
    """Whether a statement after `statements[at]` reads `name` before `name` is assigned afresh
    (statements that only change `name` in place, and those at `ignored` positions, do not count)."""
    for position in range(at + 1, len(statements)):
        stmt = statements[position]
        if name in stmt.binds:
            if _is_fresh(stmt.node, name):
                return False
            continue
        if position not in ignored and name in _free_reads(stmt.node):
            return True
    return False


def _answers(statements: list[Stmt], targets: set[str]) -> list[Stmt]:
    """Without the attempts that do not count. A gradient assigned afresh more than once (`dh = ...`
    again) keeps its last attempt, unless a line that counts used an earlier one before the next (then
    the later ones are redos, as in a scratch cell after the chain). So a cell run again whole (a
    fixed chain, in a kernel's history) replaces its first run line by line, while a try that a later
    cell replaced never counts."""
    fresh = {name: [i for i, s in enumerate(statements) if name in s.binds and _is_fresh(s.node, name)]
             for name in targets}
    chosen = {name: len(starts) - 1 for name, starts in fresh.items() if len(starts) > 1}

    def dropped() -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for name, keep in chosen.items():
            starts = fresh[name]
            for k, (start, end) in enumerate(zip(starts, starts[1:] + [len(statements)])):
                for i in range(start, end):
                    if k != keep and name in statements[i].binds:
                        out.setdefault(i, set()).add(name)
        return out

    changed = True
    while changed:  # earlier attempts only ever come back, so this ends
        changed, gone = False, dropped()
        ignored = {i for i, names in gone.items() if not (statements[i].binds & targets) - names}
        for name, keep in chosen.items():
            used = next((k for k in range(keep) if _used_after(statements, fresh[name][k], name, ignored)), None)
            if used is not None:
                chosen[name], changed = used, True
    gone = dropped()
    return [s for i, s in enumerate(statements) if not (s.binds & targets) or (s.binds & targets) - gone.get(i, set())]


def _with_helpers(block: Block, known: set[str], scope: set[str]) -> list[Stmt]:
    """A block's statements and the helper statements they read: for each name read that nothing
    provides, the last plain assignment of it before the reader and every in-place change of it
    since, and so on for what those read. Never a statement that assigns what the grader provides,
    and never one that binds the name as a loop or comprehension variable."""
    position = {id(s): i for i, s in enumerate(block.pool)}
    chosen: dict[int, Stmt] = {}

    def helpers(name: str, before: int) -> list[Stmt]:
        found = []
        for stmt in reversed(block.pool[:before]):
            if name not in stmt.binds:
                continue
            if not _may_help(stmt.node, name) or stmt.binds & scope or _free_reads(stmt.node) & DATA:
                return []  # its latest value is a loop variable's, or comes with the forward pass or the data
            found.append(stmt)
            if _is_fresh(stmt.node, name) or isinstance(stmt.node, (ast.FunctionDef, ast.Import, ast.ImportFrom)):
                return found
        return []  # never assigned from scratch before: nothing to bring in (a NameError will say so)

    def add(stmt: Stmt) -> None:
        if id(stmt) in chosen:
            return
        chosen[id(stmt)] = stmt
        for name in sorted(_free_reads(stmt.node) - known - scope - DATA):
            for helper in helpers(name, position[id(stmt)]):
                add(helper)

    for stmt in block.statements:
        add(stmt)
    return sorted(chosen.values(), key=lambda s: position[id(s)])


def _segment(stmt: Stmt) -> list[str]:
    """A statement's own text, as written (comments within it kept), dedented to the left margin."""
    node, lines = stmt.node, stmt.cell.lines
    first, last = node.lineno - 1, node.end_lineno - 1
    text = lines[first:last + 1]
    if first == last:
        return [_utf8_slice(text[0], node.col_offset, node.end_col_offset)]
    out = [_utf8_slice(text[0], node.col_offset)]
    indent = len(_utf8_slice(text[0], 0, node.col_offset))
    for line in text[1:-1]:
        out.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
    last_line = _utf8_slice(text[-1], 0, node.end_col_offset)
    out.append(last_line[indent:] if last_line[:indent].strip() == "" else last_line.lstrip())
    return out


def assemble(statements: list[Stmt], exercise: str | None = None) -> NotebookSource:
    """The statements as one Python source, each line mapped back to (cell, line in cell)."""
    lines: list[str] = []
    origin: dict[int, tuple[int, int]] = {}
    for stmt in statements:
        for offset, text in enumerate(_segment(stmt)):
            lines.append(text)
            origin[len(lines)] = (stmt.cell.number, stmt.node.lineno + offset)
    return NotebookSource("\n".join(lines) + "\n", origin, exercise=exercise)


def exercise_sources(cells: list[Cell], exercises, scope_of, forced: str | None = None) -> list[NotebookSource]:
    """Every exercise block of a notebook as the source to grade. `scope_of(exercise)`: the names the
    grader provides to that exercise's code; `forced`: see `blocks`."""
    gradient_names = {t for e in exercises.values() for t in (*e.targets, *(e.blanks or ()))}
    out = []
    for block in blocks(cells, exercises, gradient_names, forced):
        exercise = exercises[block.exercise]
        block.statements = _answers(block.statements, gradient_names)
        scope = scope_of(exercise)
        statements = _with_helpers(block, ALWAYS_THERE | gradient_names, scope)
        out.append(assemble(statements, exercise.id))
    return out


def tagged_source(notebook) -> NotebookSource | None:
    """The gradient cells of a stub notebook, or None when no cell carries the tag."""
    code = [cell for cell in notebook.cells if cell.get("cell_type") == "code"]
    cells = [(ordinal, cell) for ordinal, cell in enumerate(code, start=1)
             if GRADIENT_TAG in cell.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    lines, origin = [], {}
    for ordinal, cell in cells:
        count = cell.get("execution_count")
        number = count if isinstance(count, int) and count > 0 else ordinal
        for line_in_cell, text in enumerate(_cell_code(cell.get("source", "")).splitlines(), start=1):
            lines.append(text)
            origin[len(lines)] = (number, line_in_cell)
    return NotebookSource("\n".join(lines) + "\n", origin, tagged=True)


def all_assigned(cells: list[Cell]) -> set[str]:
    """Every name any statement of the notebook binds, loop bodies included (for --names suggestions)."""
    return {name for cell in cells if cell.tree is not None for node in ast.walk(cell.tree)
            if isinstance(node, ast.stmt) for name in statement_binds(node)}
