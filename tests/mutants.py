"""A mutation suite for hint quality: realistic one-line mistakes in the reference solutions.

Each mutant changes one statement of a solution (or of a solution whose gradient is
written as several statements, a "split") with one operator: a transpose, a sign,
a factor, a sum over the wrong dim, a swapped tensor, a dropped term, ... and records
where the mistake is and which words a hint that names it would contain. The suite
also holds correct alternative forms of single lines, which must all pass.

Nothing here grades: `bench/bench_hints.py` and `tests/test_hint_quality.py` do. What
is here is pure and deterministic: building the suite evaluates lines in-process on the
reference tensors, so that mutants that compute the same values as the original
(equivalent mutants, which no grader could flag) are left out and counted.

The keyword rules are fixed per operator, independent of what the grader prints: a
rule tuned to the hints would measure nothing.
"""

from __future__ import annotations

import ast
import copy
import functools
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from grader.exercises import BY_ID, EX1, EX2, EX3, Exercise
from grader.network import forward_source, reference

CAP = 6  # mutants kept per operator per statement
RTOL, ATOL = 1e-4, 1e-6  # equivalence: atol is scaled by the original value's magnitude

OPERATORS = (
    "transpose", "matmul_swap", "sum_dim", "sum_drop", "keepdim", "sign", "factor",
    "tensor_swap", "term_drop", "assign_for_augassign", "n_bessel", "power",
)

# (mode, words): a hint names the mistake when, lowercased, it holds ANY (or ALL) of the words.
# `tensor_swap` is filled per mutant: both backticked names must appear.
KEYWORDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "transpose": ("any", ("transpose", ".t")),
    "matmul_swap": ("any", ("operand", "other way round", "order", "transpose")),
    "sum_dim": ("any", ("dim",)),
    "sum_drop": ("any", ("sum",)),
    "keepdim": ("any", ("keepdim", "size-1 axis")),
    "sign": ("any", ("sign",)),
    "factor": ("any", ("times", "factor")),
    "tensor_swap": ("all", ()),
    "term_drop": ("any", ("path", "branch", "term")),
    "assign_for_augassign": ("any", ("+=", "accumulat", "overwr")),
    "n_bessel": ("any", ("n-1",)),
    "power": ("any", ("power", "exponent")),
}


def hint_matches(rule: tuple[str, tuple[str, ...]], hint: str | None) -> bool:
    """Whether a hint satisfies a keyword rule; an empty hint never does."""
    mode, words = rule
    if not hint or not hint.strip():
        return False
    text = hint.lower()
    found = [word in text for word in words]
    return all(found) if mode == "all" else any(found)


@dataclass(frozen=True)
class Mutant:
    """One realistic mistake: a source with one statement changed, and what a good report says."""

    exercise: str  # "ex1"
    target: str  # the gradient the mutated statement assigns
    operator: str
    description: str
    source: str
    line: int  # 1-based line of the mutated statement
    keywords: tuple[str, ...]
    mode: str = "any"  # "any" or "all" of the keywords
    variant: str = "solution"  # "solution" or the split's name, e.g. "split dcounts"
    statement: str = ""  # the mutated statement as written in the source

    @property
    def rule(self) -> tuple[str, tuple[str, ...]]:
        return (self.mode, self.keywords)

    @property
    def filename(self) -> str:
        return BY_ID[self.exercise].slug + ".py"

    @property
    def key(self) -> str:
        """A short, unique label for reports."""
        return f"{self.exercise}:{self.line}:{self.operator}:{self.statement}"


@dataclass(frozen=True)
class Rewrite:
    """A correct alternative form of one gradient: every row must pass."""

    exercise: str
    target: str
    description: str
    source: str
    lines: tuple[int, ...] = ()  # the 1-based lines written in place of the solution's line

    @property
    def filename(self) -> str:
        return BY_ID[self.exercise].slug + ".py"


@dataclass(frozen=True)
class Variant:
    """A solution with one gradient written as several statements; unmutated, it must pass."""

    exercise: str
    name: str  # "split dcounts"
    target: str
    source: str
    lines: tuple[int, ...]  # the 1-based lines of the target's statements

    @property
    def filename(self) -> str:
        return BY_ID[self.exercise].slug + ".py"


