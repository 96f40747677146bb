"""The error model: name a wrong gradient's mistake by finding the small edit of a right formula
that reproduces it.

A right formula comes from the forward pass itself. For each line that reads a tensor
(`probs = counts * counts_sum_inv` reads `counts`), `terms` writes the vector-Jacobian
product of that line as a Python expression in the lecture's names (`counts_sum_inv * dprobs`),
from a few rules per operation (a product, a matrix product, a broadcast undone by a sum, a
power, `tanh`, `exp`, `log`, a mean, an index, a view, `F.cross_entropy`, ...). A gradient is
the sum of those terms. Where an exercise asks for a gradient in one go (exercise 3 gives
`dhpreact` and asks for `dhprebn`), the upstream gradients in the terms are replaced by their own
formulas until only given names are left; so any exercise over these operations, including one
added later, gets its formulas without a list written per gradient.

`explain` then edits the formula the ways students slip (a transpose added or dropped, the
operands of `@` swapped, a sum over another dim or none, a sign, a constant factor, n for n-1,
a power rule off by one, a forward tensor or an upstream gradient swapped for another of the same
shape, one path or term dropped, ...), evaluates each edit on the reference's values, and keeps
the first that gives the student's value at every configuration they were run at and on the
random upstream gradients of the probe. Each edit carries the sentence that says the mistake in
words. It runs only for failing lines, in the grader's process, on decoded values: never on
student code.
"""

from __future__ import annotations

import ast
import copy
import functools
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from grader.compare import ATOL, RTOL
from grader.graph import Line, lines_of
from grader.network import PARAMETER_NAMES

# Sizes in the order a formula should name them when two share a value.
SIZE_NAMES = ("n", "vocab_size", "n_hidden", "n_embd", "block_size")
# Factors a gradient is classically off by: (label, source).
FACTORS = (("n", "n"), ("1/n", "1 / n"), ("2", "2"), ("1/2", "0.5"), ("n-1", "(n - 1)"),
           ("1/(n-1)", "1 / (n - 1)"), ("(n-1)/n", "(n - 1) / n"), ("n/(n-1)", "n / (n - 1)"))
# One path or one side of a formula, as a simplified formula gets them (an inverted n/(n-1)) ...
PATH_FACTORS = FACTORS + (("((n-1)/n)²", "((n - 1) / n) ** 2"), ("(n/(n-1))²", "(n / (n - 1)) ** 2"))
# ... and the whole gradient (the mean's 1/n twice, or not at all).
WHOLE_FACTORS = FACTORS + (("n²", "n * n"), ("1/n²", "1 / (n * n)"))
# The order edits are tried in: a name put in by mistake says the most, a factor the least.
PRIORITY = ("tensor", "index", "transpose", "swap", "dim", "sum", "accumulate", "n", "power", "sign", "term", "factor")


# --- the right formulas ---


def _src(node: ast.AST) -> str:
    return ast.unparse(node)


