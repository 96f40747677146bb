"""Guess a student's renamings of the lecture's names, to suggest a ready-to-paste `--names` mapping.

The strongest evidence is the student's own forward pass: its statements are aligned with
the lecture's (the same operations in the same order), and where an aligned statement uses
another name (`x_hat = xdiff * xvar_inv` against `bnraw = bndiff * bnvar_inv`), that name is
a renaming. A gradient is then `d` and its tensor's name in any of the usual spellings
(`dx_hat`, `d_x_hat`, `x_hat_grad`, `grad_x_hat`, `dL_dx_hat`). Names that look alike are the
weaker evidence. A name the lecture uses is never mapped, and never mapped onto.
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
from collections import Counter

from grader.network import forward, forward_fused, forward_source

# The lecture's statements around the forward pass: the batch and its size.
_SETUP = ["n = batch_size", "Xb, Yb = Xtr[ix], Ytr[ix]", "ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)"]


@functools.lru_cache(maxsize=1)
def lecture_statements() -> tuple[ast.stmt, ...]:
    """The lecture's statements around and in its forward passes, parsed once."""
    lines = _SETUP + forward_source(forward) + forward_source(forward_fused)
    return tuple(node for line in lines if line.strip() and not line.lstrip().startswith("#")
                 for node in ast.parse(line.split("  #")[0]).body)


def _shape(node: ast.AST) -> str:
    """A statement with every name blanked: two statements of the same shape do the same operations."""
    return re.sub(r"Name\('[^']*'", "Name('_'", ast.dump(node, annotate_fields=False))


@functools.lru_cache(maxsize=1)
def _lecture_shapes() -> list[str]:
    return [_shape(s) for s in lecture_statements()]


def _names_in_order(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def forward_renames(statements: list[ast.stmt], lecture_names: set[str]) -> dict[str, str]:
    """The student's names for the lecture's forward tensors and sizes, from aligned statements."""
    lecture = lecture_statements()
    theirs = [s for s in statements if isinstance(s, (ast.Assign, ast.AugAssign, ast.AnnAssign))]
    votes: Counter = Counter()
    matcher = difflib.SequenceMatcher(None, [_shape(s) for s in theirs], _lecture_shapes(), autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            for mine, its in zip(_names_in_order(theirs[a + k]), _names_in_order(lecture[b + k])):
                if mine != its and mine not in lecture_names and its in lecture_names:
                    votes[(mine, its)] += 1
    mapping: dict[str, str] = {}
    for (mine, its), _ in votes.most_common():
        if mine not in mapping and its not in mapping.values():
            mapping[mine] = its
    return mapping


_SPELLINGS = [r"d_?(?P<x>\w+)", r"(?P<x>\w+?)_?grad", r"grad_?(?P<x>\w+)", r"dL_?d_?(?P<x>\w+)",
              r"dloss_?d_?(?P<x>\w+)"]


def suggest(*, assigned: set[str], statements: list[ast.stmt], wanted: tuple[str, ...],
            lecture_names: set[str], reads: set[str], onto_assigned: bool = False) -> dict[str, str]:
    """old -> new: the student's names (`dx_hat`, `yb`) for the lecture's (`dbnraw`, `Yb`).
    `assigned`: every name the student's code binds; `wanted`: the gradient names not found;
    `reads`: the names the graded code reads (a renamed forward tensor matters only there);
    `onto_assigned`: a gradient may be suggested even where the student assigns it already (another
    exercise's `dlogits` for this exercise's `dlogits_fast`)."""
    forward_map = forward_renames(statements, lecture_names)
    out: dict[str, str] = {}
    taken = set() if onto_assigned else set(assigned)
    for old in sorted(assigned - lecture_names):
        target = None
        for pattern in _SPELLINGS:
            match = re.fullmatch(pattern, old)
            if match:
                tensor = forward_map.get(match["x"], match["x"])
                if "d" + tensor in wanted:
                    target = "d" + tensor
                    break
        if target is None and (old.startswith("d") or "grad" in old):
            squeezed = old.replace("_", "").lower()
            close = difflib.get_close_matches(squeezed, wanted, n=1, cutoff=0.75)
            target = close[0] if close else None
        if target and target not in taken and target not in out.values():
            out[old] = target
    for old, new in forward_map.items():
        if old in reads and old not in out and new not in taken:
            out[old] = new
    return out