@dataclass
class Suite:
    mutants: list[Mutant] = field(default_factory=list)
    equivalent: list[Mutant] = field(default_factory=list)  # dropped: same values as the original
    unparsable: int = 0  # dropped: the mutated source does not parse
    rewrites: list[Rewrite] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)  # the splits

    @property
    def baselines(self) -> list[Variant]:
        """The unmutated sources the mutants come from: each must pass, or no figure means much."""
        plain = [Variant(e.id, "solution", "", solution(e), ()) for e in (EX1, EX2, EX3)]
        return plain + self.variants


# --- the sources ---


def solution(exercise: Exercise) -> str:
    return exercise.solution_path.read_text(encoding="utf-8")


def target_line(source: str, target: str) -> int:
    """The 0-based index of the one line whose top-level statement assigns `target` (`target = ...`)."""
    hits = [node.lineno - 1 for node in ast.parse(source).body if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == target for t in node.targets)]
    assert len(hits) == 1, f"expected one statement assigning {target}, found {len(hits)}"
    return hits[0]


def with_lines(source: str, index: int, new: list[str], before: dict[int, list[str]] | None = None) -> str:
    """`source` with line `index` replaced by `new`, and lines inserted before other lines."""
    out = []
    for i, text in enumerate(source.splitlines()):
        out.extend((before or {}).get(i, []))
        out.extend(new if i == index else [text])
    return "\n".join(out) + "\n"


# The splits: {target: (statements inserted before the line of `anchor`, anchor, statements that
# replace the target's own line)}. They follow the lecture's order of writing.
EX1_SPLITS = {
    "dcounts": (["dcounts = counts_sum_inv * dprobs"], "dcounts_sum",
                ["dcounts += torch.ones_like(counts) * dcounts_sum"]),
    "dlogits": (["dlogits = dnorm_logits.clone()"], "dlogit_maxes",
                ["dlogits += F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes"]),
    "dbndiff": (["dbndiff = bnvar_inv * dbnraw"], "dbnvar_inv",
                ["dbndiff += (2*bndiff) * dbndiff2"]),
    "dhprebn": (["dhprebn = dbndiff.clone()"], "dbnmeani",
                ["dhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)"]),
}
EX2_SPLIT = ["dlogits = F.softmax(logits, 1)", "dlogits[range(n), Yb] -= 1", "dlogits /= n"]


def _lines_of(source: str, target: str) -> tuple[int, ...]:
    """The 1-based lines of the top-level statements that assign `target`."""
    tree = ast.parse(source)
    return tuple(node.lineno for node in tree.body if target in assigned_in(node))


def assigned_in(node: ast.stmt) -> set[str]:
    """The names a statement binds or changes (`x = `, `x += `, `x[i] = `), loops included."""
    names = set()
    for child in ast.walk(node):
        if isinstance(getattr(child, "ctx", None), ast.Store):
            while isinstance(child, (ast.Subscript, ast.Attribute)):
                child = child.value
            if isinstance(child, ast.Name):
                names.add(child.id)
    return names


def split_variants() -> list[Variant]:
    """The ex1 solution with one gradient split at a time, and ex2's in three statements."""
    base = solution(EX1)
    variants = []
    for target, (early, anchor, late) in EX1_SPLITS.items():
        source = with_lines(base, target_line(base, target), late, {target_line(base, anchor): early})
        variants.append(Variant("ex1", f"split {target}", target, source, _lines_of(source, target)))
    base2 = solution(EX2)
    source = with_lines(base2, target_line(base2, "dlogits"), EX2_SPLIT)
    variants.append(Variant("ex2", "split dlogits", "dlogits", source, _lines_of(source, "dlogits")))
    return variants


# --- evaluating lines in-process, to drop equivalent mutants ---


@functools.lru_cache(maxsize=None)
def references(exercise_id: str):
    """The reference at each of the exercise's configurations (the lecture's first)."""
    return tuple(reference(config) for config in BY_ID[exercise_id].configs)


def gradient_names(exercise: Exercise) -> set[str]:
    """The gradient names a line of the exercise may read."""
    if exercise is EX1:
        return {"d" + name for name in references("ex1")[0].gradients}
    return set(exercise.given)


def _scope(exercise: Exercise, ref, target: str) -> dict:
    tensors = ref.tensors if exercise.scope is None else {k: ref.tensors[k] for k in exercise.scope}
    scope = {**tensors, **ref.sizes}
    if exercise is EX1:
        scope.update({"d" + name: g for name, g in ref.gradients.items()})
    scope.update({name: ref.gradients[name[1:]] for name in exercise.given})
    scope.pop(target, None)
    return scope