class _Deriver:
    """Vector-Jacobian products of one forward pass's lines, as source text, using the lecture's
    values (`values`) only to learn shapes."""

    def __init__(self, values: dict[str, object]):
        self.values = values
        self.scope = {"torch": torch, "F": F, **values}
        # A gradient has its tensor's shape: enough to follow a formula's shapes.
        self.scope.update({"d" + k: v for k, v in values.items() if isinstance(v, torch.Tensor)
                           and "d" + k not in self.scope})

    @functools.lru_cache(maxsize=None)  # noqa: B019 - one deriver per forward pass, kept for the process
    def shape(self, text: str) -> tuple[int, ...]:
        with torch.no_grad():
            value = eval(text, self.scope)  # noqa: S307 - the forward pass's own subexpressions
        return tuple(value.shape) if isinstance(value, torch.Tensor) else ()

    def size(self, value: int) -> str:
        """The name of a size with this value (`n`), or the number."""
        for name in SIZE_NAMES:
            if self.values.get(name) == value:
                return name
        return str(value)

    def unbroadcast(self, g: str, gshape: tuple[int, ...], xshape: tuple[int, ...]) -> str:
        """Sum `g` back to the shape of a tensor the forward pass broadcast to `gshape`."""
        extra = len(gshape) - len(xshape)
        for _ in range(extra):
            g = f"({g}).sum(0)"
        for d, (gs, xs) in enumerate(zip(gshape[extra:], xshape)):
            if xs == 1 and gs != 1:
                g = f"({g}).sum({d}, keepdim=True)"
        return g

    def vjp(self, node: ast.expr, tensor: str, g: str, out: str | None, scalar: bool = False) -> list[str]:
        """The contributions of every occurrence of `tensor` in `node` to its gradient, for an
        upstream gradient `g` of `node`'s value (`scalar`: one number for every entry); `out` names
        `node`'s value when it has a name."""
        if isinstance(node, ast.Name):
            return [g] if node.id == tensor else []
        if tensor not in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
            return []
        here = self.shape(_src(node))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return self.vjp(node.operand, tensor, f"(-{g})", None, scalar)
        if isinstance(node, ast.BinOp):
            left, right = _src(node.left), _src(node.right)
            lshape, rshape = self.shape(left), self.shape(right)
            terms = []
            if isinstance(node.op, (ast.Add, ast.Sub)):
                terms += self.vjp(node.left, tensor, self.unbroadcast(g, here, lshape), None)
                neg = f"(-{g})" if isinstance(node.op, ast.Sub) else g
                terms += self.vjp(node.right, tensor, self.unbroadcast(neg, here, rshape), None)
            elif isinstance(node.op, ast.Mult):
                terms += self.vjp(node.left, tensor, self.unbroadcast(f"({right}) * {g}", here, lshape), None)
                terms += self.vjp(node.right, tensor, self.unbroadcast(f"({left}) * {g}", here, rshape), None)
            elif isinstance(node.op, ast.Div):
                terms += self.vjp(node.left, tensor, self.unbroadcast(f"{g} / ({right})", here, lshape), None)
                terms += self.vjp(node.right, tensor, self.unbroadcast(
                    f"(-({left}) / ({right})**2) * {g}", here, rshape), None)
            elif isinstance(node.op, ast.Pow) and _constant(node.right) is not None:
                p = _constant(node.right)
                terms += self.vjp(node.left, tensor, self.unbroadcast(
                    f"({p} * ({left})**{_number(p - 1)}) * {g}", here, lshape), None)
            elif isinstance(node.op, ast.MatMult):
                terms += self.vjp(node.left, tensor, f"{g} @ ({right}).T", None)
                terms += self.vjp(node.right, tensor, f"({left}).T @ {g}", None)
            else:
                raise NotImplementedError(_src(node))
            return terms
        if isinstance(node, ast.Call):
            func = node.func
            if _src(func) == "torch.tanh":
                a = node.args[0]
                local = f"(1 - {out}**2)" if out else f"(1 - torch.tanh({_src(a)})**2)"
                return self.vjp(a, tensor, f"{local} * {g}", None)
            if _src(func) == "F.cross_entropy":
                logits, labels = node.args[0], _src(node.args[1])
                n, k = self.shape(_src(logits))
                local = f"(F.softmax({_src(logits)}, 1) - F.one_hot({labels}, {self.size(k)})) / {self.size(n)}"
                return self.vjp(logits, tensor, local if g == "1.0" else f"{local} * {g}", None)
            if isinstance(func, ast.Attribute):
                receiver, method = func.value, func.attr
                r = _src(receiver)
                rshape = self.shape(r)
                keyword = {k.arg: k.value for k in node.keywords}
                keep = any(isinstance(keyword.get(k), ast.Constant) and keyword[k].value for k in ("keepdim", "keepdims"))
                if method == "exp":
                    return self.vjp(receiver, tensor, f"{out or _src(node)} * {g}", None)
                if method == "log":
                    return self.vjp(receiver, tensor, f"{g} / {r}", None)
                if method in ("sum", "mean"):
                    dims = [a.value for a in node.args]
                    count = 1
                    for d in dims or range(len(rshape)):
                        count *= rshape[d]
                    spread = g if keep or scalar or not dims else f"({g}).unsqueeze({dims[0]})"
                    local = spread if scalar else f"torch.ones_like({r}) * {spread}"
                    if method == "mean":
                        local = f"{local} / {self.size(count)}"
                    return self.vjp(receiver, tensor, local, None, scalar)
                if method == "var":
                    d = node.args[0].value
                    correction = "" if isinstance(keyword.get("unbiased"), ast.Constant) and not keyword["unbiased"].value \
                        else " - 1"
                    count = self.size(rshape[d])
                    local = f"2 * ({r} - {r}.mean({d}, keepdim=True)) / ({count}{correction}) * {g}"
                    return self.vjp(receiver, tensor, local, None)
                if method == "view":
                    return self.vjp(receiver, tensor, f"({g}).view({r}.shape)", None)
            raise NotImplementedError(_src(node))
        if isinstance(node, ast.Attribute) and node.attr == "values" and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr in ("max", "min"):
            call = node.value
            receiver, d = call.func.value, call.args[0].value
            r = _src(receiver)
            k = self.size(self.shape(r)[d])
            local = f"F.one_hot({r}.{call.func.attr}({d}).indices, num_classes={k}) * {g}"
            return self.vjp(receiver, tensor, local, None)
        if isinstance(node, ast.Subscript):
            value, index = node.value, node.slice
            v = _src(value)
            vshape = self.shape(v)
            if isinstance(index, ast.Tuple) and len(index.elts) == 2:  # x[range(n), Yb]: one entry per row
                labels = _src(index.elts[1])
                spread = g if scalar else f"({g}).unsqueeze(1)"
                return self.vjp(value, tensor, f"F.one_hot({labels}, {self.size(vshape[1])}) * {spread}", None)
            rows = _src(index)
            local = f"torch.zeros_like({v}).index_add_(0, {rows}.view(-1), ({g}).view(-1, {self.size(vshape[1])}))"
            return self.vjp(value, tensor, local, None)
        raise NotImplementedError(_src(node))


