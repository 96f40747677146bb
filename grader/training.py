"""Exercise 4: the student's backward pass inside the lecture's training loop.

Three things are measured, all against autograd on the same data and seed:

1. at a few states along autograd's training trajectory, the student's parameter
   gradients, each judged as in exercise 1 (`check_steps`);
2. a short run trained twice from the same initialisation, once on the student's
   gradients (in a child process) and once on autograd's (here), whose loss
   curves must agree within what rounding allows (`compare_training`);
3. on request, the lecture's full optimisation on the student's gradients, then
   BatchNorm calibration, train/val loss and 20 sampled names (`full_training`).

Student code only ever runs in a forked child; the parent receives losses and
tensors as raw numbers over the pipe.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from grader.execution import WorkerDied, _student_error, current_executor, parse, send_job
from grader.policy import Forbidden, Guard, compile_student
from grader.wire import Malformed, Reader, check_frame, decode_tensor, encode_value, send
from grader.network import (
    LECTURE, TRAINING, Config, Vocabulary, backward_pass, build_dataset, computed_once, forward_fused, init_parameters,
    load_words, split_words, PARAMETER_NAMES,
)

CHECKED_STEPS = 3  # states along autograd's trajectory at which the gradients are compared
SHORT_RUN = 1000  # steps of the training comparison
# Over the short run, rounding alone (the lecture's approx formulas against exact ones) moved
# the loss by at most 7e-7 here; the tolerance leaves room for other CPUs' kernels.
LOSS_TOLERANCE = 1e-5
FULL_RUN = 200_000
LECTURE_RESULTS = {"train": 2.0674, "val": 2.1056}  # the lecture's figures, on the lecture's data


@dataclass
class TrainingData:
    vocab: Vocabulary
    Xtr: torch.Tensor
    Ytr: torch.Tensor
    Xdev: torch.Tensor
    Ydev: torch.Tensor


@functools.lru_cache(maxsize=2)
def training_data(config: Config = TRAINING) -> TrainingData:
    """The full training and validation sets (the lecture's `Xtr`, `Ytr`, `Xdev`, `Ydev`)."""
    words = load_words(config.words_path, config.drop_letters, config.max_words)
    vocab = Vocabulary.from_words(words)
    train, dev, _ = split_words(words)
    Xtr, Ytr = build_dataset(train, vocab, config.block_size)
    Xdev, Ydev = build_dataset(dev, vocab, config.block_size)
    return TrainingData(vocab, Xtr, Ytr, Xdev, Ydev)


def initial_state(config: Config) -> tuple[dict[str, torch.Tensor], torch.Generator]:
    """The lecture's initial parameters, and the generator in its state after drawing them."""
    data = training_data(config)
    g = torch.Generator().manual_seed(config.seed)
    return init_parameters(config, len(data.vocab), g), g


def learning_rate(step: int) -> float:
    """The lecture's schedule: 0.1 for 100,000 steps, then 0.01."""
    return 0.1 if step < 100_000 else 0.01


def next_batch(data: TrainingData, g: torch.Generator, batch_size: int):
    ix = torch.randint(0, data.Xtr.shape[0], (batch_size,), generator=g)
    return data.Xtr[ix], data.Ytr[ix]


@computed_once(maxsize=2)
def autograd_run(config: Config = TRAINING, steps: int = SHORT_RUN, checked: int = CHECKED_STEPS):
    """Train on autograd's gradients: the references at the first `checked` steps and every step's loss."""
    data = training_data(config)
    params, g = initial_state(config)
    references, losses = [], []
    for step in range(steps):
        Xb, Yb = next_batch(data, g, config.batch_size)
        ref = backward_pass(config, data.vocab, params, Xb, Yb, forward_function=forward_fused)
        if step < checked:
            ref.step = step
            references.append(ref)
        losses.append(ref.tensors["loss"].item())
        with torch.no_grad():
            for name in PARAMETER_NAMES:
                params[name] += -learning_rate(step) * ref.gradients[name]
    return references, losses


# --- training on the student's gradients, in a child process ---


@dataclass
class StudentRun:
    losses: list[float] = field(default_factory=list)
    error: str | None = None
    step_seconds: float | None = None  # time of one step of the student's code, measured early
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # final parameters, when asked for


def train_body(write_fd, output, *, source, filename, config, steps, targets, send_params, report_every,
               allowed=()):
    """The body of the student process of a training run (`config` as `Config.to_dict()`)."""
    config = Config.from_dict(config)
    data = training_data(config)
    params, g = initial_state(config)
    guard = Guard(filename, tuple(allowed))
    code, refused = compile_student(parse(source, filename), filename)
    if refused is not None:
        send(write_fd, {"t": "stop", "message": f"step 0: {refused.hint()}"})
        return
    namespace = guard.globals()
    namespace.update(dict(n=config.batch_size, batch_size=config.batch_size, vocab_size=len(data.vocab),
                          block_size=config.block_size, n_embd=config.n_embd, n_hidden=config.n_hidden))
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(steps):
        Xb, Yb = next_batch(data, g, config.batch_size)
        out = forward_fused(**params, Xb=Xb, Yb=Yb)
        for name, tensor in {**params, **out}.items():
            namespace[name] = tensor.clone()
        namespace.update(Xb=Xb.clone(), Yb=Yb.clone())
        guard.autograd_off(None)
        try:
            exec(code, namespace)
        except Forbidden:
            pass  # recorded by the guard
        except BaseException as exc:  # noqa: BLE001 - student code may raise anything
            line, message = _student_error(exc, filename, 0)
            send(write_fd, {"t": "stop", "message": f"step {step}, line {line}: {message}"})
            return
        guard.autograd_off(None)
        if guard.violations:
            send(write_fd, {"t": "stop", "message": f"step {step}: {guard.violations[0].hint()}"})
            return
        for target in targets:
            grad = namespace.get(target)
            param = params[target[1:]]
            if not isinstance(grad, torch.Tensor) or grad.shape != param.shape or not torch.isfinite(grad).all():
                problem = "is not a tensor" if not isinstance(grad, torch.Tensor) else (
                    f"has shape {tuple(grad.shape)}, not {tuple(param.shape)}" if grad.shape != param.shape
                    else "has NaN or infinite values")
                send(write_fd, {"t": "stop", "message": f"step {step}: `{target}` {problem}"})
                return
        for target in targets:
            params[target[1:]] += -learning_rate(step) * namespace[target]
        losses.append(out["loss"].item())
        if (step + 1) % report_every == 0 or step + 1 == steps or step == 4:
            send(write_fd, {"t": "progress", "step": step + 1, "losses": losses,
                            "seconds": time.perf_counter() - started})
            losses = []
    if send_params:
        for name, tensor in params.items():
            header, payload = encode_value(tensor)
            send(write_fd, {"t": "param", "name": name, **header}, payload)
    send(write_fd, {"t": "output", "text": output.getvalue()})
    send(write_fd, {"t": "done"})


def train_student(*, source: str, filename: str, config: Config = TRAINING, steps: int = SHORT_RUN,
                  targets: tuple[str, ...], timeout: float | None, send_params: bool = False,
                  report_every: int = 100, on_progress=None, allowed: tuple[str, ...]) -> StudentRun:
    """Train `steps` steps on the student's gradients in a child process and collect the losses."""
    run = StudentRun()
    executor = current_executor()
    args = dict(source=source, filename=filename, config=config.to_dict(), steps=steps, targets=list(targets),
                send_params=send_params, report_every=report_every, allowed=list(allowed))
    try:
        handle, read_fd, write_fd = executor.spawn("train", timeout)
    except WorkerDied as exc:
        run.error = str(exc)
        return run
    deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
    finished = False
    expected = {name: t.numel() for name, t in initial_state(config)[0].items()}
    # Losses come in batches of `report_every`: the byte cap allows for them, and no more.
    limit = (1 << 20) + 64 * steps + (sum(expected.values()) * 8 if send_params else 0)
    reader = Reader(read_fd, deadline, limit=limit)
    try:
        os.set_blocking(write_fd, False)
        send_job(write_fd, args, [], deadline)
        for header, payload in reader.messages(lambda header: check_frame(header, expected)):
            kind = header["t"]
            if kind == "progress":
                run.losses.extend(float(x) for x in header["losses"])
                step, seconds = header["step"], float(header["seconds"])
                if step >= 5 and run.step_seconds is None:
                    run.step_seconds = seconds / step
                if on_progress:
                    on_progress(step, seconds, run.losses[-1] if run.losses else math.nan)
            elif kind == "param" and header.get("name") in PARAMETER_NAMES:
                run.params[header["name"]] = decode_tensor(header, payload)
            elif kind == "stop":
                run.error = str(header.get("message"))
            elif kind == "done":
                finished = True
    except TimeoutError:
        run.error = f"training did not finish within {timeout:g} s (after {len(run.losses)} steps)"
    except Malformed:
        run.error = "the submission's process sent malformed data"
    except (BrokenPipeError, ConnectionError):
        pass  # it ended before reading its job: said below
    finally:
        os.close(read_fd)
        os.close(write_fd)
        executor.reap(handle)
    if not finished and run.error is None:
        run.error = f"the student process ended abruptly after {len(run.losses)} steps"
    return run


@dataclass(frozen=True)
class TrainingComparison:
    """Whether training on the student's gradients tracks training on autograd's."""

    steps: int
    tolerance: float
    max_loss_diff: float | None
    student_final: float | None
    autograd_final: float | None
    first_diverging_step: int | None
    error: str | None = None

    @classmethod
    def skipped(cls, reason: str) -> "TrainingComparison":
        return cls(SHORT_RUN, LOSS_TOLERANCE, None, None, None, None, error=reason)

    @property
    def passed(self) -> bool:
        return self.error is None and self.max_loss_diff is not None and self.max_loss_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {
            "steps": self.steps, "tolerance": self.tolerance, "max_loss_diff": self.max_loss_diff,
            "student_final_loss": self.student_final, "autograd_final_loss": self.autograd_final,
            "first_diverging_step": self.first_diverging_step, "passed": self.passed, "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingComparison":
        return cls(data["steps"], data["tolerance"], data["max_loss_diff"], data["student_final_loss"],
                   data["autograd_final_loss"], data["first_diverging_step"], error=data["error"])

    def describe(self) -> str:
        if self.error:
            return f"training run: {self.error}"
        verdict = "tracks autograd" if self.passed else "does NOT track autograd"
        text = (f"training run ({self.steps} steps, same seed as autograd): {verdict}; "
                f"largest loss difference {self.max_loss_diff:.1e} (rounding allows {self.tolerance:g}); "
                f"final loss {self.student_final:.4f} vs autograd's {self.autograd_final:.4f}")
        if not self.passed and self.first_diverging_step is not None:
            text += f"; the curves part at step {self.first_diverging_step}"
        return text


def compare_training(*, source: str, filename: str, targets: tuple[str, ...], config: Config = TRAINING,
                     steps: int = SHORT_RUN, timeout: float = 60.0, allowed: tuple[str, ...]) -> TrainingComparison:
    """Train twice from the same seed, on the student's gradients and on autograd's, and compare."""
    _, expected = autograd_run(config, steps)
    run = train_student(source=source, filename=filename, config=config, steps=steps, targets=targets,
                        timeout=timeout, allowed=allowed)
    if run.error or len(run.losses) != steps:
        return TrainingComparison(steps, LOSS_TOLERANCE, None, None, expected[-1], None,
                                  error=run.error or "the run stopped early")
    diffs = [abs(a - b) for a, b in zip(run.losses, expected)]
    worst = max(diffs) if all(math.isfinite(d) for d in diffs) else math.inf
    first = next((i for i, d in enumerate(diffs) if not d <= LOSS_TOLERANCE), None)
    return TrainingComparison(steps, LOSS_TOLERANCE, worst, run.losses[-1], expected[-1], first)


# --- the lecture's full optimisation, then calibration, evaluation and sampling ---


@torch.no_grad()
def calibrate(params: dict[str, torch.Tensor], X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm's mean and variance over the whole training set, as the lecture calibrates them."""
    emb = params["C"][X]
    hpreact = emb.view(emb.shape[0], -1) @ params["W1"] + params["b1"]
    return hpreact.mean(0, keepdim=True), hpreact.var(0, keepdim=True, unbiased=True)


@torch.no_grad()
def evaluate(params, bnmean, bnvar, X, Y) -> float:
    """The loss of the calibrated network on a whole split."""
    emb = params["C"][X]
    hpreact = emb.view(emb.shape[0], -1) @ params["W1"] + params["b1"]
    hpreact = params["bngain"] * (hpreact - bnmean) * (bnvar + 1e-5) ** -0.5 + params["bnbias"]
    logits = torch.tanh(hpreact) @ params["W2"] + params["b2"]
    return F.cross_entropy(logits, Y).item()


@torch.no_grad()
def sample_names(params, bnmean, bnvar, vocab: Vocabulary, block_size: int, count: int = 20,
                 seed: int = LECTURE.seed + 10) -> list[str]:
    """Names drawn from the trained network, as the lecture samples them."""
    g = torch.Generator().manual_seed(seed)
    names = []
    for _ in range(count):
        out, context = [], [0] * block_size
        while len(out) < 50:
            emb = params["C"][torch.tensor([context])]
            hpreact = emb.view(1, -1) @ params["W1"] + params["b1"]
            hpreact = params["bngain"] * (hpreact - bnmean) * (bnvar + 1e-5) ** -0.5 + params["bnbias"]
            logits = torch.tanh(hpreact) @ params["W2"] + params["b2"]
            ix = torch.multinomial(F.softmax(logits, dim=1), num_samples=1, generator=g).item()
            context = context[1:] + [ix]
            if ix == 0:
                break
            out.append(ix)
        names.append("".join(vocab.itos[i] for i in out))
    return names


@dataclass
class FullTraining:
    steps: int
    seconds: float
    train_loss: float | None = None
    val_loss: float | None = None
    names: list[str] = field(default_factory=list)
    error: str | None = None


def full_training(*, source: str, filename: str, targets: tuple[str, ...], steps: int = FULL_RUN,
                  config: Config = TRAINING, on_progress=None, allowed: tuple[str, ...]) -> FullTraining:
    """The lecture's optimisation on the student's gradients, then calibrate, evaluate and sample."""
    started = time.perf_counter()
    run = train_student(source=source, filename=filename, config=config, steps=steps, targets=targets,
                        timeout=None, send_params=True, report_every=max(1, min(1000, steps // 100)),
                        on_progress=on_progress, allowed=allowed)
    result = FullTraining(steps=steps, seconds=time.perf_counter() - started, error=run.error)
    if run.error or set(run.params) != set(PARAMETER_NAMES):
        result.error = run.error or "the training run sent no parameters back"
        return result
    data = training_data(config)
    bnmean, bnvar = calibrate(run.params, data.Xtr)
    result.train_loss = evaluate(run.params, bnmean, bnvar, data.Xtr, data.Ytr)
    result.val_loss = evaluate(run.params, bnmean, bnvar, data.Xdev, data.Ydev)
    result.names = sample_names(run.params, bnmean, bnvar, data.vocab, config.block_size)
    return result