def _random(shape, config_name: str, name: str) -> torch.Tensor:
    seed = zlib.crc32(f"{config_name}:{name}".encode())
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def evaluate(exercise: Exercise, statements: list[ast.stmt], target: str, *, config_index: int,
             random_upstream: bool):
    """The value of `target` after running `statements` with the reference tensors in scope, fed the
    reference upstream gradients or random ones; raises what the statements raise."""
    ref = references(exercise.id)[config_index]
    scope = _scope(exercise, ref, target)
    names = {n.id for st in statements for n in ast.walk(st) if isinstance(n, ast.Name)}
    values = {}
    for name in names & set(scope):
        value = scope[name]
        if isinstance(value, torch.Tensor):
            if random_upstream and name in gradient_names(exercise) and name != target:
                value = _random(tuple(value.shape), ref.config.name, name)
            else:
                value = value.clone()
        values[name] = value
    namespace = {"torch": torch, "F": F, **values}
    code = compile(ast.Module(body=list(statements), type_ignores=[]), "<mutant>", "exec")
    exec(code, namespace)  # noqa: S102 - our own statements and mutants of them
    return namespace[target]


def close(expected, got) -> bool:
    """Whether two values are the same up to rounding (the equivalence test)."""
    if not isinstance(got, torch.Tensor) or not isinstance(expected, torch.Tensor):
        return False
    if got.shape != expected.shape or got.dtype != expected.dtype or not got.is_floating_point():
        return False
    if not torch.isfinite(got).all():
        return False
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return torch.allclose(got, expected, rtol=RTOL, atol=ATOL * max(scale, 1e-30))


def _runs(exercise: Exercise):
    return [(i, r) for i in range(len(exercise.configs)) for r in (False, True)]


@functools.lru_cache(maxsize=None)
def _original_values(exercise_id: str, block_text: str, target: str):
    exercise = BY_ID[exercise_id]
    block = ast.parse(block_text).body
    return tuple(evaluate(exercise, block, target, config_index=i, random_upstream=r) for i, r in _runs(exercise))


def equivalent(exercise: Exercise, original: list[ast.stmt], mutated: list[ast.stmt], target: str) -> bool:
    """Whether the mutated statements give the original's value at every configuration, on the
    reference upstream gradients and on random ones (a mutant that raises is not equivalent)."""
    expected = _original_values(exercise.id, ast.unparse(ast.Module(body=original, type_ignores=[])), target)
    for (i, r), value in zip(_runs(exercise), expected):
        try:
            got = evaluate(exercise, mutated, target, config_index=i, random_upstream=r)
        except Exception:  # noqa: BLE001 - a mutant may raise anything; the grader must say why
            return False
        if not close(value, got):
            return False
    return True


# --- the operators ---


def _walk(node: ast.AST):
    """Every node under `node` with its parent, in a fixed order."""
    for parent in ast.walk(node):
        for child in ast.iter_child_nodes(parent):
            yield child, parent


def _rhs(statement: ast.stmt) -> ast.expr:
    return statement.value


def _replace(statement: ast.stmt, old: ast.AST, new: ast.AST) -> ast.stmt:
    """A copy of `statement` with the node `old` (by identity, in the original) replaced by `new`."""
    index = [id(n) for n in ast.walk(statement)].index(id(old))
    copied = copy.deepcopy(statement)
    target = list(ast.walk(copied))[index]
    new = copy.deepcopy(new)
    if target is copied.value:
        copied.value = new
        return copied
    for parent in ast.walk(copied):
        for name, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, name, new)
                return copied
            if isinstance(value, list) and any(v is target for v in value):
                setattr(parent, name, [new if v is target else v for v in value])
                return copied
    raise AssertionError("node not found")


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _is_pow_exponent(node: ast.AST, parent: ast.AST) -> bool:
    return isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Pow) and parent.right is node


def op_transpose(statement, context):
    rhs = _rhs(statement)
    operands = set()
    for node in ast.walk(rhs):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            for side in (node.left, node.right):
                operands.add(id(side))
                if isinstance(side, ast.Attribute) and side.attr == "T":
                    yield _replace(statement, side, side.value), f"remove `.T` from `{_text(side)}`"
                else:
                    yield (_replace(statement, side, ast.Attribute(side, "T", ast.Load())),
                           f"add `.T` to `{_text(side)}`")
    for node in ast.walk(rhs):
        if isinstance(node, ast.Attribute) and node.attr == "T" and id(node) not in operands:
            yield _replace(statement, node, node.value), f"remove `.T` from `{_text(node)}`"