def _constant(node: ast.expr) -> float | None:
    """The number a constant expression (`2`, `-0.5`) stands for, else None."""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class Term:
    """One path of a gradient: the contribution of one forward line (`line`) to `tensor`'s gradient."""

    line: Line
    tensor: str
    expression: ast.expr


def _tag(node: ast.AST, line: Line, tensor: str) -> ast.AST:
    """Mark every node of a term with the forward line it came from (kept through copies)."""
    for inner in ast.walk(node):
        inner.origin = (line, tensor)
    return node


def _deriver(forward_function, values) -> _Deriver:
    key = id(forward_function)
    if key not in _DERIVERS:
        _DERIVERS[key] = (forward_function, _Deriver(values))
    return _DERIVERS[key][1]


_DERIVERS: dict = {}


def terms(forward_function, tensor: str, values: dict, given: frozenset[str] = frozenset(),
          inline: bool = False) -> list[Term]:
    """The paths of `tensor`'s gradient, one per forward line that reads it. With `inline`, every
    upstream gradient not in `given` is replaced by its own formula (the loss's is 1). `values`
    only shows shapes; the formulas hold at every size."""
    key = (id(forward_function), tensor, given, inline)
    if key not in _TERMS:
        _TERMS[key] = _terms(forward_function, tensor, values, given, inline)
    return _TERMS[key]


_TERMS: dict = {}


def _terms(forward_function, tensor: str, values: dict, given: frozenset[str], inline: bool) -> list[Term]:
    deriver = _deriver(forward_function, values)
    lines = lines_of(forward_function)
    last = lines[-1].target
    out = []
    for line in lines:
        if tensor not in line.reads:
            continue
        g = "1.0" if line.target == last else f"d{line.target}"
        node = ast.parse(line.expression, mode="eval").body
        named = line.target if _names_its_value(node) else None
        for text in deriver.vjp(node, tensor, g, named, scalar=line.target == last):
            expression = _tag(ast.parse(text, mode="eval").body, line, tensor)
            if inline:
                expression = _inlined(forward_function, expression, values, given)
            out.append(Term(line, tensor, expression))
    return out


def _names_its_value(node: ast.expr) -> bool:
    """Whether a line's output can stand for its value in a local derivative (`h` for `tanh`)."""
    return isinstance(node, ast.Call)


def _inlined(forward_function, expression: ast.expr, values: dict, given: frozenset[str]) -> ast.expr:
    class Substitute(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id.startswith("d") and node.id[1:] in values and node.id not in given:
                parts = terms(forward_function, node.id[1:], values, given, inline=True)
                return _sum([p.expression for p in parts]) if parts else node
            return node

    return Substitute().visit(expression)


def _sum(expressions: list[ast.expr]) -> ast.expr:
    total = expressions[0]
    for other in expressions[1:]:
        total = ast.BinOp(total, ast.Add(), other)
    return total


# --- edits ---


@dataclass(frozen=True)
class Edit:
    """A wrong formula and the sentence that names its mistake."""

    expression: ast.expr
    says: str
    kind: str


def _line_text(line: Line) -> str:
    return f"`{line.target} = {line.expression}`"


def _origin(node: ast.AST, fallback: Term) -> tuple[Line, str]:
    return getattr(node, "origin", (fallback.line, fallback.tensor))


def _replace_at(root: ast.expr, index: int, make) -> ast.expr:
    """A copy of `root` with its `index`-th node (in `ast.walk` order) replaced by `make(node)`."""
    root = copy.deepcopy(root)
    nodes = list(ast.walk(root))
    target = nodes[index]
    new = make(target)
    if target is root:
        return new
    for parent in nodes:
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, new)
                return root
            if isinstance(value, list) and any(v is target for v in value):
                value[:] = [new if v is target else v for v in value]
                return root
    raise AssertionError("a node without a parent")


def _is_n(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "n"


def _is_n_minus_1(node: ast.AST) -> bool:
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and _is_n(node.left)
            and isinstance(node.right, ast.Constant) and node.right.value == 1)


