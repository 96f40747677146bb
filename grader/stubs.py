"""Generate the exercise stubs from the solutions, and check that the committed ones are current.

A stub is its solution minus the answers: a generated header (what is in scope and
the forward pass, as comments, from `grader.network`), the solution's imports and
its `##` section comments, and `dX = ...` where the solution assigns `dX`. Comments
with a single `#` are the solution's own and never reach the stub.

    python -m grader.stubs           # rewrite exercises/*.py
    python -m grader.stubs --check   # exit 1 if any committed stub is stale
"""

from __future__ import annotations

import ast
import sys

from grader.compare import shape_text as _shape
from grader.exercises import EXERCISES, Exercise
from grader.execution import assigned_names
from grader.grading import first_reference
from grader.network import PARAMETER_NAMES, forward_source


def header(exercise: Exercise) -> list[str]:
    """The stub's opening comments: the task, what is in scope, and the forward pass with shapes."""
    ref = first_reference(exercise)
    sizes = ref.sizes
    tensors = {n: t for n, t in ref.tensors.items() if exercise.scope is None or n in exercise.scope}
    out = [f"# {exercise.title}", "#"]
    out += [f"# {line}" if line else "#" for line in exercise.task.splitlines()]
    out += [
        "#",
        "# Check your work at any time (blank lines are reported as `blank`):",
        "#",
        f"#     grade exercises/{exercise.slug}.py",
        "#",
    ]
    if exercise.kind == "lines" and len(exercise.targets) > 1:
        out += [
            "# Each line is graded on its own: the grader feeds it the correct gradients",
            "# of the lines above it, so one mistake does not spoil the rest.",
        ]
    out += [
        "# Autograd is off while your code runs: write every gradient by hand.",
        "#",
        "# In scope (the grader runs the forward pass and provides them):",
        "#   torch, F (torch.nn.functional)",
        f"#   sizes: n = batch_size = {sizes['batch_size']}, vocab_size = {sizes['vocab_size']}, "
        f"block_size = {sizes['block_size']}, n_embd = {sizes['n_embd']}, n_hidden = {sizes['n_hidden']}",
        "#   (use these names: your code is also graded at other sizes)" if len(exercise.configs) > 1
        else "#   (use these names, not the numbers)",
        "#   parameters: " + ", ".join(f"{p} {_shape(tensors[p].shape)}" for p in PARAMETER_NAMES),
        f"#   the batch: Xb {_shape(tensors['Xb'].shape)} and Yb {_shape(tensors['Yb'].shape)}, character indices",
    ]
    for name in exercise.given:
        out.append(f"#   given: {name} {_shape(ref.gradients[name[1:]].shape)}, the correct gradient of `{name[1:]}`")
    out += ["#   every tensor of the forward pass that is assigned below:", "#"]
    out += [f"#   {line}".rstrip() for line in forward_block(exercise)]
    return out + [""]


def forward_block(exercise: Exercise) -> list[str]:
    """The exercise's forward pass as the student sees it: the lines in scope, each with its shape."""
    ref = first_reference(exercise)
    tensors = {n: t for n, t in ref.tensors.items() if exercise.scope is None or n in exercise.scope}
    out = []
    lines = [
        line for line in forward_source(exercise.forward)
        if exercise.scope is None or line.split("=")[0].strip() in exercise.scope or line.lstrip().startswith("#")
    ]
    if exercise.scope_note:
        lines.append(exercise.scope_note)
    width = max(len(line.split("  #")[0]) for line in lines)
    for line in lines:
        code, _, comment = line.partition("  #")
        stripped = code.strip()
        if stripped.startswith("#") or not stripped:
            out.append(line)
            continue
        target = stripped.split("=")[0].strip()
        shape = _shape(tensors[target].shape) if target in tensors else ""
        note = f"  # {' '.join(part for part in (shape, comment.strip()) if part)}"
        out.append(f"{code.ljust(width)}{note}".rstrip())
    return out


def generate(exercise: Exercise, solution: str | None = None) -> str:
    """The stub text for an exercise, made from its solution's source."""
    source = solution if solution is not None else exercise.solution_path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    by_start = {node.lineno: node for node in tree.body}
    inside: set[int] = set()
    for node in tree.body:
        inside.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))

    out = header(exercise)
    blanks = exercise.blanks or exercise.targets
    targets = set(blanks)
    for number, text in enumerate(lines, start=1):
        node = by_start.get(number)
        if node is not None:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.extend(lines[node.lineno - 1 : node.end_lineno])
            elif names := [t for t in blanks if t in assigned_names(node) & targets]:
                out.extend(f"{name} = ..." for name in names if f"{name} = ..." not in out)
            continue
        if number in inside:
            continue
        stripped = text.strip()
        if stripped.startswith("##"):
            out.append("# " + stripped.lstrip("#").strip())
        elif not stripped and out and out[-1] != "":
            out.append("")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def generate_notebook(exercise: Exercise, stub: str | None = None) -> str:
    """The stub as a notebook: an introduction, a setup cell, the forward pass, one tagged cell per
    section of gradients (the same blanks as the `.py` stub) and a final `check()`."""
    import nbformat

    from grader.notebooks import GRADIENT_TAG

    stub = stub if stub is not None else generate(exercise)
    body = stub.split("import torch.nn.functional as F\n", 1)[1]  # the gradient sections, after the imports
    sections = [part.strip("\n") for part in body.split("\n\n") if part.strip()]
    forward = "\n".join(forward_block(exercise))
    cells = [
        nbformat.v4.new_markdown_cell(
            f"# {exercise.title}\n\n{exercise.task}\n\nRun the setup cell, write each gradient in the cells tagged "
            f"`{GRADIENT_TAG}`, then run `check()` at the end. In a terminal, "
            f"`grade exercises/{exercise.slug}.ipynb` grades the same cells, also at other sizes."),
        nbformat.v4.new_code_cell(f"from grader import setup, check\n\nsetup({exercise.id!r})", metadata={"tags": ["setup"]}),
        nbformat.v4.new_markdown_cell("The forward pass has run; every tensor in it is in scope (shapes at the "
                                      "lecture's sizes):\n\n```python\n" + forward + "\n```"),
    ]
    cells += [nbformat.v4.new_code_cell(section, metadata={"tags": [GRADIENT_TAG]}) for section in sections]
    cells.append(nbformat.v4.new_code_cell("check()", metadata={"tags": ["check"]}))
    for number, cell in enumerate(cells):
        cell["id"] = f"{exercise.id}-{number:02d}"  # fixed ids: regenerating gives the same bytes
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def notebook_path(exercise: Exercise):
    return exercise.stub_path.with_suffix(".ipynb")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for exercise in EXERCISES:
        text = generate(exercise)
        for path, content in ((exercise.stub_path, text), (notebook_path(exercise), generate_notebook(exercise, text))):
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != content:
                stale.append(path)
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(content, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if check else 'wrote'}: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
