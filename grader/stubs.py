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

from grader.exercises import EXERCISES, Exercise
from grader.execution import assigned_names
from grader.grading import first_reference
from grader.network import PARAMETER_NAMES, forward_source


def _shape(tensor) -> str:
    return "(" + ", ".join(str(s) for s in tensor.shape) + ("," if tensor.dim() == 1 else "") + ")"


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
        "#   (use these names: your code is also graded at other sizes)",
        "#   parameters: " + ", ".join(f"{p} {_shape(tensors[p])}" for p in PARAMETER_NAMES),
        f"#   the batch: Xb {_shape(tensors['Xb'])} and Yb {_shape(tensors['Yb'])}, character indices",
    ]
    for name in exercise.given:
        out.append(f"#   given: {name} {_shape(ref.gradients[name[1:]])}, the correct gradient of `{name[1:]}`")
    out += ["#   every tensor of the forward pass that is assigned below:", "#"]
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
            out.append(f"#   {line}".rstrip())
            continue
        target = stripped.split("=")[0].strip()
        shape = _shape(tensors[target]) if target in tensors else ""
        note = f"  # {' '.join(part for part in (shape, comment.strip()) if part)}"
        out.append(f"#   {code.ljust(width)}{note}".rstrip())
    return out + [""]


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


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for exercise in EXERCISES:
        text = generate(exercise)
        current = exercise.stub_path.read_text(encoding="utf-8") if exercise.stub_path.exists() else None
        if current != text:
            stale.append(exercise.stub_path)
            if not check:
                exercise.stub_path.parent.mkdir(parents=True, exist_ok=True)
                exercise.stub_path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if check else 'wrote'}: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
