"""Grade a file: recognise its exercise, run it against the reference, compare every target.

This is the keyword-only API that the CLI, the tests and notebooks call.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from grader import diagnose
from grader.compare import FileResult, Settings, Status, TensorResult, compare
from grader.exercises import BY_ID, EXERCISES, Exercise, recognise
from grader.execution import (
    DEFAULT_TIMEOUT, Options, RunSpec, Session, SubmissionError, assigned_names, first_public, parse, plan,
    read_source,
)
from grader.network import Reference, reference


def first_reference(exercise: Exercise) -> Reference:
    """The reference an exercise is first graded against (its shapes go into the stub)."""
    if exercise.kind == "training":
        from grader.training import autograd_run

        return autograd_run(exercise.configs[0])[0][0]
    return reference(exercise.configs[0])


def assigned_in(source: str) -> set[str]:
    """Every name a source's top-level statements assign (none when it does not parse)."""
    try:
        tree = parse(source, "<submission>")
    except SyntaxError:
        return set()
    return set().union(*(assigned_names(node) for node in tree.body))


def detect_exercise(*, source: str, filename: str) -> Exercise | None:
    """The exercise a source answers, by file name or by the gradient names it assigns."""
    return recognise(filename, set()) or recognise(filename, assigned_in(source))  # (the name costs no walk)


def mapping_text(mapping: dict[str, str]) -> str:
    """A --names mapping as the option takes it: `old=new,old2=new2`."""
    return ",".join(f"{old}={new}" for old, new in mapping.items())


@functools.lru_cache(maxsize=1)
def lecture_names() -> frozenset[str]:
    """Every name the lecture gives a meaning: gradients, forward tensors, parameters, the batch, sizes."""
    from grader.names import lecture_statements
    from grader.network import PARAMETER_NAMES

    names = {t for e in EXERCISES for t in (*e.targets, *(e.blanks or ()))} | set(PARAMETER_NAMES)
    names |= {"n", "batch_size", "vocab_size", "block_size", "n_embd", "n_hidden", "Xb", "Yb", "loss"}
    return frozenset(names | {n for node in lecture_statements() for n in assigned_names(node)})


def suggest_names(assigned: set[str], targets: tuple[str, ...], statements=(), reads: set[str] = frozenset(),
                  onto_assigned: bool = False) -> dict[str, str]:
    """A guess at the mapping from a student's own names to the lecture's: `d_logprobs` -> `dlogprobs`,
    `yb` -> `Yb` (see `grader.names`)."""
    from grader.names import suggest

    return suggest(assigned=set(assigned), statements=list(statements), wanted=targets,
                   lecture_names=lecture_names(), reads=set(reads), onto_assigned=onto_assigned)


def not_found(what: str, *, exercise: str | None, assigned: set[str], statements, plural: bool = False) -> str:
    """Why nothing in a notebook (or a kernel's cells) was graded, with a --names mapping when the
    student's names look like renamings of the lecture's: one sentence."""
    targets = BY_ID[exercise].targets if exercise else tuple(dict.fromkeys(t for e in EXERCISES for t in e.targets))
    guess = suggest_names(assigned, targets, statements, onto_assigned=exercise is not None)
    # A renamed forward tensor matters where the look-alike gradients read it.
    reads = {n.id for node in statements if assigned_names(node) & set(guess) for n in ast.walk(node)
             if isinstance(n, ast.Name)}
    if exercise is not None:
        guess = suggest_names(assigned, BY_ID[exercise].targets, statements, reads, onto_assigned=True)
        message = (f"{what} has no {BY_ID[exercise].title.split(':')[0].lower()} in it: "
                   f"{_what_each_exercise_looks_like(exercise)}")
    else:
        guess = suggest_names(assigned, targets, statements, reads)
        message = (f"none of {what} assigns one of the lecture's gradient names (dlogprobs, ..., dC)" if plural
                   else f"{what} assigns none of the lecture's gradient names (dlogprobs, ..., dC)")
    return message + (f"; if those are your names for them, try --names {mapping_text(guess)}" if guess else "")


def _file_error(exercise: Exercise, ref: Reference, filename: str, message: str) -> FileResult:
    """Every target `error` for a file that cannot run at all (SPEC: results still list every name)."""
    results = tuple(
        TensorResult(
            name=t, tensor=exercise.tensor_of(t), status=Status.ERROR,
            expected_shape=tuple(ref.gradients[exercise.tensor_of(t)].shape), hint=message,
        )
        for t in exercise.targets
    )
    return FileResult(file=filename, exercise=exercise.id, results=results, error=message, points=exercise.points)


