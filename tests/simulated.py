"""A student's file run here, statement by statement, as the student process would run it with
teacher forcing, so the grader's judgement (`grader.grading.judge`) can be tested in this process
in milliseconds. No guard, no limits, no sandbox, and no watch on answers changed in place through
an alias: for our own fixtures only, never a submission.

`tests/test_judge.py` checks that the simulation agrees with real grading on the files it is used with.
"""

from __future__ import annotations

import ast
import contextlib

import torch
import torch.nn.functional as F

from grader import diagnose
from grader.compare import Settings
from grader.execution import Answer, Run, _new_run, plan
from grader.grading import judge
from grader.network import public, reference


@contextlib.contextmanager
def default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _scope(exercise, ref) -> dict:
    shown = {n: t.clone() for n, t in ref.tensors.items() if exercise.scope is None or n in exercise.scope}
    given = {n: ref.gradients[n[1:]].clone() for n in exercise.given}
    return {"torch": torch, "F": F, **shown, **ref.sizes, **given}


def _execute(statement, namespace: dict) -> BaseException | None:
    try:
        exec(compile(ast.Module([statement.node], type_ignores=[]), "<student>", "exec"), namespace)  # noqa: S102
    except Exception as exc:  # noqa: BLE001 - a line that raises answers with its error
        return exc
    return None


def run_at(exercise, the_plan, ref, *, inject: bool = True, probes=None) -> Run:
    """One run of the file at one reference: each target's answer as its finishing statement left it;
    with `inject`, the reference's gradient put in its place afterwards (teacher forcing); without,
    only where the line gave no tensor (the lecture-style chained run)."""
    run = _new_run(the_plan)
    run.plan = the_plan
    finishing = {index: name for name, index in the_plan.final.items()}
    namespace = _scope(exercise, ref)
    with default_dtype(ref.tensors["logits"].dtype if "logits" in ref.tensors else torch.float32):
        for statement in the_plan.statements:
            if statement.blank:
                continue
            crashed = _execute(statement, namespace)
            name = finishing.get(statement.index)
            for partial in statement.assigns - {name}:  # a target on its way (`dcounts = ...` before `+=`)
                if crashed is None and isinstance(namespace.get(partial), torch.Tensor) \
                        and the_plan.final.get(partial, -1) > statement.index:
                    run.partials.setdefault(partial, []).append((statement.line, namespace[partial].clone()))
            if name is None:
                continue
            if crashed is not None:
                run.answers[name] = Answer(name=name, line=statement.line, kind="error",
                                           message=f"{type(crashed).__name__}: {crashed}")
            else:
                value = namespace.get(name)
                if isinstance(value, torch.Tensor):
                    run.answers[name] = Answer(name=name, line=statement.line, value=value.clone())
                else:
                    run.answers[name] = Answer(name=name, line=statement.line, kind="other",
                                               description=type(value).__name__)
            if inject or run.answers[name].value is None:  # (a line that gave no tensor: the chain goes on)
                namespace[name] = ref.gradients[exercise.tensor_of(name)].clone()
        for name, upstream in (probes or {}).items():
            found = diagnose.probe_slice(the_plan, name, diagnose.provided_names(exercise, ref))
            scope = {**_scope(exercise, ref), **{k: v.clone() for k, v in upstream.items()}}
            if found is None or any(_execute(the_plan.statements[i], scope) for i in found[0]):
                continue
            if isinstance(scope.get(name), torch.Tensor):
                run.probes[name] = scope[name]
    return run


def judged(source: str, exercise, settings: Settings = Settings()):
    """`judge`'s verdicts on a file, its runs simulated here."""
    the_plan = plan(source, exercise.stub_path.name, exercise.graded)
    probes = diagnose.probe_inputs(exercise, public(exercise.configs[0]), the_plan)
    runs = [run_at(exercise, the_plan, reference(config), probes=probes if i == 0 else None)
            for i, config in enumerate(exercise.configs)]
    chained = run_at(exercise, the_plan, reference(exercise.configs[0]), inject=False)
    run64 = run_at(exercise, the_plan, reference(exercise.configs[0], torch.float64))
    results, _ = judge(exercise, runs, chained, run64, probes, settings)
    return {r.name: r for r in results}
