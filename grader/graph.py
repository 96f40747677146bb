"""The forward pass as a graph of lines, for hints that need one operation's local derivative.

Each line of a forward pass (`bnraw = bndiff * bnvar_inv`) is one node: the tensor
it makes and the tensors it reads. From the same source the stubs show, this module
answers two questions a value hint needs:

- which lines *consume* a tensor (`bndiff` feeds `bnraw` and `bndiff2`), and
- the contribution of one consumer to a gradient: the vector-Jacobian product of
  that single line, with its other inputs held fixed, for a given upstream gradient.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grader.network import forward_source


@dataclass(frozen=True)
class Line:
    target: str  # the tensor the line makes
    expression: str  # its right-hand side
    reads: frozenset[str]  # the names it reads


@functools.lru_cache(maxsize=4)
def lines_of(forward_function) -> tuple[Line, ...]:
    """The assignment lines of a forward pass, in order."""
    lines = []
    for text in forward_source(forward_function):
        code = text.split("  #")[0].strip()
        if not code or code.startswith("#"):
            continue
        node = ast.parse(code).body[0]
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            reads = frozenset(n.id for n in ast.walk(node.value) if isinstance(n, ast.Name))
            lines.append(Line(node.targets[0].id, ast.unparse(node.value), reads))
    return tuple(lines)


def consumers(forward_function, tensor: str) -> list[Line]:
    """The lines that read `tensor`, in forward order."""
    return [line for line in lines_of(forward_function) if tensor in line.reads]


def contribution(line: Line, tensor: str, upstream: torch.Tensor, values: dict[str, object]) -> torch.Tensor:
    """d(line.target)/d(tensor) applied to `upstream`, every other input of the line held fixed."""
    leaf = values[tensor].detach().to(upstream.dtype).clone().requires_grad_(True)
    scope = {"torch": torch, "F": F, **values, tensor: leaf}
    with torch.enable_grad():
        out = eval(line.expression, scope)  # noqa: S307 - our own forward source, never student code
        # The vector-Jacobian product as the gradient of a sum: the same numbers, and unlike
        # `grad_outputs=` it does not import sympy (a fifth of a second) on first use.
        (grad,) = torch.autograd.grad((out * upstream.to(out.dtype)).sum(), leaf, allow_unused=True)
    return torch.zeros_like(leaf) if grad is None else grad.detach()