def _where(dim: int) -> str:
    return {0: "the batch (dim 0)", 1: "the columns (dim 1)"}.get(dim, f"dim {dim}")


def _other_dims(root: ast.expr, index: int, position: int, ndim: int) -> Iterator[tuple[int, ast.expr]]:
    """The call at `index` with its dim argument (at `position`) changed to each other dim."""
    dim = list(ast.walk(root))[index].args[position].value
    for other in range(ndim):
        if other != dim:
            def redim(n, o=other):
                n.args[position] = ast.Constant(o)
                return n
            yield other, _replace_at(root, index, redim)


def _term_edits(term: Term, name: str, context: "_Context", reads: set[str] | None, several_paths: bool
                ) -> Iterator[tuple[ast.expr, str, str]]:
    """Small edits inside one path's formula (`several_paths`: one of several): (edited formula,
    sentence, kind)."""
    root = term.expression
    for index, node in enumerate(ast.walk(root)):
        line, tensor = _origin(node, term)
        where = _line_text(line)
        if isinstance(node, ast.Name) and node.id in context.swaps:
            # Only a name the student's line reads can have been put in by mistake.
            for other in (o for o in context.swaps[node.id] if o in (reads or ())):
                swapped = _replace_at(root, index, lambda n, o=other: ast.Name(o, ast.Load()))
                if node.id.startswith("d"):
                    says = (f"your `{name}` uses `{other}` where the chain rule through {where} needs `{node.id}`, "
                            f"the gradient of `{node.id[1:]}`")
                else:
                    says = f"your `{name}` uses `{other}` where the gradient of {where} needs `{node.id}`"
                yield swapped, says, "tensor"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            for side in ("left", "right"):
                operand = getattr(node, side)
                if isinstance(operand, ast.Attribute) and operand.attr == "T":
                    plain = _src(operand.value)

                    def untransposed(n, s=side):
                        setattr(n, s, getattr(n, s).value)
                        return n
                    yield (_replace_at(root, index, untransposed),
                           f"your `{name}` uses `{plain}` without the transpose that the gradient of {where} needs "
                           f"(let the shapes decide which factor is transposed)", "transpose")
                else:
                    def transposed(n, s=side):
                        setattr(n, s, ast.Attribute(getattr(n, s), "T", ast.Load()))
                        return n
                    yield (_replace_at(root, index, transposed),
                           f"your `{name}` transposes `{_src(operand)}`, which the gradient of {where} uses as it is "
                           f"(let the shapes decide which factor is transposed)", "transpose")

            def swapped_operands(n):
                n.left, n.right = n.right, n.left
                return n
            yield (_replace_at(root, index, swapped_operands),
                   f"your `{name}` multiplies `{_src(node.left)}` and `{_src(node.right)}` the other way round: "
                   f"in the gradient of {where} the order of the operands of `@` matters", "swap")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sum" \
                and node.args and isinstance(node.args[0], ast.Constant):
            dim = node.args[0].value
            for other, edited in _other_dims(root, index, 0, len(context.shape(_src(node.func.value)))):
                yield (edited, f"you summed over dim {other}; `{tensor}` was broadcast over {_where(dim)} in {where}, "
                               f"so sum over dim {dim}", "dim")
            yield (_replace_at(root, index, lambda n: n.func.value),
                   f"the sum over dim {dim} is missing: `{tensor}` was broadcast over {_where(dim)} in {where}, "
                   f"so its gradient sums over dim {dim}", "sum")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            yield (_replace_at(root, index, lambda n: n.operand),
                   f"a sign is wrong in your `{name}`: the minus sign from {where} is missing", "sign")
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and context.has_tensor(node):
            flipped = ast.Add() if isinstance(node.op, ast.Sub) else ast.Sub()

            def flip(n, op=flipped):
                n.op = op
                return n

            def negate_left(n):
                n.left = ast.UnaryOp(ast.USub(), n.left)
                return n
            # (A constant with the wrong sign is no mistake a student makes: `bnvar + 1e-5` dropped is.)
            if _constant(node.right) is None:
                yield (_replace_at(root, index, flip),
                       f"a sign is wrong in your `{name}`: `{_src(node.right)}` enters the gradient of {where} with "
                       f"the opposite sign", "sign")
            if _constant(node.left) is None:
                yield (_replace_at(root, index, negate_left),
                       f"a sign is wrong in your `{name}`: `{_src(node.left)}` enters the gradient of {where} with "
                       f"the opposite sign", "sign")
            for kept, dropped in (("left", node.right), ("right", node.left)):
                minus = kept == "right" and isinstance(node.op, ast.Sub)
                yield (_replace_at(root, index, lambda n, k=kept, m=minus: ast.UnaryOp(ast.USub(), getattr(n, k))
                                   if m else getattr(n, k)),
                       f"your `{name}` leaves out the term `{_src(dropped)}` of the gradient of {where}", "term")
            for side in ("left", "right"):
                for label, factor in PATH_FACTORS:
                    def scale(n, s=side, f=factor):
                        setattr(n, s, ast.BinOp(ast.parse(f, mode="eval").body, ast.Mult(), getattr(n, s)))
                        return n
                    yield (_replace_at(root, index, scale),
                           f"in your `{name}`, `{_src(getattr(node, side))}` is {label} times what it should be in the "
                           f"gradient of {where}: a constant factor is off", "factor")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            for kept, dropped in (("left", node.right), ("right", node.left)):
                if _constant(dropped) is not None:
                    continue  # a constant dropped is the whole gradient off by a factor or a sign: said below
                if isinstance(dropped, ast.Name) and dropped.id.startswith("d") and dropped.id[1:] in context.values:
                    says = (f"your `{name}` is only the local derivative of {where}: by the chain rule it is "
                            f"multiplied by the upstream gradient `{dropped.id}`")
                else:
                    says = f"your `{name}` misses the factor `{_src(dropped)}` of the gradient of {where}"
                yield _replace_at(root, index, lambda n, k=kept: getattr(n, k)), says, "factor"
        if _is_n_minus_1(node):
            bessel = line.target in context.variances
            says = (f"your `{name}` matches the variance with 1/n: the forward pass divides by n-1 "
                    f"(Bessel's correction, {where})" if bessel else
                    f"your `{name}` uses n where {where} has n-1")
            yield _replace_at(root, index, lambda n: ast.Name("n", ast.Load())), says, "n"
        elif _is_n(node):
            yield (_replace_at(root, index, lambda n: ast.BinOp(ast.Name("n", ast.Load()), ast.Sub(), ast.Constant(1))),
                   f"your `{name}` uses n-1 where {where} divides by n (only a variance with Bessel's correction "
                   f"divides by n-1)", "n")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _constant(node.right) == 2 \
                and isinstance(node.left, ast.Name) and node.left.id in context.swaps:
            for other in (o for o in context.swaps[node.left.id] if o in (reads or ())):
                yield (_replace_at(root, index, lambda n, o=other: ast.BinOp(n.left, ast.Mult(), ast.Name(o, ast.Load()))),
                       f"your `{name}` uses `{other}` where the gradient of {where} needs `{node.left.id}`", "tensor")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _constant(node.right) is not None:
            p = _constant(node.right)
            for q in (p + 1, p - 1):
                def repower(n, q=q):
                    n.right = ast.Constant(q)
                    return n
                yield (_replace_at(root, index, repower),
                       f"the exponent in your `{name}` is off by one: the power rule takes x**p to p*x**(p-1) "
                       f"({where})", "power")
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool) \
                and node.value not in (0, 1) and several_paths and not context.is_argument(root, index):
            # (With one path, a constant off is the whole gradient off by a factor: said below.)
            for label, value in (("doubled", node.value * 2), ("halved", node.value / 2)):
                yield (_replace_at(root, index, lambda n, v=value: ast.Constant(v)),
                       f"in your `{name}`, the factor {_number(node.value)} in the path through `{line.target}` is "
                       f"{label}: a constant factor is off (the power rule gives p*x**(p-1))", "factor")
        if isinstance(node, ast.Attribute) and node.attr == "indices" and isinstance(node.value, ast.Call):
            call = node.value
            if isinstance(call.func, ast.Attribute) and call.func.attr in ("max", "min"):
                other = "min" if call.func.attr == "max" else "max"

                def remethod(n, o=other):
                    n.value.func.attr = o
                    return n
                yield (_replace_at(root, index, remethod),
                       f"your `{name}` takes the positions of the {'minima' if other == 'min' else 'maxima'} where "
                       f"{where} picks the {'maxima' if other == 'min' else 'minima'}", "index")
                for labels in context.index_names(_src(node)):
                    yield (_replace_at(root, index, lambda n, o=labels: ast.Name(o, ast.Load())),
                           f"your `{name}` picks the entries at `{labels}` where {where} picks each row's maximum",
                           "index")
        if isinstance(node, ast.Call) and _src(node.func) in ("F.softmax", "F.log_softmax") and len(node.args) == 2 \
                and isinstance(node.args[1], ast.Constant):
            dim = node.args[1].value
            for other, edited in _other_dims(root, index, 1, len(context.shape(_src(node.args[0])))):
                yield (edited, f"your `{name}` takes the softmax over dim {other}; in {where} each example's row is "
                               f"normalised, over dim {dim}", "dim")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "index_add_":
            def overwrite(n):
                n.func.attr = "index_copy_"
                return n
            yield (_replace_at(root, index, overwrite),
                   f"your `{name}` overwrites where it must accumulate: {where} reads some rows several times, "
                   f"and each use adds its gradient (+=)", "accumulate")