def allowed_shortcuts(exercise: Exercise, settings: Settings) -> tuple[str, ...]:
    """The library shortcuts an exercise's code may call: its own, and the settings file's."""
    return exercise.allowed + tuple(settings.allow.get(exercise.id, ()))


def _verdicts(exercise: Exercise, ref: Reference, run, settings: Settings) -> tuple[TensorResult, ...]:
    """Every target of one run compared with one reference, then the policy applied."""
    results = tuple(
        _scored(compare(run.answers[t], ref.gradients[exercise.tensor_of(t)], exercise.tensor_of(t),
                        settings=settings, n=ref.sizes["n"]), t in exercise.targets)
        for t in exercise.graded
        if t in exercise.targets or run.answers[t].kind != "missing"  # an intermediate only where written
    )
    return diagnose.apply_policy(results, run)


def _scored(result: TensorResult, scored: bool) -> TensorResult:
    return result if result.scored == scored else replace(result, scored=scored)


def _worst(per_step: list[TensorResult]) -> TensorResult:
    """One verdict from the verdicts at several training steps: the first failure, else the loosest pass."""
    for step, result in enumerate(per_step):
        if not result.status.passed:
            if step == 0 or result.hint is None:
                return result
            return TensorResult(**{**result.__dict__, "hint": f"at training step {step}: {result.hint}"})
    return max(per_step, key=lambda r: (r.status is Status.APPROX, r.maxdiff or 0.0))


def grade_source(*, source: str, filename: str, exercise: Exercise, timeout: float = DEFAULT_TIMEOUT,
                 settings: Settings = Settings()) -> FileResult:
    """Grade Python source against an exercise; never raises for anything the student wrote."""
    try:
        the_plan = plan(source, filename, exercise.graded)
    except SyntaxError as exc:
        return _file_error(exercise, first_reference(exercise), filename,
                           f"syntax error at line {exc.lineno}: {exc.msg}")
    if exercise.kind == "training":
        return _grade_training(source=source, filename=filename, exercise=exercise, timeout=timeout,
                               settings=settings)
    with Session(source=source, filename=filename, exercise=exercise, timeout=timeout,
                 allowed=allowed_shortcuts(exercise, settings)) as session:
        return _grade_lines(session, the_plan, source=source, filename=filename, exercise=exercise,
                            timeout=timeout, settings=settings)


def _grade_lines(session: Session, the_plan, *, source: str, filename: str, exercise: Exercise,
                 timeout: float, settings: Settings) -> FileResult:
    """An exercise of lines: every run in one pass of one student process."""
    # Line by line at every configuration; the lecture's run also probes with random upstream gradients.
    probes = diagnose.probe_inputs(exercise, first_public(exercise), the_plan)
    specs = [RunSpec(config, options=Options(probe=i == 0), probes=probes if i == 0 else None)
             for i, config in enumerate(exercise.configs)]
    ref = first_reference(exercise)
    # The lecture's chained run (each line on the student's own upstream gradients) goes along in the
    # same pass: it shares the exchanges after each statement, where a job of its own, for every file
    # with a failing line, would have all of them again.
    specs.append(RunSpec(exercise.configs[0], options=Options(inject=False), ref=ref))
    # So does the float64 run, which tells a near miss that is only rounding: the lecture's own tanh
    # formula is one, in nearly every student's file, and a job of its own would run the file again.
    ref64 = reference(exercise.configs[0], torch.float64)
    specs.append(RunSpec(exercise.configs[0], torch.float64, options=Options(float64=True), ref=ref64))
    # While the student process runs, the grader works out what the probes should give.
    idle = [functools.partial(diagnose.probe_expected, exercise, ref, target, upstream)
            for target, upstream in probes.items()]
    *runs, chained_run, run64 = session.run(specs, idle=idle)
    results, error = judge(exercise, runs, chained_run, run64, probes, settings)
    run = runs[0]
    return FileResult(
        file=filename, exercise=exercise.id, results=with_bank_hints(results, exercise.id), error=error,
        points=exercise.points, output=run.output, notes=tuple(run.notes),
    )


