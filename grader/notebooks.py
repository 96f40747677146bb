"""Notebooks as submissions: the Python source of a notebook's code cells.

Cells are joined in order, each preceded by a `# cell N` comment; IPython's
magics and shell escapes (`%...`, `!...`) become comments so the source parses.
"""

from __future__ import annotations

import json

import nbformat

from grader.execution import SubmissionError


def notebook_source(path: str, text: str) -> str:
    """The code of a notebook file, or a `SubmissionError` saying in one sentence why not."""
    try:
        notebook = nbformat.reads(text, as_version=4)
    except (json.JSONDecodeError, nbformat.reader.NotJSONError):
        raise SubmissionError(f"{path} is not a notebook (not JSON)") from None
    except Exception as exc:  # nbformat raises several kinds for a malformed notebook
        raise SubmissionError(f"{path} is not a valid notebook: {str(exc).splitlines()[0][:200]}") from None
    parts = []
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        lines = [f"# {line}" if line.lstrip().startswith(("%", "!")) else line
                 for line in str(cell.get("source", "")).splitlines()]
        parts.append(f"# cell {number}\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"