class _Renamed(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node):
        return ast.Name(self.new, ast.Load()) if node.id == self.old else node


class _Context:
    """What edits need to know: shapes, which names could be swapped for which, and which lines of
    the forward pass are a variance (where an n-1 is Bessel's)."""

    def __init__(self, forward_function, deriver: _Deriver, scope_names: set[str]):
        self.values = deriver.values
        self.shape = deriver.shape
        self.variances = _variances(lines_of(forward_function))
        tensors = {k for k, v in self.values.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                   and k in scope_names and not (k.startswith("d") and k[1:] in self.values)}
        # Any other tensor could have been put in by mistake (the names the student's line reads
        # narrow it down); one of the same shape first.
        self.swaps: dict[str, list[str]] = {}
        for name in tensors:
            shape = tuple(self.values[name].shape)
            group = sorted((o for o in tensors if o != name), key=lambda o: (tuple(self.values[o].shape) != shape, o))
            self.swaps[name] = group
            self.swaps["d" + name] = ["d" + o for o in group]
        self.int_names = sorted(k for k, v in self.values.items() if isinstance(v, torch.Tensor)
                                and not v.is_floating_point() and k in scope_names)

    def has_tensor(self, node: ast.AST) -> bool:
        """Whether an expression reads a tensor (`1 - h**2` does; `n - 1` does not)."""
        return any(isinstance(n, ast.Name) and (isinstance(self.values.get(n.id), torch.Tensor) or n.id.startswith("d"))
                   for n in ast.walk(node))

    def index_names(self, text: str) -> list[str]:
        shape = self.shape(text)
        return [k for k in self.int_names if tuple(self.values[k].shape) == shape]

    @staticmethod
    def is_argument(root: ast.expr, index: int) -> bool:
        """Whether the `index`-th node is an argument of a call (a dim, a class count): not a factor."""
        target = list(ast.walk(root))[index]
        for parent in ast.walk(root):
            if isinstance(parent, ast.Call) and (any(a is target for a in parent.args)
                                                 or any(k.value is target for k in parent.keywords)):
                return True
        return False


