"""Diagnosis beyond one comparison: what needs the reference, the forward graph or several runs.

`compare` judges one answer against one reference. The functions here refine those
verdicts with what only the whole picture shows:

- policy: a line that used autograd or a library shortcut fails (`grader.policy`);
- other configurations: a line right only at the lecture's sizes has a size hard-coded;
- the random-upstream probe: a line re-run on random upstream gradients must match
  the vector-Jacobian product of its forward operation, so a formula that is right
  only because the true gradient is zero (`dlogit_maxes`, `db1`) is caught;
- missing branches: a tensor used twice whose gradient has one path but not the other;
- the chained run: a line right on its own whose value with the student's own
  upstream gradients is off names where the chain breaks;
- aliases: a later line that changed an answered gradient in place;
- rounding: a near miss whose float64 re-run is right is only floating-point rounding.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
from dataclasses import replace
from itertools import combinations

import torch

from grader import mistakes
from grader.compare import Settings, Status, TensorResult, compare, shape_text
from grader.execution import Plan, Run, assigned_names, facts
from grader.graph import consumers, contribution, lines_of
from grader.network import LECTURE_LITERALS, Public, Reference

ZERO_IN_TRUTH = 1e-6  # a reference gradient this small everywhere is rounding noise around zero


def apply_policy(results: tuple[TensorResult, ...], run: Run) -> tuple[TensorResult, ...]:
    """Fail every gradient whose line reached for what an answer may not use (the guard in the
    student process refused it, `grader.policy`), or was computed from such a line."""
    out = []
    for r in results:
        answer = run.answers.get(r.name)
        if answer is not None and answer.policy:
            r = replace(r, status=Status.FAIL, hint=answer.message, policy=answer.policy, maxdiff=None)
        out.append(r)
    return tuple(out)


def hardcoded_hint(result: TensorResult, other: TensorResult, config, run: Run) -> str:
    """Why a line right at the lecture's sizes fails at others: name the literal if we can see it."""
    base = f"right at the lecture's sizes but not at other sizes ({config.describe()}): a size is hard-coded"
    statement = run.plan.statements[run.plan.final[result.name]] if run.plan and result.name in run.plan.final else None
    literals = sorted({
        int(node.value) for node in ast.walk(statement.node)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float)
        and (node.value in LECTURE_LITERALS if type(node.value) is int
             else node.value.is_integer() and int(node.value) in LECTURE_LITERALS)
    }) if statement is not None else []
    if literals:
        uses = "; ".join(f"line {statement.line} uses {value}; use `{LECTURE_LITERALS[value]}`" for value in literals)
        return f"{base}: {uses}"
    return f"{base}. There: {other.hint}" if other.hint else base


def combine_configs(per_config) -> tuple[TensorResult, ...]:
    """A line passes only if it passes in every configuration; the lecture's result is shown."""
    _, first, _ = per_config[0]
    combined = []
    for i, primary in enumerate(first):
        result = primary
        if primary.status.passed:
            for config, results, run in per_config[1:]:
                if not results[i].status.passed:
                    result = replace(primary, status=Status.FAIL, policy=results[i].policy, failed_at=config.name,
                                     hint=results[i].hint if results[i].policy else
                                     hardcoded_hint(primary, results[i], config, run))
                    break
        combined.append(result)
    return tuple(combined)


# --- the random-upstream probe ---