def judge(exercise: Exercise, runs, chained_run, run64, probes, settings: Settings
          ) -> tuple[tuple[TensorResult, ...], str | None]:
    """The verdicts on an exercise of lines, from what its runs answered: one run at each of the
    exercise's configurations (the first with the probes' values), the lecture-style chained run and
    the float64 run; and the file's error, if a run stopped."""
    ref, ref64 = reference(exercise.configs[0]), reference(exercise.configs[0], torch.float64)
    per_config = []
    for config, run in zip(exercise.configs, runs):
        per_config.append((config, _verdicts(exercise, reference(config), run, settings), run))
        # Other sizes can only fail lines that pass here. (Each size counts even after the lecture's run
        # stopped: a size that went on answered, and one that stopped with it says "not reached".)
        if not any(r.status.passed for r in per_config[0][1]):
            break
    run = runs[0]  # the lecture's sizes: the run the report and the diagnosis speak of
    error = next((r.error for _, _, r in per_config if r.error), None)
    results = diagnose.combine_configs(per_config)
    results = diagnose.apply_probes(results, exercise, ref, run, probes)
    refs_and_runs = [(reference(config), r) for config, r in zip(exercise.configs, runs)]
    results = diagnose.apply_error_model(results, exercise, refs_and_runs, probes)
    results = diagnose.apply_branch_hints(results, exercise, ref, run, probes)
    results = diagnose.apply_blame(results, exercise, ref, run)
    results = diagnose.apply_shape_stories(results, exercise, ref, run)
    results = diagnose.apply_mutations(results, run)
    answered = [r for r in results if r.status not in (Status.BLANK, Status.MISSING)]
    if error is None and answered:
        if any(not r.status.passed for r in answered) or run.mutated:
            chained = _verdicts(exercise, ref, chained_run, settings)
        else:
            # Every line passes and nothing changed an answer in place: the lecture-style chain
            # feeds each line the values it was judged on, so its verdicts are the same.
            chained = results
        results = diagnose.apply_chained(results, chained)
        if any(diagnose.is_near_miss(r) for r in results):
            results = diagnose.rounding_hints(results, exercise, ref64, run64, settings)
    return results, error


def with_bank_hints(results: tuple[TensorResult, ...], exercise: str | None = None) -> tuple[TensorResult, ...]:
    """Add the hint bank's short hint to every failing or crashing line."""
    from grader.hints import hint_for

    out = []
    for r in results:
        reached = not (r.hint or "").startswith("not reached")
        bank = hint_for(r.name, exercise) if r.status in (Status.FAIL, Status.ERROR) and reached else None
        out.append(replace(r, about=bank.short) if bank else r)
    return tuple(out)


def _grade_training(*, source: str, filename: str, exercise: Exercise, timeout: float,
                    settings: Settings) -> FileResult:
    """Exercise 4: the gradients at a few steps of autograd's trajectory, then a training run.

    A parameter's gradient is judged on the student's own chain, as the loop computes it; an
    intermediate the loop assigns (`dlogits`, `dhprebn`, ...) is judged on the right upstream
    gradients (teacher-forced), so the report shows the line where the chain breaks."""
    from grader.training import TrainingComparison, autograd_run, compare_training

    references, _ = autograd_run(exercise.configs[0])
    specs = [RunSpec(ref.config, ref.tensors["loss"].dtype, ref.step, Options(inject=inject), ref)
             for ref in references for inject in (True, False)]
    with Session(source=source, filename=filename, exercise=exercise, timeout=timeout,
                 allowed=allowed_shortcuts(exercise, settings)) as session:
        all_runs = session.run(specs)
    per_step, runs = [], []
    for i, ref in enumerate(references):
        taught, chained = all_runs[2 * i], all_runs[2 * i + 1]
        by_taught = {r.name: r for r in _verdicts(exercise, ref, taught, settings)}
        by_chained = {r.name: r for r in _verdicts(exercise, ref, chained, settings)}
        per_step.append(tuple(_chain_verdict(by_taught, by_chained, name) for name in by_taught))
        runs.append(taught)
        if taught.error or chained.error:
            runs.append(chained)
            break
    results = tuple(_worst([step[i] for step in per_step]) for i in range(len(per_step[0])))
    # Name the mistake of a wrong line in what the loop computes for it, on the right upstream gradients.
    assigned = frozenset(t for t in exercise.intermediates if runs[0].answers.get(t) is not None
                         and runs[0].answers[t].kind != "missing")
    results = diagnose.apply_error_model(results, exercise, [(references[0], runs[0])], {}, given=assigned)
    error = next((run.error for run in runs if run.error), None)
    training = None
    unfinished = [r.name for r in results if r.scored and r.status in (Status.BLANK, Status.MISSING, Status.ERROR)]
    if unfinished:
        training = TrainingComparison.skipped(f"not run until every gradient runs ({', '.join(unfinished)} not yet)")
    elif error is None:
        training = compare_training(
            source=source, filename=filename, targets=exercise.targets, config=exercise.configs[0],
            timeout=max(60.0, timeout), allowed=allowed_shortcuts(exercise, settings),
        )
    return FileResult(
        file=filename, exercise=exercise.id, results=with_bank_hints(results, exercise.id), error=error,
        points=exercise.points, output=runs[0].output, notes=tuple(runs[0].notes), training=training,
    )