def _variances(lines: tuple[Line, ...]) -> frozenset[str]:
    """The lines that compute a variance: a `.var(...)`, or a sum of squares divided by n-1."""
    squares = {line.target for line in lines
               if isinstance(node := ast.parse(line.expression, mode="eval").body, ast.BinOp)
               and isinstance(node.op, ast.Pow) and _constant(node.right) == 2}
    return frozenset(line.target for line in lines if ".var(" in line.expression or (
        line.reads & squares and any(_is_n_minus_1(n) for n in ast.walk(ast.parse(line.expression)))))


def _through_variance(term: Term, context: "_Context") -> bool:
    """Whether a path's formula holds the n-1 of a variance (Bessel's), not some other n-1."""
    return any(_is_n_minus_1(node) and _origin(node, term)[0].target in context.variances
               for node in ast.walk(term.expression))


def edits(formula: list[Term], name: str, context: _Context, reads: set[str] | None = None,
          inlined: bool = False) -> Iterator[Edit]:
    """Every small edit of a gradient's formula, most specific first; the whole formula's sign and
    classic factors last. `reads`: the names the student's lines read, when known; `inlined`:
    whether the formula inlines upstream paths (a student's own is then a simplified one)."""
    expressions = [t.expression for t in formula]
    found = [(PRIORITY.index(kind), i, edited, says, kind) for i, term in enumerate(formula)
             for edited, says, kind in _term_edits(term, name, context, reads, len(formula) > 1)]
    found.sort(key=lambda item: item[:2])
    for _, i, edited, says, kind in found:
        yield Edit(_sum(expressions[:i] + [edited] + expressions[i + 1:]), says, kind)
    if len(formula) > 1:
        for i, term in enumerate(formula):
            for label, factor in PATH_FACTORS:
                scaled = ast.BinOp(ast.parse(factor, mode="eval").body, ast.Mult(), term.expression)
                variance = _through_variance(term, context)
                why = (" (the variance's Bessel correction divides by n-1: check that n/(n-1) is there, "
                       "the right way up)" if variance and "n-1" in label else "")
                yield Edit(_sum(expressions[:i] + [scaled] + expressions[i + 1:]),
                           f"in your `{name}`, the path through `{term.line.target}` is {label} times what it should "
                           f"be: a constant factor is off{why}", "factor")
        for i, term in enumerate(formula):
            kept = [t for t in formula if t is not term]
            have = " and ".join(f"`{t.line.target}`" for t in kept)
            yield Edit(_sum([t.expression for t in kept]),
                       f"your `{name}` has the path through {have} but not the one through `{term.line.target}`: "
                       f"`{term.tensor}` is used in both, so its gradient is the sum of both paths", "path")
            yield Edit(_sum(expressions[:i] + [ast.UnaryOp(ast.USub(), term.expression)] + expressions[i + 1:]),
                       f"the path through `{term.line.target}` has the wrong sign in your `{name}`", "sign")
    whole = _sum(expressions)
    # A name put in by mistake wherever it occurs (in a formula that inlines a path several times).
    names = sorted({n.id for n in ast.walk(whole) if isinstance(n, ast.Name)} & set(context.swaps))
    for old in names:
        if sum(isinstance(n, ast.Name) and n.id == old for n in ast.walk(whole)) < 2:
            continue
        for other in (o for o in context.swaps[old] if o in (reads or ())):
            renamed = _Renamed(old, other).visit(copy.deepcopy(whole))
            yield Edit(renamed, f"your `{name}` uses `{other}` where its formula needs `{old}`", "tensor")
    # A factor put in for another wherever a student's own simplified formula (of an inlined chain,
    # as in exercise 3) has it once.
    present = {n.id for n in ast.walk(whole) if isinstance(n, ast.Name)}
    for old in sorted(k for k in context.swaps if not k.startswith("d") and k in present and inlined):
        for other in (o for o in context.swaps[old] if o in (reads or ()) and tuple(
                context.values[o].shape) == tuple(context.values[old].shape)):
            ratio = ast.BinOp(ast.Name(other, ast.Load()), ast.Div(), ast.Name(old, ast.Load()))
            yield Edit(ast.BinOp(ratio, ast.Mult(), whole),
                       f"your `{name}` uses `{other}` where its formula needs `{old}`", "tensor")
    yield Edit(ast.UnaryOp(ast.USub(), whole), f"your `{name}` has the right size but the opposite sign", "sign")
    bessel = any(_through_variance(term, context) for term in formula)
    has_n_minus_1 = any(_is_n_minus_1(node) for node in ast.walk(whole))
    for label, factor in WHOLE_FACTORS:
        scaled = ast.BinOp(ast.parse(factor, mode="eval").body, ast.Mult(), whole)
        if label in ("n/(n-1)", "1/(n-1)"):
            why = (": it divides by n-1 where n belongs (only the variance divides by n-1)" if bessel else
                   ": it divides by n-1 where n belongs (there is no variance here)" if not has_n_minus_1 else "")
        elif "n-1" in label:
            why = (": it divides by n where n-1 belongs, or multiplies by n-1: Bessel's correction, the variance "
                   "divides by n-1" if bessel else
                   ": there is no n-1 in this gradient (no variance here)" if not has_n_minus_1 else "")
        elif label in ("n", "1/n", "n²", "1/n²"):
            why = ": the loss is a mean over the n examples of the batch, which puts one 1/n in every gradient"
        else:
            why = ""
        yield Edit(scaled, f"your `{name}` is {label} times the right gradient{why}", "factor")


