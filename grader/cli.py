"""The `grade` command: a thin click layer over `grader.grading`."""

from __future__ import annotations

import os
import sys

import click

from grader.configs import DEFAULT_TIMEOUT, DataError, SubmissionError


class BadInput(click.ClickException):
    """Unusable input: one sentence on stderr and exit status 2 (SPEC)."""

    exit_code = 2


class DefaultGroup(click.Group):
    """A group whose default command grades files: `grade FILE` means `grade files FILE`."""

    default_command = "files"

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("grade", "[PATH]... [OPTIONS]\n       grade COMMAND [ARGS]...")


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backprop-ninja", prog_name="backprop-ninja")
def cli():
    """Grade hand-written backward passes, tensor by tensor.

    \b
    grade init                                   a fresh folder of exercises, anywhere
    grade                                        every exercise, one line each
    grade list                                   where each exercise stands
    grade exercises/ex1_backprop_all.py          the per-tensor table
    grade exercises/ex1_backprop_all.py --json   the same as JSON
    grade exercises/ex4_training.py --train      train the network on your gradients
    grade --watch exercises/ex1_backprop_all.py  grade again at every save

    The options for grading files (--json, --exercise, --names, --watch, ...):
    grade files --help
    """


@cli.command(name="files")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per file; a list for several).")
@click.option("--exercise", metavar="ID",
              help="Grade only this exercise (default: a file's, from its name or its gradients; every "
                   "exercise a notebook answers).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds the student's code may run (all sizes of a file together).")
@click.option("--dir", "directory", type=click.Path(), default=None,
              help="With no PATH: the folder whose exercises the overview grades (default: ./exercises, "
                   "else this folder when `grade init` made it).")
