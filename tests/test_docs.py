"""The README stays true: its commands are the ones CI runs, and every CLI command has help."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from grader.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def setup_commands() -> list[str]:
    section = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second():
    install_and_grade, install_and_test = setup_commands()
    assert "torch==2.13.0" in install_and_grade and "grade init" in install_and_grade  # a student's path
    assert "solutions" not in install_and_grade
    assert install_and_test in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_every_command_has_help_text():
    for name, command in cli.commands.items():
        assert command.help, name
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name