def _chain_verdict(taught: dict[str, TensorResult], chained: dict[str, TensorResult], name: str) -> TensorResult:
    """One row of exercise 4: an intermediate as taught; a parameter as chained, and when only the
    chain makes it wrong, the intermediate where the chain breaks."""
    mine, own = taught[name], chained[name]
    if not mine.scored:
        return replace(mine, chained=own.status.value)
    if own.status.passed or not mine.status.passed:
        return replace(own, chained=own.status.value)
    broken = next((r.name for r in taught.values() if not r.scored and not r.status.passed), None)
    where = f"at `{broken}`" if broken else "in a line above it"
    return replace(own, chained=own.status.value, hint=(
        f"your line for `{name}` is right on the right upstream gradients, but your loop's own upstream "
        f"gradients are off: the chain breaks earlier, {where}"))


def resolve_exercise(*, source: str, path: str, exercise: str | None) -> Exercise:
    """The exercise named by `--exercise`, else the one the file answers; one sentence if neither."""
    if exercise is not None:
        if exercise not in BY_ID:
            raise SubmissionError(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
        return BY_ID[exercise]
    chosen = detect_exercise(source=source, filename=path)
    if chosen is None:
        raise SubmissionError(
            f"cannot tell which exercise {path} answers: it assigns none of the gradient names; "
            f"name the file after the exercise (ex1_backprop_all.py) or pass --exercise"
        )
    return chosen


@dataclass
class Loaded:
    """A submission read from disk: the source to grade, its exercise, and for a notebook where
    each line of the source came from (cell, line in cell)."""

    source: str
    exercise: Exercise
    origin: dict[int, tuple[int, int]] | None = None
    assigned: frozenset[str] | None = None  # every name the whole file assigns (`all_assigned`)
    notes: tuple[str, ...] = ()  # what the reader noticed: cells that do not parse
    statements: tuple = ()  # every statement of the file, to align its forward pass with the lecture's

    def all_assigned(self) -> frozenset[str]:
        """Every name the whole file assigns, for --names suggestions (worked out when first asked:
        most files never need it)."""
        if self.assigned is None:
            self.assigned = frozenset(assigned_in(self.source))
        return self.assigned


def scope_names(exercise: Exercise) -> set[str]:
    """The names the grader provides to an exercise's code (a notebook's own copies are not graded)."""
    ref = first_reference(exercise)
    tensors = set(ref.tensors) if exercise.scope is None else set(exercise.scope)
    return tensors | set(ref.sizes) | set(exercise.given)


def _check_path(path: str) -> None:
    if Path(path).is_dir():
        raise SubmissionError(f"{path} is a directory, not a Python file or notebook")
    if Path(path).suffix not in (".py", ".ipynb"):
        raise SubmissionError(f"{path} is not a Python file or a notebook (expected .py or .ipynb)")


def load_submissions(*, path: str | Path, exercise: str | None = None, names: dict[str, str] | None = None,
                     data: bytes | None = None) -> list[Loaded]:
    """Read a `.py` or `.ipynb` file: one `Loaded` per exercise it answers (a notebook may answer
    several; `exercise` picks one). `data`: the file's bytes, when they were read already (`path`
    then only names it). Raises `SubmissionError` (one sentence)."""
    path = str(path)
    _check_path(path)
    text = read_source(path, data)
    if Path(path).suffix == ".py":
        from grader.notebooks import renamed

        text = renamed(text, names or {})
        try:
            statements = tuple(parse(text, path).body)
        except SyntaxError:
            statements = ()
        return [Loaded(text, resolve_exercise(source=text, path=path, exercise=exercise), statements=statements)]
    from grader.notebooks import notebook_cells, read_notebook, tagged_source

    notebook = read_notebook(path, text)
    tagged = tagged_source(notebook)
    cells = notebook_cells(notebook, names)
    if tagged is not None:
        chosen = resolve_exercise(source=tagged.source, path=path, exercise=exercise)
        statements = tuple(node for cell in cells if cell.tree is not None for node in cell.tree.body)
        return [Loaded(tagged.source, chosen, tagged.origin, frozenset(assigned_in(tagged.source)),
                       tuple(cell.problem for cell in cells if cell.problem), statements)]
    if exercise is not None and exercise not in BY_ID:
        raise SubmissionError(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
    return loaded_from_cells(cells, what=path, exercise=exercise)


def loaded_from_cells(cells, *, what: str, exercise: str | None = None, forced: str | None = None,
                      plural: bool = False) -> list[Loaded]:
    """One `Loaded` per exercise block of a notebook's cells (or a kernel's), `exercise` only when
    given; `forced`: see `notebooks.blocks`. Raises `SubmissionError` naming `what` when there is none."""
    from grader.notebooks import all_assigned, exercise_sources

    statements = tuple(node for cell in cells if cell.tree is not None for node in cell.tree.body)
    assigned = frozenset(all_assigned(cells))
    found = exercise_sources(cells, BY_ID, scope_names, forced=forced)
    if exercise is not None:
        found = [source for source in found if source.exercise == exercise]
    if not found:
        raise SubmissionError(not_found(what, exercise=exercise, assigned=set(assigned), statements=statements,
                                        plural=plural))
    notes = tuple(cell.problem for cell in cells if cell.problem)
    return [Loaded(source.source, BY_ID[source.exercise], source.origin, assigned, notes, statements)
            for source in found]


def _what_each_exercise_looks_like(exercise: str) -> str:
    return {
        "ex1": "its gradients are assigned one per statement (dlogprobs, ..., dC)",
        "ex2": "it is a `dlogits = ...` from `logits`, in a cell of its own",
        "ex3": "it is a `dhprebn = ...` from `dhpreact`, in a cell of its own",
        "ex4": "it is the backward pass inside a training loop (for ...: ... dW1 = ...)",
    }[exercise]


def cell_where(origin: dict[int, tuple[int, int]], line: int) -> tuple[int | None, int]:
    return origin.get(line, (None, line))


def _in_cells(result: FileResult, origin: dict[int, tuple[int, int]]) -> FileResult:
    """Line numbers of the assembled source, back in the notebook's cells, everywhere a person reads one."""
    import re

    def notes(text):
        def one(match):
            cell, line = cell_where(origin, int(match.group(2)))
            return f"{match.group(1)}cell {cell}, line {line}" if cell is not None else match.group(0)

        return re.sub(r"(\(?)\bline (\d+)", one, text)

    results = tuple(replace(r, cell=cell_where(origin, r.line)[0], line=cell_where(origin, r.line)[1],
                            hint=notes(r.hint) if r.hint else r.hint) if r.line else
                    replace(r, hint=notes(r.hint) if r.hint else r.hint)
                    for r in result.results)
    return replace(result, results=results, notes=tuple(notes(n) for n in result.notes),
                   error=notes(result.error) if result.error else None,
                   training=replace(result.training, error=notes(result.training.error))
                   if result.training is not None and result.training.error else result.training)


def grade_file(*, path: str | Path, exercise: str | None = None, timeout: float = DEFAULT_TIMEOUT,
               settings: Settings = Settings(), names: dict[str, str] | None = None) -> FileResult:
    """Grade one `.py` or `.ipynb` file's exercise (the first, for a notebook that answers several).
    Raises `SubmissionError` (one sentence) when it cannot be graded."""
    return grade_path(path=path, exercise=exercise, timeout=timeout, settings=settings, names=names)[0]


def grade_path(*, path: str | Path, exercise: str | None = None, timeout: float = DEFAULT_TIMEOUT,
               settings: Settings = Settings(), names: dict[str, str] | None = None) -> list[FileResult]:
    """Grade every exercise a `.py` or `.ipynb` file answers (`exercise`: only that one), one result each."""
    return [grade_loaded(loaded, filename=str(path), timeout=timeout, settings=settings)
            for loaded in load_submissions(path=path, exercise=exercise, names=names)]


def grade_loaded(loaded: Loaded, *, filename: str, timeout: float, settings: Settings) -> FileResult:
    """Grade what `load_submissions` read, and report it against the file as the student sees it."""
    result = grade_source(source=loaded.source, filename=filename, exercise=loaded.exercise,
                          timeout=timeout, settings=settings)
    result = _suggest_for_missing(result, loaded)
    if loaded.origin is not None:
        result = _in_cells(result, loaded.origin)
    return replace(result, notes=loaded.notes + result.notes) if loaded.notes else result


def _suggest_for_missing(result: FileResult, loaded: Loaded) -> FileResult:
    """A gradient that does not pass, in a file whose names look like renamings of the lecture's (a
    look-alike of a missing gradient, a forward tensor or size of the student's own forward pass that
    the graded lines read): suggest the --names mapping, on the row and ready to paste for the file."""
    missing = tuple(r.name for r in result.results if r.status is Status.MISSING)
    if all(r.status.passed for r in result.results):
        return result
    if loaded.origin is None and not missing:
        return result  # (in a .py file only a missing gradient can be renamed: the grader provides the rest)
    try:
        reads = {n.id for node in ast.parse(loaded.source).body for n in ast.walk(node) if isinstance(n, ast.Name)}
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        reads = set()
    guesses = suggest_names(set(loaded.all_assigned()), missing, loaded.statements, reads)
    if loaded.origin is None:  # a .py file has no forward pass of its own: a helper is no renamed tensor
        provided = scope_names(loaded.exercise)
        guesses = {old: new for old, new in guesses.items() if new not in provided}
    if not guesses:
        return result
    by_target = {new: old for old, new in guesses.items()}
    return replace(result, names=mapping_text(guesses), results=tuple(
        replace(r, hint=f"`{r.name}` is never assigned; is your `{by_target[r.name]}` it? "
                        f"Then grade with --names {by_target[r.name]}={r.name}")
        if r.name in by_target else r
        for r in result.results))


@dataclass(frozen=True)
class OverviewEntry:
    """One exercise in the `grade` overview: its file's result, or why there is none."""

    exercise: Exercise
    path: Path
    result: FileResult | None = None
    problem: str | None = None
    why: str = ""  # why this file of the exercise's two (`kit.chosen_file`)

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.passed

    def next_step(self) -> str | None:
        """The first thing to fix, in backward order: `dbnvar` in ex1, line 31."""
        if self.problem:
            return self.problem
        result = self.result
        if result.error:
            return f"fix {self.exercise.id}: {result.error}"
        failing = [r for r in result.results if not r.status.passed]
        if failing:  # the first in the file: where a student reading top-down would start
            r = min(failing, key=lambda r: (r.cell or 0, r.line) if r.line is not None else (float("inf"), 0))
            where = (f", cell {r.cell}, line {r.line}" if r.cell else f", line {r.line}") if r.line else ""
            return f"`{r.name}` in {self.exercise.id}{where} ({r.status.value})"
        if result.training is not None and not result.training.passed:
            return f"{self.exercise.id}'s training run: {result.training.describe()}"
        return None

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise.id,
            "file": str(self.path),
            "passing": self.result.passing if self.result else 0,
            "checks": self.result.checks if self.result else self.exercise.checks,
            "passed": self.passed,
            "next": self.next_step(),
            "result": self.result.to_dict() if self.result else None,
        }


def overview(*, directory: Path, timeout: float = DEFAULT_TIMEOUT, settings: Settings = Settings()) -> list[OverviewEntry]:
    """Grade every exercise's file under `directory` (`exercises/` in a checkout, or a folder that
    `grade init` made): the `.py` or the notebook, whichever the student worked on last."""
    from grader.kit import chosen_file

    entries = []
    for exercise in EXERCISES:
        path, why = chosen_file(directory, exercise)
        if path is None:
            path = directory / f"{exercise.slug}.py"
            entries.append(OverviewEntry(exercise, path, problem=f"not started: {path} does not exist"))
            continue
        try:
            result = grade_file(path=path, exercise=exercise.id, timeout=timeout, settings=settings)
        except SubmissionError as exc:
            entries.append(OverviewEntry(exercise, path, problem=str(exc), why=why))
            continue
        entries.append(OverviewEntry(exercise, path, result, why=why))
    return entries
