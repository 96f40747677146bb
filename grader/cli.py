"""The `grade` command: a thin click layer over `grader.grading`."""

from __future__ import annotations

import os
import sys

import click

from grader.execution import DEFAULT_TIMEOUT, SubmissionError
from grader.network import DataError


class DefaultGroup(click.Group):
    """A group whose default command grades files: `grade FILE` means `grade files FILE`."""

    default_command = "files"

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("grade", "[PATH]... [--json] [--exercise ID] [--timeout S]\n       grade COMMAND [ARGS]...")


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backprop-ninja", prog_name="backprop-ninja")
def cli():
    """Grade hand-written backward passes, tensor by tensor.

    \b
    grade exercises/ex1_backprop_all.py          the per-tensor table
    grade exercises/ex1_backprop_all.py --json   the same as JSON
    """


@cli.command(name="files")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per file; a list for several).")
@click.option("--exercise", metavar="ID", help="The exercise the files answer (default: from the file name).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds the student's code may run.")
def files_command(paths, as_json, exercise, timeout):
    """Grade .py files and print, for every gradient, its verdict and a hint.

    Example: grade exercises/ex1_backprop_all.py
    """
    from grader.grading import grade_file
    from grader.reports import json_report, text_report

    if not paths:
        raise click.UsageError("give the file to grade, e.g. `grade exercises/ex1_backprop_all.py`")
    results, problems = [], 0
    for path in paths:
        try:
            results.append(grade_file(path=path, exercise=exercise, timeout=timeout))
        except (SubmissionError, DataError) as exc:
            problems += 1
            click.echo(f"Error: {exc}.", err=True)
    if as_json and results:
        click.echo(json_report(results))
    elif results:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        click.echo("\n\n".join(text_report(r, color=color) for r in results), color=color)
    if problems:
        sys.exit(2)
    sys.exit(0 if all(r.passed for r in results) else 1)


def main() -> None:
    """The console script: run the CLI, then leave without torch's slow interpreter shutdown."""
    try:
        import torch

        torch.set_num_threads(1)  # tiny tensors: threads only cost, and forking stays safe
        cli.main(prog_name="grade")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
