"""Verdicts: compare a student's answer with the reference gradient and say why it differs.

Runs only in the grader's own process, on values decoded from the student process,
so nothing the student's code did (say, reassigning `torch.allclose`) can reach it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import Enum

import torch

from grader.execution import Answer

RTOL, ATOL = 1e-5, 1e-8


@dataclass(frozen=True)
class Settings:
    """What an instructor may tune: the tolerance of `approx`, and whether a wrong shape whose
    values are right fails (the default) or only warns."""

    rtol: float = RTOL
    atol: float = ATOL
    shape_gate: str = "fail"  # "fail" | "warn"
    allow: dict[str, tuple[str, ...]] = field(default_factory=dict)  # exercise id -> functions also allowed


def load_settings(path: str) -> Settings:
    """Settings from an instructor's TOML file; `ValueError` (one sentence) when it is unusable.

        [grading]
        rtol = 1e-5
        atol = 1e-8
        shape_gate = "warn"      # a wrong shape with right values passes, with a warning

        [exercises.ex1]
        allow = ["softmax"]      # functions a line may use beyond the defaults
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError("reading a settings file needs Python 3.11 or the tomli package") from None
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ValueError(f"the settings file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the settings file {path} is not valid TOML: {exc}") from None
    grading = data.get("grading", {})
    unknown = set(grading) - {"rtol", "atol", "shape_gate"}
    if unknown:
        raise ValueError(f"the settings file {path} has unknown keys in [grading]: {', '.join(sorted(unknown))}")
    try:
        rtol, atol = float(grading.get("rtol", RTOL)), float(grading.get("atol", ATOL))
    except (TypeError, ValueError):
        raise ValueError(f"rtol and atol in {path} must be numbers") from None
    shape_gate = grading.get("shape_gate", "fail")
    if shape_gate not in ("fail", "warn"):
        raise ValueError(f"shape_gate in {path} must be \"fail\" or \"warn\", not {shape_gate!r}")
    allow = {}
    for exercise, table in data.get("exercises", {}).items():
        names = table.get("allow", []) if isinstance(table, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"[exercises.{exercise}] allow in {path} must be a list of names")
        allow[exercise] = tuple(names)
    return Settings(rtol=rtol, atol=atol, shape_gate=shape_gate, allow=allow)


class Status(str, Enum):
    EXACT = "exact"
    APPROX = "approx"
    FAIL = "fail"
    BLANK = "blank"
    MISSING = "missing"
    ERROR = "error"

    @property
    def passed(self) -> bool:
        return self in (Status.EXACT, Status.APPROX)