# --- matching ---


@dataclass(frozen=True)
class Observation:
    """The student's value of a gradient at one point: the values in scope there, and what came back."""

    scope: dict[str, object]
    got: torch.Tensor


def _close(got: torch.Tensor, want: torch.Tensor, scale: float) -> bool:
    return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale + 1e-12))


def _evaluate(code, scope: dict) -> torch.Tensor | None:
    try:
        with torch.no_grad():
            value = eval(code, scope)  # noqa: S307 - our own formulas, on reference values
    except Exception:  # noqa: BLE001 - an edit whose shapes do not fit is simply not it
        return None
    return value if isinstance(value, torch.Tensor) else None


def evaluate_node(node: ast.expr, values: dict) -> torch.Tensor | None:
    """The value of one formula (or a piece of it) at `values`, or None when it is not a tensor."""
    code = compile(ast.fix_missing_locations(ast.Expression(copy.deepcopy(node))), "<formula>", "eval")
    return _evaluate(code, values)


def explain(formula: list[Term], name: str, context: _Context, observations: list[Observation],
            reads: set[str] | None = None, inlined: bool = False, budget: int = 600) -> Edit | None:
    """The first edit of `formula` that gives the student's value at every observation, where at
    least one observation tells it from the right formula. None when no edit explains it."""
    if not formula or not observations:
        return None
    whole = ast.fix_missing_locations(ast.Expression(copy.deepcopy(_sum([t.expression for t in formula]))))
    right = compile(whole, "<formula>", "eval")
    rights = [_evaluate(right, o.scope) for o in observations]
    if any(r is None for r in rights):
        return None
    for count, edit in enumerate(edits(formula, name, context, reads, inlined)):
        if count >= budget:
            return None
        code = compile(ast.fix_missing_locations(ast.Expression(edit.expression)), "<edit>", "eval")
        telling = False
        for observation, want in zip(observations, rights):
            value = _evaluate(code, observation.scope)
            got = observation.got
            if value is None or value.shape != got.shape or not value.is_floating_point():
                break
            value = value.to(got.dtype)
            finite = torch.isfinite(value)
            if not finite.all():  # a division by zero: the same entries must blow up the same way
                if not torch.equal(finite, torch.isfinite(got)) or not torch.equal(value[~finite].nan_to_num(),
                                                                                   got[~finite].nan_to_num()):
                    break
                want = want[finite] if want.shape == finite.shape else want
                value, got, telling = value[finite], got[finite], True
            scale = max(value.abs().max().item() if value.numel() else 0.0,
                        want.abs().max().item() if want.numel() else 0.0)
            if not _close(got, value, scale):
                break
            # Told apart from the right formula: clearly, or as the verdict told the student's value
            # apart (compare's tolerance) where it did.
            want = want.to(value.dtype)
            telling = telling or value.shape != want.shape or not _close(value, want, scale) or (
                not torch.allclose(got, want, rtol=RTOL, atol=ATOL)
                and not torch.allclose(value, want, rtol=RTOL, atol=ATOL))
        else:
            if telling:
                return edit
    return None


