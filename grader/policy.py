"""What an answer may not use: autograd, the interpreter's internals, and library shortcuts.

The check is static, on the syntax tree of each statement, before anything runs.
It stops accidental and casual shortcuts (`logprobs.grad`, `loss.backward()`,
`F.cross_entropy` for a hand-written cross-entropy); it is not a sandbox. The
student's code also runs with autograd off, on detached tensors, so a shortcut
that slips past this check still finds no graph to differentiate.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Names and attributes that reach for autograd or into the interpreter.
AUTOGRAD = {
    "backward", "grad", "requires_grad", "requires_grad_", "retain_grad", "retains_grad", "autograd",
    "enable_grad", "set_grad_enabled", "grad_fn", "functorch", "vjp", "jvp", "jacobian",
    "data",  # `x.data` changes a tensor behind its version counter, which keeps lines apart
}
INTERPRETER = {"gc", "inspect", "_getframe", "ctypes", "__import__", "globals", "locals", "vars", "eval", "exec"}
# Library functions that do the exercise's work in one call; an exercise may allow some.
SHORTCUTS = {"softmax", "log_softmax", "cross_entropy", "nll_loss", "batch_norm", "layer_norm"}


@dataclass(frozen=True)
class Violation:
    policy: str  # "autograd" or "shortcut"
    line: int
    what: str

    def hint(self) -> str:
        if self.policy == "shortcut":
            return (f"line {self.line} calls `{self.what}`, which does this step for you; "
                    f"the exercise is to write it by hand")
        return (f"line {self.line} uses `{self.what}`: the exercise is to write the gradient by hand, "
                f"without autograd or the interpreter's internals")


def _words(node: ast.AST):
    """Every name, attribute and imported module a statement mentions, with its line."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            yield child.id, child.lineno
        elif isinstance(child, ast.Attribute):
            yield child.attr, child.lineno
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            for alias in child.names:
                yield alias.name.split(".")[0], child.lineno
                yield alias.name.split(".")[-1], child.lineno
            if isinstance(child, ast.ImportFrom) and child.module:
                for part in child.module.split("."):
                    yield part, child.lineno


def violation(node: ast.AST, allowed: tuple[str, ...] = ()) -> Violation | None:
    """The first thing a statement uses that an answer may not, or None."""
    for word, line in _words(node):
        if word in allowed:
            continue
        if word in AUTOGRAD or word in INTERPRETER:
            return Violation("autograd", line, word)
        if word in SHORTCUTS:
            return Violation("shortcut", line, word)
    return None