@dataclass(frozen=True)
class TensorResult:
    """The verdict on one gradient."""

    name: str  # dlogprobs
    tensor: str  # logprobs
    status: Status
    maxdiff: float | None = None
    expected_shape: tuple[int, ...] | None = None
    got_shape: tuple[int, ...] | None = None
    line: int | None = None
    hint: str | None = None
    policy: str | None = None  # "autograd" or "shortcut" when the line used what an answer may not
    chained: str | None = None  # the status with the student's own upstream gradients, as the lecture runs it
    probe: str | None = None  # "pass"/"fail": the line re-run on random upstream gradients
    warning: str | None = None  # said even when the line passes
    about: str | None = None  # on a failing line: the hint bank's short hint for this gradient
    cell: int | None = None  # in a notebook: the cell (1-based) that `line` is in
    failed_at: str | None = None  # the configuration a line fails at when it passes at the lecture's sizes
    mistake: str | None = None  # the kind of mistake the error model found (`grader.mistakes`): "dim", "sign", ...
    scored: bool = True  # False for an intermediate graded only to say where a chain breaks (exercise 4)

    def to_dict(self) -> dict:
        data = {name: getattr(self, name) for name in _RESULT_FIELDS}  # (every value is immutable: no copies)
        data["status"] = self.status.value
        for key in ("expected_shape", "got_shape"):
            data[key] = list(data[key]) if data[key] is not None else None
        if data["maxdiff"] is not None and not math.isfinite(data["maxdiff"]):
            data["maxdiff"] = str(data["maxdiff"])  # JSON has no inf or nan
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TensorResult":
        """The verdict `to_dict` wrote (as results.jsonl keeps it)."""
        values = {name: data.get(name) for name in _RESULT_FIELDS if name in data}
        values["status"] = Status(data["status"])
        for key in ("expected_shape", "got_shape"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if values.get("maxdiff") is not None:
            values["maxdiff"] = float(values["maxdiff"])
        return cls(**values)


_RESULT_FIELDS = tuple(f.name for f in fields(TensorResult))


@dataclass(frozen=True)
class FileResult:
    """The verdicts on one student file."""

    file: str
    exercise: str | None
    results: tuple[TensorResult, ...] = ()
    error: str | None = None
    points: float = 1.0
    output: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    training: object | None = None  # exercise 4: a `training.TrainingComparison`, worth one target's points
    names: str | None = None  # a suggested --names mapping (old=new,...) when names look renamed

    @property
    def passing(self) -> int:
        """Checks passed: gradients, plus the training run where there is one."""
        return sum(r.status.passed for r in self.results if r.scored) + bool(
            self.training is not None and self.training.passed)

    @property
    def checks(self) -> int:
        return sum(r.scored for r in self.results) + (self.training is not None)

    @property
    def score(self) -> float:
        return self.points * self.passing

    @property
    def max_score(self) -> float:
        return self.points * self.checks

    @property
    def passed(self) -> bool:
        return self.error is None and self.passing == self.checks

    @property
    def parses(self) -> bool:
        """False for a file that is not valid Python: nothing in it ran."""
        return not (self.error or "").startswith("syntax error")

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "exercise": self.exercise,
            "score": self.score,
            "max_score": self.max_score,
            "points": self.points,
            "error": self.error,
            "results": [r.to_dict() for r in self.results],
            "output": self.output,
            "notes": list(self.notes),
            "training": self.training.to_dict() if self.training is not None else None,
            "names": self.names,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FileResult":
        """The verdicts `to_dict` wrote: what a class's outputs are built from, long after grading."""
        from grader.training import TrainingComparison

        training = data.get("training")
        return cls(file=data["file"], exercise=data["exercise"],
                   results=tuple(TensorResult.from_dict(r) for r in data["results"]), error=data.get("error"),
                   points=data["points"],
                   output=data.get("output", ""), notes=tuple(data.get("notes", ())),
                   training=TrainingComparison.from_dict(training) if training is not None else None,
                   names=data.get("names"))


def shape_text(shape) -> str:
    """`(32, 27)`, and `(64,)` for one axis, as Python prints a tuple."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape two shapes broadcast to, None when they do not (as `torch.broadcast_shapes`, which
    would import sympy, a fifth of a second, the first time it is called)."""
    width = max(len(a), len(b))
    a, b = (1,) * (width - len(a)) + tuple(a), (1,) * (width - len(b)) + tuple(b)
    if any(x != y and x != 1 and y != 1 for x, y in zip(a, b)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def shape_hint(name: str, tensor: str, expected: tuple[int, ...], got: tuple[int, ...]) -> str:
    """Why a gradient has the wrong shape, in terms of the likely mistake."""
    base = f"`{name}` has shape {shape_text(got)} but `{tensor}` has shape {shape_text(expected)}"
    if len(got) == 2 and got == expected[::-1]:
        return f"{base}: that is the transpose; did you mean `.T`, or the operands of `@` the other way round?"
    squeezed = tuple(s for s in expected if s != 1)
    if got == squeezed and len(got) < len(expected):
        return f"{base}: a size-1 axis is missing; sum with `keepdim=True`"
    if tuple(s for s in got if s != 1) == expected and len(got) > len(expected):
        return f"{base}: it has an extra size-1 axis; drop `keepdim=True` or the extra axis"
    broadcast = broadcast_shape(expected, got)
    if broadcast == got:
        offset = len(got) - len(expected)
        dims = list(range(offset)) + [
            offset + i for i, s in enumerate(expected) if s == 1 and got[offset + i] != 1
        ]
        which = "dim " + ", ".join(str(d) for d in dims) if len(dims) > 1 else f"dim {dims[0]}"
        keep = " with `keepdim=True`" if offset == 0 else ""
        return (
            f"{base}: `{tensor}` was broadcast to {shape_text(got)} in the forward pass, "
            f"so its gradient must be summed over {which}{keep}"
        )
    if math.prod(got) == math.prod(expected):
        return f"{base}: the same number of entries in another arrangement; check your `view`/`reshape`"
    return f"{base}: a gradient always has the shape of its tensor"


def compare(answer: Answer, expected: torch.Tensor, tensor: str, *, settings: Settings = Settings(),
            n: int | None = None) -> TensorResult:
    """The verdict on one answer against its reference gradient."""
    rtol, atol = settings.rtol, settings.atol
    name = answer.name
    expected_shape = tuple(expected.shape)
    common = dict(name=name, tensor=tensor, expected_shape=expected_shape, line=answer.line)
    if answer.kind == "blank":
        return TensorResult(status=Status.BLANK, **common)
    if answer.kind == "missing":
        return TensorResult(status=Status.MISSING, hint=f"`{name}` is never assigned", **common)
    if answer.kind == "error":
        return TensorResult(status=Status.ERROR, hint=answer.message, **common)
    if answer.kind == "other" or answer.value is None:
        return TensorResult(
            status=Status.FAIL,
            hint=f"`{name}` is {answer.description}, not a tensor; build it with torch operations",
            **common,
        )
    got = answer.value
    got_shape = tuple(got.shape)
    common["got_shape"] = got_shape
    if got_shape != expected_shape:
        hint = shape_hint(name, tensor, expected_shape, got_shape)
        if got.numel() == expected.numel() and got.dtype == expected.dtype and torch.allclose(
            got.reshape(expected_shape), expected, rtol=rtol, atol=atol
        ):
            if settings.shape_gate == "warn":
                return TensorResult(status=Status.APPROX, maxdiff=(got.reshape(expected_shape) - expected).abs().max().item(),
                                    warning=f"the values are right but the shape is not: {hint}", **common)
            hint = f"the values are right; only the shape is wrong. {hint}"
        return TensorResult(status=Status.FAIL, hint=hint, **common)
    if got.dtype != expected.dtype:
        return TensorResult(
            status=Status.FAIL,
            hint=f"`{name}` has dtype {str(got.dtype).removeprefix('torch.')} but `{tensor}` is "
            f"{str(expected.dtype).removeprefix('torch.')}; a gradient has the dtype of its tensor",
            **common,
        )
    if got is expected:  # (an answer equal to the bit arrives as the reference itself: the common case)
        return TensorResult(status=Status.EXACT, maxdiff=0.0, **common)
    finite = bool(torch.isfinite(got).all())
    if finite and torch.equal(got, expected):  # (before any arithmetic)
        return TensorResult(status=Status.EXACT, maxdiff=0.0, **common)
    if not finite:
        nan, inf = int(torch.isnan(got).sum()), int(torch.isinf(got).sum())
        parts = [f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else ""]
        return TensorResult(
            status=Status.FAIL,
            maxdiff=math.inf,
            hint=f"`{name}` has {' and '.join(p for p in parts if p)} values; look for a division by zero or a log of 0",
            **common,
        )
    maxdiff = (got - expected).abs().max().item() if got.numel() else 0.0
    if torch.allclose(got, expected, rtol=rtol, atol=atol):
        return TensorResult(status=Status.APPROX, maxdiff=maxdiff, **common)
    return TensorResult(status=Status.FAIL, maxdiff=maxdiff, hint=value_hint(name, got, expected, rtol, atol, n), **common)


def classic_factors(n: int | None) -> dict[str, float]:
    """Factors a gradient is classically off by, with the mistake each suggests."""
    factors = {"2": 2.0, "0.5 (1/2)": 0.5}
    if n:
        factors.update({"n": float(n), "1/n": 1.0 / n})
        if n > 1:
            factors.update({"n/(n-1)": n / (n - 1), "(n-1)/n": (n - 1) / n, "n-1": n - 1.0, "1/(n-1)": 1.0 / (n - 1)})
    return factors


def factor_hint(name: str, got: torch.Tensor, expected: torch.Tensor, n: int | None) -> str | None:
    """When the answer is the reference times a constant: name the constant (and the classic mistake)."""
    scale = (expected * expected).sum()
    if not scale > 0:
        return None
    factor = ((got * expected).sum() / scale).item()
    if not torch.allclose(got, factor * expected, rtol=1e-4, atol=1e-7 * expected.abs().max().item()):
        return None
    if abs(factor + 1) < 1e-4:
        return f"`{name}` has the right size but the opposite sign"
    if abs(factor - 1) < 1e-3:
        return None  # the same size: not a factor, whatever else is off
    for label, value in classic_factors(n).items():
        if abs(factor - value) < 1e-4 * max(1.0, abs(value)):
            return f"`{name}` is {label} times the right gradient"
    return f"`{name}` is {factor:.4g} times the right gradient: a constant factor is off"


def value_hint(name: str, got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float,
               n: int | None = None) -> str | None:
    """What a wrong value most likely means, when the shape is right."""
    if not got.any() and expected.any():
        return f"`{name}` is all zeros; was an accumulation (`+=`) overwritten?"
    hint = factor_hint(name, got, expected, n)
    if hint:
        return hint
    wrong = ~torch.isclose(got, expected, rtol=rtol, atol=atol)
    count, total = int(wrong.sum()), got.numel()
    if got.dim() >= 1 and count <= max(3, total // 20):
        rows = sorted({int(i) for i in wrong.nonzero()[:, 0].tolist()})
        first = tuple(int(i) for i in wrong.nonzero()[0].tolist())
        shown = ", ".join(str(r) for r in rows[:6]) + (", ..." if len(rows) > 6 else "")
        return (f"`{name}` is right except in {count} of {total} entries (row{'s' if len(rows) > 1 else ''} "
                f"{shown}; first at {list(first)}): look at ties, an index or a special case")
    return f"{count} of {total} entries of `{name}` are wrong"