def op_matmul_swap(statement, context):
    for node in ast.walk(_rhs(statement)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            swapped = ast.BinOp(node.right, ast.MatMult(), node.left)
            yield _replace(statement, node, swapped), f"swap the operands of `{_text(node)}`"


def _sum_calls(rhs):
    for node in ast.walk(rhs):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sum":
            yield node


def _dim_of(call: ast.Call):
    """(where, value): the dim of a `.sum(...)` call, positional or keyword, when it is a constant."""
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, int):
        return ("arg", call.args[0].value)
    for keyword in call.keywords:
        if keyword.arg == "dim" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, int):
            return ("dim", keyword.value.value)
    return None


def op_sum_dim(statement, context):
    for call in _sum_calls(_rhs(statement)):
        dim = _dim_of(call)
        if dim is None:
            continue
        ndim = context.ndim(call.func.value)
        if ndim is None:
            continue
        for other in range(ndim):
            if other == dim[1] % ndim:
                continue
            new = copy.deepcopy(call)
            if dim[0] == "arg":
                new.args[0] = ast.Constant(other)
            else:
                new.keywords = [ast.keyword("dim", ast.Constant(other)) if k.arg == "dim" else k for k in new.keywords]
            yield _replace(statement, call, new), f"sum over dim {other} instead of {dim[1]} in `{_text(call)}`"


def op_sum_drop(statement, context):
    for call in _sum_calls(_rhs(statement)):
        yield _replace(statement, call, call.func.value), f"drop the `.sum` of `{_text(call)}`"


def op_keepdim(statement, context):
    for node in ast.walk(_rhs(statement)):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in ("keepdim", "keepdims") and isinstance(keyword.value, ast.Constant) \
                        and keyword.value.value is True:
                    new = copy.deepcopy(node)
                    new.keywords = [k for k in new.keywords if k.arg != keyword.arg]
                    yield _replace(statement, node, new), f"drop `keepdim=True` from `{_text(node)}`"


def _is_number(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _is_size_argument(node: ast.AST, parent: ast.AST) -> bool:
    """`-1` given to a call as a positional argument (`view(-1, n_embd)`): a size, not a sign."""
    return isinstance(parent, ast.Call) and node in parent.args and _is_number(node.operand)


def op_sign(statement, context):
    """Flip the whole value, one `+`/`-` between two quantities, or drop a minus. Size and constant
    arithmetic (`n - 1`, `bnvar + 1e-5`), exponents and `view(-1)` are left alone: changing them
    does not flip a sign."""
    rhs = _rhs(statement)
    yield _replace(statement, rhs, ast.UnaryOp(ast.USub(), rhs)), "flip the sign of the right-hand side"
    for node in ast.walk(rhs):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) \
                and not (_is_number(node.left) or _is_number(node.right)):
            flipped = ast.BinOp(node.left, ast.Sub() if isinstance(node.op, ast.Add) else ast.Add(), node.right)
            symbol = "+" if isinstance(node.op, ast.Add) else "-"
            other = "-" if symbol == "+" else "+"
            yield _replace(statement, node, flipped), f"`{other}` for `{symbol}` in `{_text(node)}`"
    parents = {id(child): parent for child, parent in _walk(rhs)}
    for node in ast.walk(rhs):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            parent = parents.get(id(node))
            if not _is_pow_exponent(node, parent) and not _is_size_argument(node, parent):
                yield _replace(statement, node, node.operand), f"drop the minus of `{_text(node)}`"


FACTORS = (("2", "2"), ("0.5", "0.5"), ("n", "n"), ("(1/n)", "1/n"))


def op_factor(statement, context):
    rhs = _rhs(statement)
    for text, label in FACTORS:
        factor = ast.parse(text, mode="eval").body
        yield _replace(statement, rhs, ast.BinOp(factor, ast.Mult(), rhs)), f"multiply by {label}"