@functools.lru_cache(maxsize=512)
def _seeded_randn(shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Random upstream values, the same in the student process and here (seeded by the name)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def probe_upstream(ref: Public, target: str, names) -> dict[str, torch.Tensor]:
    """The random upstream values `probe_inputs` gives `target`'s lines, by the names they read."""
    return {name: _seeded_randn(ref.shapes[name[1:]], f"{target}:{name}") for name in names}


def warm_probes(exercise, ref: Public) -> None:
    """Draw every random upstream value `probe_inputs` could ask for (in a worker, before it forks:
    they are public, and drawing them costs each student process a few milliseconds)."""
    for target in exercise.targets:
        for line in consumers(exercise.forward, exercise.tensor_of(target)):
            if line.target in ref.shapes:
                _seeded_randn(ref.shapes[line.target], f"{target}:d{line.target}")


def direct_upstream(exercise, name: str) -> frozenset[str]:
    """The gradients of the lines that read `name`'s tensor: what a line for `name` reads by the chain rule."""
    return frozenset("d" + line.target for line in consumers(exercise.forward, exercise.tensor_of(name)))


def provided_names(exercise, ref: Public | Reference) -> frozenset[str]:
    """What the grader puts in scope and restores before every statement: the forward tensors, the
    sizes and the given gradients."""
    return frozenset(ref.tensors) | frozenset(ref.sizes) | frozenset(exercise.given)


def _reads_instead(exercise, name: str, read) -> str | None:
    """`your dh reads dnorm_logits where the chain rule needs dlogits`, when it reads gradients other
    than its direct upstream ones (a path inlined, or a gradient put in for another)."""
    direct = direct_upstream(exercise, name)
    wrong = sorted(set(read) - direct)
    if not wrong:
        return None
    return (f"your `{name}` reads {' and '.join(f'`{g}`' for g in wrong)} where the chain rule needs "
            f"{' and '.join(f'`{g}`' for g in sorted(direct))}")


@functools.lru_cache(maxsize=1024)  # asked of each target by several diagnoses of one file
def probe_slice(the_plan: Plan, target: str, provided: frozenset[str] = frozenset()
                ) -> tuple[tuple[int, ...], set[str]] | None:
    """The statements that compute `target`'s answer from the answers before it, and the gradients
    they read: the statement that finishes it and, going back, every statement that assigns what is
    still needed (a first `dlogits = ...` before `dlogits += ...`, a helper `s = dhprebn.sum(0)`),
    stopping at the statement that finishes another gradient (its answer is an input). What the
    grader provides (`provided`: the forward tensors, the sizes) is restored before every statement,
    so a statement that changes it in place is no part of it. None when there is nothing to probe."""
    index = the_plan.final.get(target)
    if index is None or the_plan.statements[index].blank:
        return None
    finishes = {i: name for name, i in the_plan.final.items()}
    chosen = [index]
    needed = _needs(the_plan.statements[index].node)
    inputs: set[str] = set()
    for statement in reversed(the_plan.statements[:index]):
        binds = assigned_names(statement.node) - provided
        if not binds & needed:
            continue
        other = finishes.get(statement.index)
        if other is not None and other != target:
            inputs |= binds & needed & set(the_plan.final)
            needed -= binds & set(the_plan.final)
            if not binds & needed:
                continue
        if statement.blank:
            return None
        chosen.append(statement.index)
        needed = (needed - _fresh(statement.node)) | _needs(statement.node)
    return tuple(reversed(chosen)), inputs | needed


@functools.lru_cache(maxsize=8192)
def _needs(node: ast.AST) -> frozenset[str]:
    """What a statement needs from before it: what it reads, and what it changes without replacing
    (`x += ...`, `x[i] = ...`), but not its own loop variables."""
    found = facts(node)
    changed = found.assigned - _fresh(node)
    # (`x = x + y` reads the x from before it: a name it assigns anew is still needed if it reads it.)
    return (found.reads | changed) - found.loop_names


def _fresh(node: ast.AST) -> set[str]:
    """The names a statement assigns anew (`x = ...`), not those it only changes (`x += ...`, `x[i] = ...`)."""
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def probe_inputs(exercise, ref: Public, the_plan: Plan) -> dict[str, dict[str, torch.Tensor]]:
    """For each target whose lines can be probed, random values for the gradients they read.

    The lines are those of `probe_slice`, however many statements and helpers they take. They are
    probed when they read only the forward tensors, the sizes, what they compute themselves and
    answered gradients: usually the gradients of the tensor's direct consumers; a gradient further
    up (a path inlined) is fine too, as the grader inlines the same path to know what to expect. A
    line that reads no gradient gets its direct upstream, unless that is the loss's own (1).
    """
    gradient_names = {"d" + name for name in ref.shapes}
    in_scope = (set(ref.tensors if exercise.scope is None else exercise.scope) | set(ref.sizes) | {"torch", "F"}
                | _BUILTIN_NAMES)
    loss_gradient = {"d" + lines_of(exercise.forward)[-1].target}
    probes = {}
    provided = provided_names(exercise, ref)
    for target in exercise.targets:
        found = probe_slice(the_plan, target, provided)
        if found is None:
            continue
        _, reads = found
        upstream = direct_upstream(exercise, target)
        if not upstream or not upstream <= gradient_names or target in reads:
            continue
        read_gradients = reads & gradient_names
        others = reads - gradient_names - in_scope
        loss_only = upstream == loss_gradient
        if (not read_gradients and loss_only) or others:
            continue
        # The direct upstream gradients, unless the lines read others, or read some of them and may
        # compute the rest from those (`dhprebn = dbndiff - dbndiff.mean(0)` inlines `dbnmeani`): then
        # the ones they read, and the grader inlines the paths between.
        derivable = any(r[1:] in _descendants(exercise.forward, m[1:])
                        for m in upstream - read_gradients for r in read_gradients)
        chosen = upstream if read_gradients <= upstream and not derivable else read_gradients
        # Random values for two gradients of which one is computed from the other would contradict
        # each other (the direct upstream ones are independent: each path is linear in its own).
        if chosen is read_gradients and any(b[1:] in _descendants(exercise.forward, a[1:])
                                            for a in read_gradients for b in read_gradients):
            continue
        probes[target] = probe_upstream(ref, target, sorted(chosen))
    return probes


_BUILTIN_NAMES = frozenset(dir(builtins))


@functools.lru_cache(maxsize=256)
def _descendants(forward_function, tensor: str) -> frozenset[str]:
    """Every tensor the forward pass computes from `tensor`, directly or not."""
    found, todo = set(), [tensor]
    while todo:
        for line in consumers(forward_function, todo.pop()):
            if line.target not in found:
                found.add(line.target)
                todo.append(line.target)
    return frozenset(found)


def _reads_a_gradient(the_plan: Plan | None, name: str, upstream: dict, provided: frozenset[str]) -> bool:
    found = probe_slice(the_plan, name, provided) if the_plan is not None else None
    return found is not None and bool(found[1] & set(upstream))


def _probe_matches(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether a probe's value matches the true one (the shape is judged elsewhere)."""
    if got.numel() != expected.numel() or not got.is_floating_point():
        return False
    return torch.allclose(got.reshape(expected.shape).to(expected.dtype), expected, rtol=1e-4,
                          atol=1e-5 * max(expected.abs().max().item(), 1e-12))


def probe_expected(exercise, ref: Reference, target: str, upstream: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The true gradient of `target` for the given upstream gradients: the sum of every consumer's VJP,
    or, for gradients further up, the paths between inlined (`grader.mistakes`). None when the
    gradients given do not determine it."""
    key = (exercise.id, id(ref), target, tuple((name, id(value)) for name, value in sorted(upstream.items())))
    if key not in _EXPECTED:
        # The entry holds the objects whose ids make its key, so no id can be reused while it exists.
        _EXPECTED[key] = (ref, upstream, _probe_expected(exercise, ref, target, upstream))
    return _EXPECTED[key][2]


_EXPECTED: dict = {}


def _probe_expected(exercise, ref: Reference, target: str, upstream: dict[str, torch.Tensor]) -> torch.Tensor | None:
    tensor = exercise.tensor_of(target)
    if set(upstream) != direct_upstream(exercise, target):
        return mistakes.inlined_value(exercise, ref, target, upstream)
    values = {**ref.tensors, **ref.sizes}
    total = None
    for line in consumers(exercise.forward, tensor):
        part = contribution(line, tensor, upstream["d" + line.target], values)
        total = part if total is None else total + part
    return total


def apply_probes(results, exercise, ref: Reference, run: Run, probes) -> tuple[TensorResult, ...]:
    """A line right on the reference's upstream gradients must also be right on random ones."""
    out = []
    for result in results:
        name = result.name
        got = run.probes.get(name)
        if name not in probes or got is None or result.policy or result.status in (Status.BLANK, Status.MISSING, Status.ERROR):
            out.append(result)
            continue
        expected = probe_expected(exercise, ref, name, probes[name])
        if expected is None:
            out.append(result)
            continue
        ok = _probe_matches(got, expected)
        zero = ref.gradients[exercise.tensor_of(name)].abs().max().item() < ZERO_IN_TRUTH
        if not zero and not _reads_a_gradient(run.plan, name, probes[name], provided_names(exercise, ref)):
            # Built from the forward tensors alone (a shortcut): the probe speaks only of a true zero.
            out.append(result)
            continue
        if not ok and (result.status.passed or zero):
            why = ("right here only because the true gradient is zero" if zero
                   else "right for these upstream gradients only")
            hint = f"{why}: with other upstream values your formula gives the wrong answer, so the formula is wrong"
            instead = _reads_instead(exercise, name, probes[name])
            if instead:
                hint = f"{instead}, the gradient of what `{exercise.tensor_of(name)}` feeds: {hint}"
            if not got.any():
                reads = " and ".join(f"`{u}`" for u in sorted(probes[name]))
                hint = (f"your `{name}` is zero whatever the upstream gradients are; it is {why}. "
                        f"Its formula reads {reads}")
            result = replace(result, status=Status.FAIL, probe="fail", hint=hint)
        elif ok and zero and result.status is Status.FAIL and (result.maxdiff or 1.0) < ZERO_IN_TRUTH:
            # Rounding noise around a true zero: the formula is right (the probe says so).
            result = replace(result, status=Status.APPROX, probe="pass", hint=(
                "the true gradient is zero and yours is rounding noise around it; the formula is right "
                "(checked on random upstream gradients)"))
        else:
            result = replace(result, probe="pass" if ok else "fail")
        out.append(result)
    return tuple(out)


# --- the error model ---


def explain_mistake(exercise, name: str, observations: list[tuple[Reference, torch.Tensor, dict | None]],
                    reads: set[str] | None = None, taught: frozenset[str] | None = None):
    """The error model's explanation of a wrong value (`grader.mistakes`), or None. Each observation
    is a reference, the student's value there, and the random upstream gradients it was probed with;
    `reads`, the names the student's lines for it read."""
    given = next((frozenset(upstream) for _, _, upstream in observations if upstream), taught)
    if given is not None and given != direct_upstream(exercise, name) and exercise.derived_from is None and exercise.kind != "training":
        # Probed on gradients further up: first the line's own formula on the values the student's
        # line saw (a gradient put in for another), then the paths between inlined, probe included.
        taught = [o for o in observations if not o[2]]
        return _explain(exercise, name, taught, reads, None) or _explain(exercise, name, observations, reads, given)
    return _explain(exercise, name, observations, reads, given)


def _explain(exercise, name: str, observations, reads, given):
    points, formula = [], None
    for ref, got, upstream in observations:
        if got is None or not got.is_floating_point():
            continue
        values = mistakes.formula_values(exercise, ref)
        if formula is None:
            formula, context, inlined = mistakes.formula_of(exercise, name, values, given)
        points.append(mistakes.Observation({**values, **(upstream or {})}, got))
    if formula is None:
        return None
    return mistakes.explain(formula, name, context, points, reads, inlined)


def observations(name: str, refs_and_runs, probes) -> list:
    """Where the student's value of `name` is known: each run's answer at its reference, and the
    lecture's probe on random upstream gradients."""
    found = []
    for i, (ref, run) in enumerate(refs_and_runs):
        answer = run.answers.get(name)
        if answer is not None and answer.value is not None:
            found.append((ref, answer.value, None))
        if i == 0 and name in run.probes and name in probes:
            found.append((ref, run.probes[name], probes[name]))
    return found


def student_reads(the_plan: Plan | None, name: str) -> set[str] | None:
    """Every name read by the statements that assign `name`, and by the helpers they read."""
    if the_plan is None or name not in the_plan.final:
        return None
    reads: set[str] = set()
    wanted = {name}
    others = set(the_plan.final) - {name}  # another gradient's lines are not this one's helpers
    for statement in reversed(the_plan.statements[:the_plan.final[name] + 1]):
        if assigned_names(statement.node) & wanted:
            found = {n.id for n in ast.walk(statement.node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            reads |= found
            wanted |= found - others
    return reads - {name}


def apply_error_model(results, exercise, refs_and_runs, probes, given: frozenset[str] | None = None
                      ) -> tuple[TensorResult, ...]:
    """Name the mistake of every failing line the error model can reproduce (an edit of the right
    formula that gives the student's values everywhere). `given`: for a training loop, the gradients
    the student's loop assigns (teacher-forced), down to which the formulas are inlined."""
    out = []
    the_plan = refs_and_runs[0][1].plan if refs_and_runs else None
    for result in results:
        # (A line that fails at other sizes only may have a size hard-coded, or a wrong formula that
        # happens to fit the lecture's sizes: the error model tells.)
        explainable = (result.status is Status.FAIL and not result.policy
                       and not (result.hint or "").startswith("the values are right"))
        edit = explain_mistake(exercise, result.name, observations(result.name, refs_and_runs, probes),
                               student_reads(the_plan, result.name), given) if explainable else None
        if edit is not None:
            truth = refs_and_runs[0][0].gradients[exercise.tensor_of(result.name)]
            zero = result.probe == "fail" and truth.abs().max().item() < ZERO_IN_TRUTH
            hint = edit.says + (" (it looked right here only because the true gradient is zero: the grader re-ran "
                                "your line on random upstream gradients)" if zero else "")
            instead = _reads_instead(exercise, result.name, probes.get(result.name, ()))
            if instead and exercise.derived_from is None:
                hint = f"{instead}; so {hint}"
            if result.got_shape is not None and result.got_shape != result.expected_shape:
                hint += (f" (`{result.name}` has shape {shape_text(result.got_shape)}; `{result.tensor}` has shape "
                         f"{shape_text(result.expected_shape)})")
            result = replace(result, hint=hint, mistake=edit.kind)
        out.append(result)
    return tuple(out)


# --- crashes over shapes ---


def apply_shape_stories(results, exercise, ref: Reference, run: Run) -> tuple[TensorResult, ...]:
    """Add, to a line that crashed over shapes, which of its operations did not fit and why."""
    from grader.shapes import CRASHES, shape_story

    out = []
    for result in results:
        if result.status is Status.ERROR and result.hint and any(c in result.hint for c in CRASHES) \
                and run.plan is not None and result.line is not None:
            statement = next((st.node for st in run.plan.statements if st.line == result.line), None)
            shapes = {name: tuple(t.shape) for name, t in ref.tensors.items()}
            shapes.update({"d" + name: tuple(g.shape) for name, g in ref.gradients.items()})
            story = shape_story(statement, shapes, ref.sizes, result.name, result.expected_shape) \
                if statement is not None else None
            if story:
                result = replace(result, hint=f"{result.hint}: {story}")
        out.append(result)
    return tuple(out)


# --- the statement where a split gradient goes wrong ---


def _candidates(exercise, ref: Reference, name: str) -> tuple[list, list[torch.Tensor]]:
    """What a right partial value of `name` may be: a sum of some of its paths (`dcounts` after its
    first path), or any piece of a path's formula (`F.softmax(logits, 1)` before the one-hot is
    subtracted); as (subset sums with the paths in them, pieces)."""
    values = mistakes.formula_values(exercise, ref)
    formula, _, _ = mistakes.formula_of(exercise, name, values)
    parts = []
    for term in formula:
        value = mistakes.evaluate_node(term.expression, values)
        if value is None:
            return [], []
        parts.append((term, value))
    sums = [(set(t.line.target for t, _ in chosen), sum(v for _, v in chosen))
            for k in range(1, len(parts) + 1) for chosen in combinations(parts, k)]
    pieces = [value for term in formula for node in ast.walk(term.expression) if isinstance(node, ast.expr)
              and not isinstance(node, ast.Constant)
              for value in [mistakes.evaluate_node(node, values)] if value is not None and value.dim() > 0]
    return sums, pieces


def blame(exercise, ref: Reference, run: Run, name: str) -> tuple[int, str | None] | None:
    """For a gradient written in several statements whose value is wrong: the line of the first
    statement after which the value is no longer one a right answer passes through, and a hint when
    the last one replaced (`=`) what the earlier ones had summed (`+=`). None when nothing tells."""
    answer = run.answers.get(name)
    partials = run.partials.get(name)
    if not partials or answer is None or answer.value is None or run.plan is None:
        return None
    sums, pieces = _candidates(exercise, ref, name)
    if not sums:
        return None
    earlier: set[str] = set()
    # Each partial value is on the way to a right answer (a sum of paths, a piece of a path's formula,
    # zeros to start from) or not. A step the formula does not show may still be right when a later
    # value is back on the way (`logits.exp()`, then divided by its sum, is the softmax): the statement
    # blamed is the first off the way after the last one on it, or the first of all if none is.
    on_way = []
    for line, value in partials:
        paths = next((paths for paths, total in sums if _probe_matches(value, total) and value.shape == total.shape),
                     None)
        if paths is not None:
            earlier = paths
        on_way.append(paths is not None or (value.is_floating_point() and (not value.any() or any(
            value.shape == p.shape and _probe_matches(value, p.to(value.dtype)) for p in pieces))))
    final = run.plan.statements[run.plan.final[name]]
    last = max((i for i, ok in enumerate(on_way) if ok), default=None)
    if last is None and not on_way[0]:
        return partials[0][0], None
    off = next((i for i in range(last + 1, len(partials)) if not on_way[i]), None) if last is not None else None
    if off is not None:
        return partials[off][0], None
    node = final.node
    replaced = isinstance(node, ast.Assign) and name not in {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
    now = next((paths for paths, total in sums if _probe_matches(answer.value, total)
                and answer.value.shape == total.shape), None)
    if replaced and earlier and now and not now & earlier:
        lost = " and ".join(f"`{p}`" for p in sorted(earlier))
        first = next(line for line, _ in partials)
        return final.line, (f"line {final.line} assigns `{name}` with `=`, which throws away the path through {lost} "
                            f"that line {first} computed: use `+=` to add the paths up")
    return final.line, None


def apply_blame(results, exercise, ref: Reference, run: Run) -> tuple[TensorResult, ...]:
    """Point a failing gradient written in several statements at the statement where it goes wrong."""
    out = []
    for result in results:
        if result.status is Status.FAIL and not result.policy and result.failed_at is None and result.name in run.partials:
            found = blame(exercise, ref, run, result.name)
            if found is not None:
                line, hint = found
                result = replace(result, line=line, **({"hint": hint, "mistake": "accumulate"} if hint else {}))
        out.append(result)
    return tuple(out)


# --- missing branches ---


def branch_hint(exercise, ref: Reference, name: str, got: torch.Tensor,
                upstream: dict[str, torch.Tensor] | None = None) -> str | None:
    """For a tensor used by more than one line: is the answer the gradient minus one path?

    With `upstream` (the probe's random upstream gradients) and `got` the probe's value, the
    paths are told apart even where one is tiny in truth (the path through `logit_maxes`)."""
    tensor = exercise.tensor_of(name)
    users = consumers(exercise.forward, tensor)
    if len(users) < 2 or got.shape != ref.gradients[tensor].shape:
        return None
    upstream = upstream or {"d" + u.target: ref.gradients[u.target] for u in users}
    expected = probe_expected(exercise, ref, name, upstream)
    values = {**ref.tensors, **ref.sizes}
    for missing in users:
        part = contribution(missing, tensor, upstream["d" + missing.target], values)
        if part.abs().max() > 1e-7 and _probe_matches(got, expected - part):
            kept = [u.target for u in users if u is not missing]
            have = " and ".join(f"`{k}`" for k in kept)
            return (f"your `{name}` has the path through {have} but not the one through `{missing.target}`: "
                    f"`{tensor}` is used in both, so its gradient is the sum of both paths")
    return None


def apply_branch_hints(results, exercise, ref: Reference, run: Run, probes) -> tuple[TensorResult, ...]:
    out = []
    for result in results:
        answer = run.answers.get(result.name)
        if result.status is Status.FAIL and not result.policy and answer is not None and answer.value is not None \
                and result.mistake is None:
            if result.name in run.probes and result.name in probes \
                    and set(probes[result.name]) == direct_upstream(exercise, result.name):
                hint = branch_hint(exercise, ref, result.name, run.probes[result.name], probes[result.name])
            else:
                hint = branch_hint(exercise, ref, result.name, answer.value)
            if hint:
                result = replace(result, hint=hint)
        out.append(result)
    return tuple(out)


# --- the chained run, aliases and rounding ---


def apply_chained(results, chained: tuple[TensorResult, ...]) -> tuple[TensorResult, ...]:
    """Report the lecture-style verdict beside each line; say where a broken chain starts."""
    out = []
    broken = {r.name for r in chained if r.status in (Status.FAIL, Status.ERROR)}
    for i, result in enumerate(results):
        other = chained[i]
        result = replace(result, chained=other.status.value)
        if result.status.passed and other.name in broken:
            # The earliest line whose chained value is off: past it, every line sees wrong inputs.
            upstream = next((r.name for r in results[:i] if r.name in broken), None)
            changed = next((r.name for r in results[:i] if r.warning), None)
            where = f"at `{upstream}`" if upstream else f"where `{changed}` was changed in place" if changed else None
            if where:
                result = replace(result, hint=f"correct on its own; with your own upstream gradients it is off: "
                                              f"your chain breaks earlier, {where}")
        out.append(result)
    return tuple(out)


def apply_mutations(results, run: Run) -> tuple[TensorResult, ...]:
    """Fail a gradient that a later line changed in place after it was answered, through an alias
    (`dhprebn = dbndiff` then `dhprebn += ...`): the student's variable no longer holds the answer,
    and a training loop would use the changed value."""
    out = []
    for r in results:
        if r.name in run.mutated:
            line = run.mutated[r.name]
            said = (f"line {line} changed `{r.name}` in place after it was answered, through an alias (a name "
                    f"assigned `{r.name}` itself, not a copy, then changed with `+=` or the like), so your "
                    f"`{r.name}` no longer holds the gradient. Use `.clone()` when you copy a gradient")
            r = replace(r, warning=said, **({"status": Status.FAIL, "hint": said, "mistake": "alias"}
                                             if r.status.passed else {}))
        out.append(r)
    return tuple(out)


def is_near_miss(result: TensorResult) -> bool:
    """A pass that is not exact, or a fail by less than 1e-4: rounding might explain it."""
    near_fail = (result.status is Status.FAIL and not result.policy and result.maxdiff is not None
                 and result.failed_at is None and result.mistake is None
                 and result.got_shape == result.expected_shape and result.maxdiff < 1e-4)
    return result.probe != "fail" and (result.status is Status.APPROX or near_fail)


def rounding_hints(results, exercise, ref64: Reference, run64: Run, settings: Settings) -> tuple[TensorResult, ...]:
    """A near miss whose float64 re-run matches the float64 reference is only rounding."""
    out = []
    for result in results:
        answer = run64.answers.get(result.name)
        if is_near_miss(result) and answer is not None and answer.value is not None:
            tight = Settings(rtol=1e-10, atol=1e-13)
            check = compare(answer, ref64.gradients[exercise.tensor_of(result.name)], exercise.tensor_of(result.name),
                            settings=tight)
            if check.status.passed:
                extra = (" (PyTorch's tanh backward computes 1 - h*h with a fused multiply-add, "
                         "as torch.addcmul does)") if result.name == "dhpreact" else ""
                # Only the probe shows a formula right; a float64 match shows it right on these values.
                first = ("the maths is right: in float64 your line matches" if result.probe == "pass" else
                         "in float64 your line matches here")
                hint = f"{first}; the difference is floating-point rounding{extra}"
                if result.status is Status.APPROX and result.hint is None:
                    result = replace(result, hint=hint)
                elif result.status is Status.FAIL:
                    result = replace(result, hint=f"{result.hint}. But {hint}" if result.hint else hint)
        out.append(result)
    return tuple(out)