@click.option("--train", is_flag=True, help="Exercise 4: run the lecture's full optimisation on your gradients.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="With --train: train this many steps.")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="An instructor's TOML settings file: tolerances, the shape gate, allowed functions.")
@click.option("--names", "names_text", metavar="MAP", default=None,
              help="Your own gradient names: old=new,... (e.g. d_log_probs=dlogprobs) or a file of such lines.")
@click.option("--watch", is_flag=True, help="Grade again whenever a file is saved (Ctrl-C to stop).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the report as one HTML page: the forward pass drawn as a graph, each tensor "
                   "coloured by its verdict, beside the table (opens anywhere, offline).")
def files_command(paths, as_json, exercise, timeout, directory, train, steps, config_path, names_text, watch,
                  html_path):
    """Grade .py and .ipynb files and print, for every gradient, its verdict and a hint.
    With no PATH, grade every exercise under ./exercises, one line each.

    Example: grade exercises/ex1_backprop_all.py
    """
    from grader.exercises import EX1
    from grader.words import Prefetch

    prefetch = Prefetch(EX1.configs)  # the word lists' splits, on the other core, while torch is imported
    _start_torch()
    from grader.execution import LOCAL, shared_for

    prefetch.collect()
    LOCAL.start()  # now, while this process has computed nothing: the clean worker is a fork of it

    LOCAL.prepare((None, shared_for(EX1)))  # the usual forward passes, while this process reads the file
    from grader.grading import grade_path
    from grader.reports import json_report, text_report, use_color

    from grader.compare import Settings, load_settings

    if steps is not None and not train:
        raise click.UsageError("--steps goes with --train")
    from pathlib import Path

    from grader.notebooks import parse_names

    try:
        settings = load_settings(config_path) if config_path else Settings()
        if names_text and "=" not in names_text:  # a file of old=new lines
            names_text = Path(names_text).read_text(encoding="utf-8")
        names = parse_names(names_text)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise BadInput(str(exc)) from None
    if watch:
        from grader.watch import watch as watch_loop

        watch_loop(paths=[Path(p) for p in paths], directory=Path(directory or ".") if paths else _folder(directory),
                   exercise=exercise, timeout=timeout, settings=settings, names=names, echo=click.echo)
        sys.exit(0)
    if not paths:
        if train:
            raise click.UsageError("--train needs the exercise 4 file: grade exercises/ex4_training.py --train")
        _overview(directory=_folder(directory), timeout=timeout, as_json=as_json, settings=settings)
    if train:
        _train(paths=paths, steps=steps, exercise=exercise)
    results, problems = [], 0
    for path in paths:
        try:
            results.extend(grade_path(path=path, exercise=exercise, timeout=timeout, settings=settings, names=names))
        except (SubmissionError, DataError) as exc:
            problems += 1
            click.echo(f"Error: {exc}.", err=True)
    if html_path and results:
        from grader.picture import page

        try:
            Path(html_path).write_text(page(results), encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot write {html_path}: {exc.strerror}") from None
    if as_json and results:
        click.echo(json_report(results))
    elif results:
        color = use_color()
        click.echo("\n\n".join(text_report(r, color=color) for r in results), color=color)
    if problems or not all(r.parses for r in results):  # a file that is not Python cannot be graded
        sys.exit(2)
    sys.exit(0 if all(r.passed for r in results) else 1)


@cli.command(name="batch")
@click.argument("submissions", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Folder for results.jsonl, the gradebook and feedback.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the CPU count); each grades two submissions at a time.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds a submission's code may run (all sizes of a file together).")
@click.option("--exercise", "exercise_ids", metavar="ID", multiple=True,
              help="The assignment's exercises (repeat it, or ex1,ex2; default: every exercise handed in). "
                   "Only these are graded, and a student without one is `missing` it.")
@click.option("--sandbox", type=click.Choice(["auto", "bwrap", "none"]), default="auto", show_default=True,
              help="bubblewrap sandbox for student code (auto: when installed).")
@click.option("--student-pattern", metavar="REGEX",
              help="How to read the student from a loose file's name: a regex with (?P<student>...), "
                   "and optionally (?P<late>...) and (?P<attempt>\\d+).")
@click.option("--config", "config_path", type=click.Path(), default=None, help="An instructor's TOML settings file.")
@click.option("--shard", metavar="I/N", default=None,
              help="Grade only shard I of N (by student), for `grade merge` to join: one machine per shard.")
def batch_command(submissions, out, jobs, timeout, exercise_ids, sandbox, student_pattern, config_path, shard):
    """Grade a class: a folder per student, a folder of loose files, or a .zip of either.

    Writes OUT/results.jsonl (one line per student and exercise, as each finishes),
    OUT/gradebook.csv, OUT/feedback/<student>.txt|.json|.html, OUT/summary.json and
    OUT/report.html, and prints the five hardest gradients and who needs attention.
    Run the same command again after an interruption: only what is missing is graded.

    Example: grade batch submissions/ --out graded/
    """
    from pathlib import Path

    from grader.batch import BatchError, run_batch
    from grader.compare import Settings, load_settings

    from grader.exercises import assigned_exercises

    part = _shard(shard)
    try:
        exercises = assigned_exercises(exercise_ids) if exercise_ids else None
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    _start_torch()
    # SIGTERM (a scheduler, `kill`) stops the batch the way Ctrl-C does.
    previous = _on_sigterm(_raise_interrupt)
    try:
        settings = load_settings(config_path) if config_path else Settings()
        run_batch(submissions=Path(submissions), out=Path(out), jobs=jobs, timeout=timeout, exercises=exercises,
                  sandbox=sandbox, student_pattern=student_pattern, settings=settings, shard=part,
                  log=lambda text: click.echo(text), warn=lambda text: click.echo(text, err=True))
    except (BatchError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:  # --out cannot be written: a file, not a folder; a full disk (what was graded is kept)
        if exc.errno is None:
            raise
        where = exc.filename or out
        raise BadInput(f"cannot write {where}: {exc.strerror}; results.jsonl keeps what was graded") from None
    except KeyboardInterrupt:
        _say_interrupted()
        sys.exit(130)
    except BrokenPipeError:
        _say_interrupted()
        raise  # click silences the closed pipe and exits 1
    finally:
        _on_sigterm(previous)


def _shard(text: str | None) -> tuple[int, int] | None:
    """`--shard 2/3` as (2, 3)."""
    import re

    if text is None:
        return None
    from grader.classbook import MAX_SHARDS, valid_shard

    match = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise BadInput(f"--shard {text}: write it I/N, with I from 1 to N (e.g. --shard 2/3)")
    shard = int(match.group(1)), int(match.group(2))
    if not valid_shard(*shard):
        raise BadInput(f"--shard {text}: N may be at most {MAX_SHARDS}")
    return shard


@cli.command(name="merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Folder for the class's merged outputs.")
def merge_command(parts, out):
    """Join the outputs of `grade batch --shard I/N` (one folder per shard, all N of them) into one
    gradebook, feedback folder, summary and report: the same as grading the class in one run.

    Example: grade merge graded-1 graded-2 graded-3 --out graded
    """
    from pathlib import Path

    from grader.classbook import MergeError, merge

    try:
        merge([Path(p) for p in parts], Path(out), log=lambda text: click.echo(text))
    except MergeError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from None


def _raise_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def _on_sigterm(handler):
    """Install a SIGTERM handler and return the one it replaces (only the main thread may)."""
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _say_interrupted() -> None:
    """The run stopped before its outputs were written; results.jsonl keeps what was graded."""
    try:
        click.echo("interrupted: run the same command again to resume", err=True)
    except OSError:  # stderr is the closed pipe
        pass


@cli.command(name="gradescope")
@click.option("--submission", type=click.Path(), default="/autograder/submission", show_default=True,
              help="The student's files.")
@click.option("--results", type=click.Path(), default="/autograder/results/results.json", show_default=True,
              help="Where Gradescope reads the results.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds the submission's code may run (all sizes of a file together).")
@click.option("--exercise", "exercise_ids", metavar="ID", multiple=True,
              help="An exercise of the assignment (repeat it, or ex1,ex2; default: all four). Each gets its "
                   "tests, failed when no file answers it; a file for another exercise is not graded.")
@click.option("--config", "config_path", type=click.Path(), default=None, help="An instructor's TOML settings file.")
def gradescope_command(submission, results, timeout, exercise_ids, config_path):
    """Grade one Gradescope submission into Gradescope's results.json (used by run_autograder).

    Example: grade gradescope --submission /autograder/submission --exercise ex1,ex2
    """
    from pathlib import Path

    from grader.compare import Settings, load_settings
    from grader.exercises import assigned_exercises

    try:
        exercises = assigned_exercises(exercise_ids)
        settings = load_settings(config_path) if config_path else Settings()
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if not Path(submission).is_dir():
        raise BadInput(f"there is no submission folder {submission}: run this in Gradescope's container, "
                       f"or pass --submission DIR")
    _start_torch()
    from grader.gradescope import gradescope_results, write_results

    data = gradescope_results(submission=Path(submission), timeout=timeout, settings=settings, exercises=exercises,
                              log=click.echo)
    try:
        write_results(data, Path(results))
    except OSError as exc:
        raise BadInput(f"cannot write {results}: {exc.strerror}") from None
    click.echo(f"score {data['score']:g} from {len(data['tests'])} tests; results in {results}")


@cli.command(name="gradescope-bundle")
@click.argument("out", type=click.Path())
@click.option("--exercise", "exercise_ids", metavar="ID", multiple=True,
              help="An exercise of the assignment (repeat it, or ex1,ex2; default: all four).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help=f"Seconds a submission's code may run (default: grade gradescope's, {DEFAULT_TIMEOUT:g}).")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="An instructor's TOML settings file: checked now, bundled as settings.toml.")
def gradescope_bundle_command(out, exercise_ids, timeout, config_path):
    """Write the Gradescope autograder zip (setup.sh, run_autograder and the kit). The options
    become run_autograder's options to `grade gradescope`.

    Example: grade gradescope-bundle autograder.zip --exercise ex1,ex2 --config settings.toml
    """
    from pathlib import Path

    from grader.gradescope import write_bundle

    try:
        names = write_bundle(Path(out), exercises=exercise_ids or None, timeout=timeout,
                             config=Path(config_path) if config_path else None)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror}" if exc.strerror else str(exc)) from None
    click.echo(f"wrote {out} ({len(names)} files): upload it as the assignment's autograder")


@cli.command(name="init")
@click.argument("directory", default="backprop-ninja", type=click.Path())
def init_command(directory):
    """Make a fresh exercise folder: every stub, as a Python file and as a notebook, and a README.

    Example: grade init; grade init my-backprop
    """
    from pathlib import Path

    from grader.kit import KitError, init

    try:
        written = init(Path(directory))
    except (KitError, OSError) as exc:
        raise BadInput(str(exc)) from None
    stubs = sorted({p.stem for p in written if p.suffix in (".py", ".ipynb")})
    click.echo(f"made {directory}/ with {len(stubs)} exercises, each as a .py file and a notebook.\n"
               f"next:\n  cd {directory}\n  open {stubs[0]}.py (or the .ipynb) and fill the first blank\n"
               f"  grade            every exercise, one line each, and what to fix next")


def _folder(directory: str | None):
    """The exercise folder a command works on: --dir, else ./exercises or this folder (`kit.exercise_folder`)."""
    from pathlib import Path

    from grader.kit import exercise_folder

    if directory is not None:
        if not Path(directory).is_dir():
            raise BadInput(f"there is no folder {directory}")
        return Path(directory)
    found = exercise_folder(Path("."))
    if found is None:
        raise BadInput("there are no exercises here: `grade init` makes a folder of them, or pass --dir PATH "
                       "(or the file to grade)")
    return found


@cli.command(name="list")
@click.option("--dir", "directory", type=click.Path(), default=None,
              help="The exercise folder (default: ./exercises, else this folder).")
def list_command(directory):
    """Where each exercise stands: its file and how many gradients are written, without running any.

    Example: grade list
    """
    from grader.kit import standing, standing_text

    click.echo(standing_text(standing(_folder(directory))))


@cli.command(name="reset")
@click.argument("exercise")
@click.option("--dir", "directory", type=click.Path(), default=None,
              help="The exercise folder (default: ./exercises, else this folder).")
@click.option("--yes", is_flag=True, help="Do not ask first.")
def reset_command(exercise, directory, yes):
    """Start an exercise again: put its stub back, as a file and a notebook. Your own files are kept,
    renamed to .bak (then .bak2, ...).

    Example: grade reset ex1
    """
    from grader.kit import KitError, find_exercise, reset

    folder = _folder(directory)
    try:
        chosen = find_exercise(exercise)
    except KitError as exc:
        raise BadInput(str(exc)) from None
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput(f"`grade reset {exercise}` asks first; pass --yes to reset without asking")
        click.confirm(f"Put the blank {chosen.slug}.py and .ipynb back in {folder}/? Your own are kept as backups",
                      abort=True)
    try:
        done = reset(folder, chosen)
    except (KitError, OSError) as exc:
        raise BadInput(str(exc)) from None
    for restored, backup in done:
        click.echo(f"{restored}: fresh" + (f" (yours is now {backup.name})" if backup else " (it was untouched)"))


@cli.command(name="hint")
@click.argument("name")
@click.option("--exercise", default=None, metavar="ID",
              help="The exercise you are on (ex2 asks for dlogits in one go, ex3 for dhprebn): its own words.")
def hint_command(name, exercise):
    """Explain one gradient at length: the forward line, the local derivative, the usual mistakes.

    Example: grade hint dbnvar; grade hint dlogits --exercise ex2
    """
    from grader.exercises import BY_ID, EXERCISES
    from grader.hints import hint_for

    if exercise is not None and exercise not in BY_ID:
        raise BadInput(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
    hint = hint_for(name if name.startswith("d") else "d" + name, exercise)
    if hint is None:
        names = sorted({t for exercise in EXERCISES for t in exercise.targets})
        raise BadInput(f"there is no hint for {name!r}; ask for one of {', '.join(names)}")
    click.echo(f"{name}: {hint.short}\n\n{click.wrap_text(hint.long, width=88, preserve_paragraphs=True)}")


def _overview(*, directory, timeout: float, as_json: bool, settings) -> None:
    """`grade` with no PATH: one progress line per exercise, the next thing to do, the total."""
    import json

    from grader.grading import overview
    from grader.reports import overview_report, use_color

    entries = overview(directory=directory, timeout=timeout, settings=settings)
    if as_json:
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
    else:
        color = use_color()
        click.echo(overview_report(entries, color=color), color=color)
    sys.exit(0 if entries and all(entry.passed for entry in entries) else 1)


def _train(*, paths, steps, exercise) -> None:
    """`--train`: the lecture's full optimisation on the student's exercise 4 gradients."""
    from grader.grading import load_submissions
    from grader.reports import training_report
    from grader.training import FULL_RUN, full_training

    if len(paths) != 1:
        raise click.UsageError("--train takes exactly one file")
    try:
        found = load_submissions(path=paths[0], exercise=exercise)
    except SubmissionError as exc:
        raise BadInput(str(exc)) from None
    # A lecture notebook answers several exercises; the one that trains is exercise 4.
    loaded = next((one for one in found if one.exercise.kind == "training"), found[0])
    source, chosen = loaded.source, loaded.exercise
    if chosen.kind != "training":
        raise click.UsageError(f"--train is for exercise 4; {paths[0]} answers {chosen.id}")
    from grader.reports import progress_bar, _duration

    total = steps or FULL_RUN
    tty = sys.stderr.isatty()
    state = {"warned": False, "printed": -1}

    def on_progress(step, seconds, loss):
        per_step = seconds / max(step, 1)
        eta = _duration(per_step * (total - step))
        line = f"training {progress_bar(step, total, 30)} {step:,}/{total:,} · loss {loss:.4f} · ETA {eta}"
        if tty:
            click.echo("\r" + line, nl=False, err=True)
        elif step * 10 // total > state["printed"]:  # plain lines, one per tenth
            state["printed"] = step * 10 // total
            click.echo(line, err=True)
        warning = slow_warning(per_step, total) if step >= 5 and not state["warned"] else None
        if warning:
            state["warned"] = True
            click.echo("\n" + warning, err=True)

    result = full_training(source=source, filename=paths[0], targets=chosen.targets, steps=total,
                           config=chosen.configs[0], on_progress=on_progress, allowed=chosen.allowed)
    if tty:
        click.echo(err=True)
    click.echo(training_report(result))
    sys.exit(0 if result.error is None else 1)


def slow_warning(per_step: float, total: int, limit: float = 20 * 60) -> str | None:
    """What to say when the student's steps make the full run long (None when it is not)."""
    if per_step * total <= limit:
        return None
    return (
        f"slow: {per_step * 1000:.1f} ms a step, about {per_step * total / 3600:.1f} h for {total:,} steps "
        f"(the reference solution takes about 0.5 ms). The usual cause is a Python loop in the backward pass, "
        f"over Xb for dC: one vectorised call such as Tensor.index_add_ does the whole batch at once."
    )


def _start_torch() -> None:
    """Import torch, for the commands that grade (`--help` and `hint` never do)."""
    import gc

    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only cost, and forking stays safe
    # Everything imported so far lives as long as the process: the collector need never scan it
    # again (with torch's million objects, each full collection would cost tens of milliseconds).
    gc.freeze()


def main() -> None:
    """The console script: run the CLI, then leave without torch's slow interpreter shutdown."""
    try:
        cli.main(prog_name="grade")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