def op_tensor_swap(statement, context):
    """Swap a forward tensor for another of the same shape, or a gradient read for another
    gradient of the same shape written earlier; nearest in the network first, round-robin over sites."""
    sites = []
    callee = {id(node.func) for node in ast.walk(_rhs(statement)) if isinstance(node, ast.Call)}
    for node in ast.walk(_rhs(statement)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in callee:
            alternatives = context.swaps(node.id)
            if alternatives:
                sites.append((node, alternatives))
    rank = 0
    while any(rank < len(alts) for _, alts in sites):
        for node, alts in sites:
            if rank < len(alts):
                other = alts[rank]
                yield (_replace(statement, node, ast.Name(other, ast.Load())), f"`{other}` for `{node.id}`",
                       ("all", (f"`{other}`".lower(), f"`{node.id}`".lower())))
        rank += 1


def _terms(node, sign=1):
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        right = sign if isinstance(node.op, ast.Add) else -sign
        return _terms(node.left, sign) + _terms(node.right, right)
    return [(sign, node)]


def _top_sums(node):
    """The additive expressions at the top of an expression, looking through products, numerators
    and minus signs; a sum with a constant term (`n - 1`) is size arithmetic, not two paths."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return [] if any(_is_number(term) for _, term in _terms(node)) else [node]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.MatMult)):
        return _top_sums(node.left) + _top_sums(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _top_sums(node.left)
    if isinstance(node, ast.UnaryOp):
        return _top_sums(node.operand)
    return []


def _rebuild(terms):
    sign, first = terms[0]
    out = first if sign > 0 else ast.UnaryOp(ast.USub(), first)
    for sign, term in terms[1:]:
        out = ast.BinOp(out, ast.Add() if sign > 0 else ast.Sub(), term)
    return out


def op_term_drop(statement, context):
    for chain in _top_sums(_rhs(statement)):
        terms = _terms(chain)
        for i, (_, term) in enumerate(terms):
            kept = terms[:i] + terms[i + 1:]
            yield _replace(statement, chain, _rebuild(kept)), f"drop the term `{_text(term)}`"


def op_assign_for_augassign(statement, context):
    if isinstance(statement, ast.AugAssign) and isinstance(statement.op, (ast.Add, ast.Sub)):
        new = ast.Assign(targets=[copy.deepcopy(statement.target)], value=copy.deepcopy(statement.value),
                         lineno=statement.lineno)
        symbol = "+=" if isinstance(statement.op, ast.Add) else "-="
        yield new, f"`=` for `{symbol}`"


def _is_n(node):
    return isinstance(node, ast.Name) and node.id == "n"


def _is_n_minus_1(node):
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and _is_n(node.left)
            and isinstance(node.right, ast.Constant) and node.right.value == 1)


def op_n_bessel(statement, context):
    """`n` for `n-1` and back, where `n` is arithmetic (not a size given to `range` or `view`)."""
    rhs = _rhs(statement)
    parents = {id(child): parent for child, parent in _walk(rhs)}
    for node in ast.walk(rhs):
        parent = parents.get(id(node))
        if _is_n_minus_1(node):
            yield _replace(statement, node, ast.Name("n", ast.Load())), "`n` for `n-1`"
        elif _is_n(node) and isinstance(parent, ast.BinOp) and not _is_n_minus_1(parent):
            yield (_replace(statement, node, ast.BinOp(ast.Name("n", ast.Load()), ast.Sub(), ast.Constant(1))),
                   "`n-1` for `n`")
        elif _is_n(node) and node is rhs:
            yield (_replace(statement, node, ast.BinOp(ast.Name("n", ast.Load()), ast.Sub(), ast.Constant(1))),
                   "`n-1` for `n`")


def _constant_number(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _constant_number(node.operand)
        return -value if value is not None else None
    return None


def op_power(statement, context):
    for node in ast.walk(_rhs(statement)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            p = _constant_number(node.right)
            if p is None:
                continue
            for q in (p + 1, p - 1):
                new = ast.BinOp(node.left, ast.Pow(), ast.Constant(q))
                yield _replace(statement, node, new), f"`**{q:g}` for `**{p:g}`"


OPERATOR_FUNCTIONS = {
    "transpose": op_transpose,
    "matmul_swap": op_matmul_swap,
    "sum_dim": op_sum_dim,
    "sum_drop": op_sum_drop,
    "keepdim": op_keepdim,
    "sign": op_sign,
    "factor": op_factor,
    "tensor_swap": op_tensor_swap,
    "term_drop": op_term_drop,
    "assign_for_augassign": op_assign_for_augassign,
    "n_bessel": op_n_bessel,
    "power": op_power,
}


@functools.lru_cache(maxsize=1)
def forward_order() -> tuple[str, ...]:
    """Every name of the forward pass in the order it first appears: a swap picks near neighbours first."""
    order = []
    for text in forward_source():
        code = text.split("#")[0].strip()
        if not code:
            continue
        node = ast.parse(code).body[0]
        names = [n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)]
        names += [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        order += [name for name in names if name not in order]
    return tuple(order)


class Context:
    """What the operators need to know about the place a statement is in: shapes, and which
    tensors and gradients are in scope there."""

    def __init__(self, exercise: Exercise, target: str, written: set[str]):
        """`written`: the gradients the file has assigned above the statement (a split's first
        statement may come before gradients that precede its target in backward order)."""
        self.exercise, self.target = exercise, target
        self.ref = references(exercise.id)[0]
        in_scope = self.ref.tensors if exercise.scope is None else {k: self.ref.tensors[k] for k in exercise.scope}
        self.forward = {name: tuple(t.shape) for name, t in in_scope.items()
                        if t.is_floating_point() and t.dim() > 0 and name != "loss"}
        earlier = [t for t in exercise.targets if t in written and t != target]
        self.gradients = {name: tuple(self.ref.gradients[name[1:]].shape) for name in (*earlier, *exercise.given)}

    def swaps(self, name: str) -> list[str]:
        if name in self.forward:
            order = forward_order()
            pool = {k: v for k, v in self.forward.items() if k != name and v == self.forward[name]}
            return sorted(pool, key=lambda k: (abs(order.index(k) - order.index(name)), -order.index(k)))
        if name in self.gradients:
            order = list(self.exercise.targets) + list(self.exercise.given)
            pool = [k for k, v in self.gradients.items() if k != name and v == self.gradients[name]]
            return sorted(pool, key=lambda k: (abs(order.index(k) - order.index(name)), -order.index(k)))
        return []

    def ndim(self, expression: ast.expr) -> int | None:
        """The number of dims of an expression at the lecture's sizes (None if it does not evaluate)."""
        scope = {"torch": torch, "F": F, **_scope(self.exercise, self.ref, "")}
        try:
            value = eval(compile(ast.Expression(expression), "<dim>", "eval"), scope)  # noqa: S307
        except Exception:  # noqa: BLE001
            return None
        return value.dim() if isinstance(value, torch.Tensor) else None


# --- building the suite ---


def statements_at(source: str, lines: tuple[int, ...]) -> list[ast.stmt]:
    """The top-level statements of `source` that start at `lines`."""
    tree = ast.parse(source)
    return [node for node in tree.body if node.lineno in lines]


def mutate(exercise: Exercise, source: str, target: str, lines: tuple[int, ...], variant: str,
           suite: Suite, cap: int = CAP) -> None:
    """Every operator on every statement that assigns `target` (at `lines` in `source`)."""
    original = statements_at(source, lines)
    tree = ast.parse(source).body
    text_lines = source.splitlines()
    for position, statement in enumerate(original):
        written = set().union(*(assigned_in(node) for node in tree if node.lineno < statement.lineno))
        context = Context(exercise, target, written)
        seen = {ast.dump(statement)}
        for operator in OPERATORS:
            kept = 0
            for produced in OPERATOR_FUNCTIONS[operator](statement, context):
                if kept >= cap:
                    break
                new, description = produced[0], produced[1]
                mode, words = produced[2] if len(produced) > 2 else KEYWORDS[operator]
                text = ast.unparse(ast.fix_missing_locations(new))
                if operator == "factor":  # `(1/n) *` as a student writes it, not `1 / n *`
                    text = text.replace("= 1 / n * ", "= (1/n) * ", 1)
                try:
                    reparsed = ast.parse(text).body
                except SyntaxError:
                    suite.unparsable += 1
                    continue
                if len(reparsed) != 1 or ast.dump(reparsed[0]) in seen:
                    continue
                seen.add(ast.dump(reparsed[0]))
                line = statement.lineno
                lines_out = list(text_lines)
                lines_out[line - 1] = text
                mutant = Mutant(
                    exercise=exercise.id, target=target, operator=operator, description=description,
                    source="\n".join(lines_out) + "\n", line=line, keywords=words, mode=mode,
                    variant=variant, statement=text,
                )
                block = original[:position] + reparsed + original[position + 1:]
                if equivalent(exercise, original, block, target):
                    suite.equivalent.append(mutant)
                    continue
                suite.mutants.append(mutant)
                kept += 1


def rewrites() -> list[Rewrite]:
    """Correct alternative forms of single lines: different formulas, helpers, loops."""
    out = []
    for exercise, target, description, lines in REWRITES:
        base = solution(exercise)
        index = target_line(base, target)
        source = with_lines(base, index, lines)
        out.append(Rewrite(exercise.id, target, description, source, tuple(range(index + 1, index + 1 + len(lines)))))
    return out


REWRITES = [
    (EX1, "dlogprobs", "zeros, then the picked entries", [
        "dlogprobs = torch.zeros_like(logprobs)", "dlogprobs[range(n), Yb] = -1.0/n"]),
    (EX1, "dprobs", "a division", ["dprobs = dlogprobs / probs"]),
    (EX1, "dprobs", "a power of -1", ["dprobs = probs**-1 * dlogprobs"]),
    (EX1, "dcounts_sum_inv", "torch.sum with dim=", ["dcounts_sum_inv = torch.sum(counts * dprobs, dim=1, keepdim=True)"]),
    (EX1, "dcounts_sum", "the inverse squared", ["dcounts_sum = -counts_sum_inv**2 * dcounts_sum_inv"]),
    (EX1, "dcounts", "expand_as for the broadcast", [
        "dcounts = counts_sum_inv * dprobs + dcounts_sum.expand_as(counts)"]),
    (EX1, "dcounts", "broadcasting alone", ["dcounts = dprobs * counts_sum_inv + dcounts_sum"]),
    (EX1, "dcounts", "a helper per path", [
        "dcounts_a = counts_sum_inv * dprobs", "dcounts = dcounts_a + torch.ones_like(counts) * dcounts_sum"]),
    (EX1, "dnorm_logits", "exp recomputed", ["dnorm_logits = norm_logits.exp() * dcounts"]),
    (EX1, "dlogit_maxes", "the minus outside", ["dlogit_maxes = -dnorm_logits.sum(1, keepdim=True)"]),
    (EX1, "dlogits", "scatter of the argmax", [
        "dlogits = dnorm_logits + torch.zeros_like(logits).scatter_(1, logits.argmax(1, keepdim=True), 1.0) "
        "* dlogit_maxes"]),
    (EX1, "dlogits", "a comparison with the max", [
        "dlogits = dnorm_logits + (logits == logit_maxes).float() * dlogit_maxes"]),
    (EX1, "dh", "einsum", ["dh = torch.einsum('ik,jk->ij', dlogits, W2)"]),
    (EX1, "dh", "matmul and t()", ["dh = dlogits.matmul(W2.t())"]),
    (EX1, "dW2", "einsum", ["dW2 = torch.einsum('ki,kj->ij', h, dlogits)"]),
    (EX1, "dW2", "the transpose of the other product", ["dW2 = (dlogits.T @ h).T"]),
    (EX1, "db2", "torch.sum with dim=", ["db2 = torch.sum(dlogits, dim=0)"]),
    (EX1, "dhpreact", "the lecture's 1 - h**2", ["dhpreact = (1.0 - h**2) * dh"]),
    (EX1, "dhpreact", "1/cosh squared", ["dhpreact = 1/torch.cosh(hpreact)**2 * dh"]),
    (EX1, "dhpreact", "1 - h*h", ["dhpreact = dh * (1 - h*h)"]),
    (EX1, "dbngain", "torch.sum", ["dbngain = torch.sum(dhpreact * bnraw, dim=0, keepdim=True)"]),
    (EX1, "dbnbias", "sum, then an axis back", ["dbnbias = dhpreact.sum(0).unsqueeze(0)"]),
    (EX1, "dbnraw", "the product the other way round", ["dbnraw = dhpreact * bngain"]),
    (EX1, "dbnvar_inv", "einsum", ["dbnvar_inv = torch.einsum('ij,ij->j', bndiff, dbnraw).view(1, -1)"]),
    (EX1, "dbnvar", "another order of the factors", ["dbnvar = dbnvar_inv * -0.5 * (bnvar + 1e-5)**-1.5"]),
    (EX1, "dbnvar", "bnvar_inv cubed", ["dbnvar = -0.5 * bnvar_inv**3 * dbnvar_inv"]),
    (EX1, "dbndiff2", "expand_as and a division", ["dbndiff2 = dbnvar.expand_as(bndiff2) / (n - 1)"]),
    (EX1, "dbndiff", "a helper for one path", [
        "via_raw = bnvar_inv * dbnraw", "dbndiff = via_raw + 2 * bndiff * dbndiff2"]),
    (EX1, "dbnmeani", "the minus outside", ["dbnmeani = -dbndiff.sum(0, keepdim=True)"]),
    (EX1, "dhprebn", "broadcasting alone", ["dhprebn = dbndiff + dbnmeani / n"]),
    (EX1, "dhprebn", "expand_as", ["dhprebn = dbndiff + 1.0/n * dbnmeani.expand_as(hprebn)"]),
    (EX1, "dembcat", "einsum", ["dembcat = torch.einsum('ik,jk->ij', dhprebn, W1)"]),
    (EX1, "dW1", "einsum", ["dW1 = torch.einsum('ki,kj->ij', embcat, dhprebn)"]),
    (EX1, "db1", "torch.sum", ["db1 = torch.sum(dhprebn, 0)"]),
    (EX1, "demb", "view with the sizes", ["demb = dembcat.view(n, block_size, n_embd)"]),
    (EX1, "dC", "the lecture's loops", [
        "dC = torch.zeros_like(C)",
        "for k in range(Xb.shape[0]):",
        "    for j in range(Xb.shape[1]):",
        "        dC[Xb[k, j]] += demb[k, j]"]),
    (EX1, "dC", "a one-hot product", [
        "dC = F.one_hot(Xb.view(-1), num_classes=vocab_size).float().T @ demb.view(-1, n_embd)"]),
    (EX2, "dlogits", "softmax with dim=", [
        "dlogits = (F.softmax(logits, dim=1) - F.one_hot(Yb, num_classes=vocab_size)) / n"]),
    (EX2, "dlogits", "softmax by hand", [
        "dlogits = (logits.exp() / logits.exp().sum(1, keepdim=True) - F.one_hot(Yb, vocab_size)) / n"]),
    (EX2, "dlogits", "a helper for the probabilities", [
        "p = F.softmax(logits, 1)", "dlogits = (p - F.one_hot(Yb, vocab_size).float()) / n"]),
    (EX3, "dhprebn", "keepdim sums", [
        "dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0, keepdim=True) "
        "- n/(n-1)*bnraw*(dhpreact*bnraw).sum(0, keepdim=True))"]),
    (EX3, "dhprebn", "a helper for dbnraw", [
        "g = bngain * dhpreact", "dhprebn = bnvar_inv/n * (n*g - g.sum(0) - n/(n-1)*bnraw*(g*bnraw).sum(0))"]),
    (EX3, "dhprebn", "means", [
        "dhprebn = bngain * bnvar_inv * (dhpreact - dhpreact.mean(0) - bnraw * (dhpreact*bnraw).sum(0) / (n-1))"]),
]


def rewrite_is_right(rewrite: Rewrite, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """Whether a rewrite's statements give the reference gradient at every configuration (in-process)."""
    exercise = BY_ID[rewrite.exercise]
    block = statements_at(rewrite.source, rewrite.lines)
    for i, config in enumerate(exercise.configs):
        got = evaluate(exercise, block, rewrite.target, config_index=i, random_upstream=False)
        want = references(exercise.id)[i].gradients[exercise.tensor_of(rewrite.target)]
        if not (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
                and torch.allclose(got, want, rtol=rtol, atol=atol)):
            return False
    return True


@functools.lru_cache(maxsize=1)
def build_suite(cap: int = CAP) -> Suite:
    """The whole suite: mutants of every gradient line of exercises 1-3 and of the splits, the
    equivalent mutants left out, the correct rewrites and the unmutated splits."""
    torch.set_num_threads(1)
    suite = Suite()
    for exercise in (EX1, EX2, EX3):
        source = solution(exercise)
        for target in exercise.targets:
            line = target_line(source, target) + 1
            mutate(exercise, source, target, (line,), "solution", suite, cap)
    for variant in split_variants():
        mutate(BY_ID[variant.exercise], variant.source, variant.target, variant.lines, variant.name, suite, cap)
        suite.variants.append(variant)
    suite.rewrites = rewrites()
    return suite
