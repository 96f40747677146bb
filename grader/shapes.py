"""Shapes read off a student's line, to explain a crash that PyTorch words in its own terms.

"mat1 and mat2 shapes cannot be multiplied (32x27 and 64x27)" says nothing of which names were
multiplied. Knowing the shape of every forward tensor and gradient in scope, `shape_story`
follows the line's expression without running it (it is the student's code; the grader never
runs that) and names the first operation whose shapes do not fit, and what the result must be.
"""

from __future__ import annotations

import ast

from grader.compare import broadcast_shape, shape_text

CRASHES = ("cannot be multiplied", "must match the size of tensor", "size mismatch", "shape mismatch",
           "not broadcastable", "Expected size", "inconsistent tensor size")


class _Unknown(Exception):
    """A shape this reader cannot follow."""


class _Misfit(Exception):
    def __init__(self, story: str):
        self.story = story


def _int(node: ast.expr, sizes: dict[str, int]) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_int(node.operand, sizes)
    if isinstance(node, ast.Name) and node.id in sizes:
        return sizes[node.id]
    raise _Unknown


def _shape(node: ast.expr, shapes: dict[str, tuple[int, ...]], sizes: dict[str, int]) -> tuple[int, ...]:
    src = ast.unparse(node)
    if isinstance(node, ast.Name):
        if node.id in shapes:
            return shapes[node.id]
        if node.id in sizes:
            return ()
        raise _Unknown
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return ()
    if isinstance(node, ast.UnaryOp):
        return _shape(node.operand, shapes, sizes)
    if isinstance(node, ast.Attribute) and node.attr == "T":
        return tuple(reversed(_shape(node.value, shapes, sizes)))
    if isinstance(node, ast.BinOp):
        a, b = _shape(node.left, shapes, sizes), _shape(node.right, shapes, sizes)
        left, right = ast.unparse(node.left), ast.unparse(node.right)
        if isinstance(node.op, ast.MatMult):
            if len(a) == 2 and len(b) == 2:
                if a[1] != b[0]:
                    raise _Misfit(f"`{src}` multiplies `{left}`, {shape_text(a)}, by `{right}`, {shape_text(b)}: "
                                  f"the inner sizes ({a[1]} and {b[0]}) must be equal; transpose an operand or swap "
                                  f"the order of the operands, as the shapes decide")
                return (a[0], b[1])
            raise _Unknown
        out = broadcast_shape(a, b)
        if out is None:
            raise _Misfit(f"`{left}`, {shape_text(a)}, and `{right}`, {shape_text(b)}, do not broadcast together "
                          f"in `{src}`: sizes must be equal or 1, aligned from the right (`keepdim=True` keeps a "
                          f"summed axis in place)")
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method, receiver = node.func.attr, node.func.value
        if method in ("sum", "mean") and not (ast.unparse(receiver) in ("torch", "F")):
            shape = _shape(receiver, shapes, sizes)
            keywords = {k.arg: k.value for k in node.keywords}
            dim = node.args[0] if node.args else keywords.get("dim")
            keep = any(isinstance(keywords.get(k), ast.Constant) and keywords[k].value for k in ("keepdim", "keepdims"))
            if dim is None:
                return ()
            d = _int(dim, sizes) % len(shape)
            return tuple(1 if i == d else s for i, s in enumerate(shape)) if keep else shape[:d] + shape[d + 1:]
        if method in ("clone", "exp", "log", "float", "detach", "abs", "sqrt", "tanh", "contiguous"):
            return _shape(receiver, shapes, sizes)
        if ast.unparse(receiver) == "torch" and method in ("ones_like", "zeros_like", "tanh", "exp", "log", "cosh"):
            return _shape(node.args[0], shapes, sizes)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("F.softmax", "F.log_softmax", "torch.softmax"):
        return _shape(node.args[0], shapes, sizes)
    raise _Unknown


def shape_story(statement: ast.stmt, shapes: dict[str, tuple[int, ...]], sizes: dict[str, int],
                target: str | None = None, expected: tuple[int, ...] | None = None) -> str | None:
    """The first operation of a statement whose shapes do not fit, in words, or None."""
    value = getattr(statement, "value", None)
    if value is None:
        return None
    try:
        _shape(value, shapes, sizes)
    except _Misfit as misfit:
        need = f". `{target}` must be {shape_text(expected)}, like `{target[1:]}`" if target and expected else ""
        return misfit.story + need
    except (_Unknown, IndexError, ZeroDivisionError, RecursionError):
        return None
    return None