# --- for the grader ---


def formula_values(exercise, ref) -> dict[str, object]:
    """What a formula of `exercise` reads at one reference: the forward tensors of the pass it is
    derived from, the sizes, and the reference gradients (`dlogits`), which are what the student's
    line saw in place of its upstream gradients."""
    key = (exercise.id, id(ref))
    if key not in _VALUES:
        forward_function = exercise.derived_from or exercise.forward
        tensors = dict(ref.tensors)
        if any(line.target not in tensors for line in lines_of(forward_function)):
            with torch.no_grad():
                tensors.update(forward_function(**{k: ref.tensors[k] for k in (*PARAMETER_NAMES, "Xb", "Yb")}))
        values = {"torch": torch, "F": F, **tensors, **ref.sizes}
        values.update({"d" + name: g for name, g in ref.gradients.items()})
        _VALUES[key] = (ref, values)  # the entry holds `ref`, so its id is not reused while it exists
    return _VALUES[key][1]


_VALUES: dict = {}


def formula_of(exercise, name: str, values: dict, read: frozenset[str] | None = None
               ) -> tuple[list[Term], _Context, bool]:
    """A target's right formula, as paths, what its edits need to know, and whether it inlines
    upstream paths (empty when nothing determines it). A line of an exercise of
    lines reads the reference's upstream gradients (teacher forcing); an exercise that asks for a
    gradient in one go, or a training loop, has its upstream formulas inlined down to what is given.
    `read`: the gradients the student's lines read, when they are not the direct upstream ones (a
    path inlined): the paths between are inlined down to them."""
    forward_function = exercise.derived_from or exercise.forward
    inline = exercise.derived_from is not None or exercise.kind == "training"
    given = frozenset(exercise.given)
    if exercise.kind == "training" and read is not None:
        given = given | read  # the intermediates the loop assigns are teacher-forced
    elif not inline and read is not None and read != {"d" + line.target for line in lines_of(forward_function)
                                                      if exercise.tensor_of(name) in line.reads}:
        inline, given = True, read
    found = _determined(forward_function, exercise.tensor_of(name), values, given, inline)
    key = (exercise.id, id(forward_function))
    if key not in _CONTEXTS:
        scope = set(exercise.scope) if exercise.scope is not None else set(values)
        _CONTEXTS[key] = _Context(forward_function, _deriver(forward_function, values), scope)
    return found, _CONTEXTS[key], inline


_CONTEXTS: dict = {}


def _determined(forward_function, tensor: str, values: dict, given: frozenset[str], inline: bool) -> list[Term]:
    """`terms`, or none when they are not known: an operation the rules above do not know, or an
    inlined formula that still needs a gradient beyond those given."""
    try:
        found = terms(forward_function, tensor, values, given, inline)
    except NotImplementedError:
        return []
    free = {n.id for t in found for n in ast.walk(t.expression)
            if isinstance(n, ast.Name) and n.id.startswith("d") and n.id[1:] in values}
    return [] if inline and free - given else found


def inlined_value(exercise, ref, name: str, upstream: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """`name`'s true gradient for gradients further up than its direct upstream (`upstream`), with the
    paths between inlined; None when those gradients do not determine it."""
    values = formula_values(exercise, ref)
    found = _determined(exercise.forward, exercise.tensor_of(name), values, frozenset(upstream), True)
    return evaluate_node(_sum([t.expression for t in found]), {**values, **upstream}) if found else None
