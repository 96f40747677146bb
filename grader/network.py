"""The reference network: the lecture's data, initialisation and forward pass, in one place.

Everything the grader compares against is computed here, from a small `Config`:
the word list becomes a vocabulary and a train/dev/test split, one seeded generator
draws every parameter and the batch, and `forward` runs the lecture's chunked forward
pass. `reference(config)` runs it with `retain_grad()` on every intermediate, calls
`loss.backward()` and returns the tensors and their gradients.

The body of `forward` is also shown, as comments, at the top of every exercise stub,
so it is written exactly as a student reads it in the lecture.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from dataclasses import dataclass, field

import numpy
import torch
import torch.nn.functional as F

from grader.configs import (  # noqa: F401 - the configurations live apart from torch, and are used from here
    LECTURE, LECTURE_LITERALS, LECTURE_SEED, OTHER, PARAMETER_NAMES, SMALL, SPLIT_SEED, TRAINING, Config,
    DataError, default_words_path,
)
from grader.words import Vocabulary, load_words, split_words, train_words  # noqa: F401 - re-exported


def build_dataset(words: list[str], vocab: Vocabulary, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (context, next character) pair of every word, as the lecture builds them."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = vocab.stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X, dtype=torch.long).view(-1, block_size), torch.tensor(Y, dtype=torch.long)


class LazyDataset:
    """The rows of `build_dataset` without building all of them.

    Grading needs one batch of 32 rows out of ~180,000; building them all costs more
    than the rest of grading. Row `i` is found by bisecting the words' offsets.
    """

    def __init__(self, words: list[str], vocab: Vocabulary, block_size: int):
        self.words, self.vocab, self.block_size = words, vocab, block_size
        # Where each word's rows start: a word gives one row per character and one for its end.
        self.offsets = numpy.zeros(len(words) + 1, dtype=numpy.int64)
        numpy.cumsum(numpy.fromiter(map(len, words), dtype=numpy.int64, count=len(words)) + 1, out=self.offsets[1:])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows(self, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        X, Y = [], []
        for i in ix.tolist():
            k = int(numpy.searchsorted(self.offsets, i, side="right")) - 1
            padded = [0] * self.block_size + [self.vocab.stoi[ch] for ch in self.words[k] + "."]
            pos = i - self.offsets[k]
            X.append(padded[pos : pos + self.block_size])
            Y.append(padded[pos + self.block_size])
        return torch.tensor(X, dtype=torch.long).view(-1, self.block_size), torch.tensor(Y, dtype=torch.long)


def init_parameters(config: Config, vocab_size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The lecture's initialisation, every draw from the one seeded generator `g`."""
    n_embd, n_hidden, block_size = config.n_embd, config.n_hidden, config.block_size
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5 / 3) / ((n_embd * block_size) ** 0.5)
    b1 = torch.randn(n_hidden, generator=g) * 0.1  # useless under BatchNorm, kept as in the lecture
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
    b2 = torch.randn(vocab_size, generator=g) * 0.1
    # Small random values rather than 1 and 0, so that a wrong gradient cannot hide.
    bngain = torch.randn((1, n_hidden), generator=g) * 0.1 + 1.0
    bnbias = torch.randn((1, n_hidden), generator=g) * 0.1
    return dict(C=C, W1=W1, b1=b1, W2=W2, b2=b2, bngain=bngain, bnbias=bnbias)


def forward(C, W1, b1, W2, b2, bngain, bnbias, Xb, Yb):
    """The lecture's forward pass, chunked so that every intermediate has a name."""
    n = Xb.shape[0]
    # forward pass begins
    emb = C[Xb]  # embed the characters into vectors
    embcat = emb.view(emb.shape[0], -1)  # concatenate the vectors
    # Linear layer 1
    hprebn = embcat @ W1 + b1  # hidden layer pre-activation
    # BatchNorm layer
    bnmeani = 1/n*hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)  # Bessel's correction: 1/(n-1), not 1/n
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    # Non-linearity
    h = torch.tanh(hpreact)  # hidden layer
    # Linear layer 2
    logits = h @ W2 + b2  # output layer
    # cross entropy loss (same as F.cross_entropy(logits, Yb))
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes  # subtract max for numerical stability
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1  # 1.0/counts_sum does not give an exact backward pass
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    # forward pass ends
    return dict(
        emb=emb, embcat=embcat, hprebn=hprebn, bnmeani=bnmeani, bndiff=bndiff, bndiff2=bndiff2,
        bnvar=bnvar, bnvar_inv=bnvar_inv, bnraw=bnraw, hpreact=hpreact, h=h, logits=logits,
        logit_maxes=logit_maxes, norm_logits=norm_logits, counts=counts, counts_sum=counts_sum,
        counts_sum_inv=counts_sum_inv, probs=probs, logprobs=logprobs, loss=loss,
    )


def forward_fused(C, W1, b1, W2, b2, bngain, bnbias, Xb, Yb):
    """The forward pass of the lecture's training loop: BatchNorm and cross-entropy in one go."""
    # forward pass begins
    emb = C[Xb]  # embed the characters into vectors
    embcat = emb.view(emb.shape[0], -1)  # concatenate the vectors
    # Linear layer
    hprebn = embcat @ W1 + b1  # hidden layer pre-activation
    # BatchNorm layer
    bnmean = hprebn.mean(0, keepdim=True)
    bnvar = hprebn.var(0, keepdim=True, unbiased=True)  # Bessel's correction
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = (hprebn - bnmean) * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    # Non-linearity
    h = torch.tanh(hpreact)  # hidden layer
    logits = h @ W2 + b2  # output layer
    loss = F.cross_entropy(logits, Yb)  # loss function
    # forward pass ends
    return dict(
        emb=emb, embcat=embcat, hprebn=hprebn, bnmean=bnmean, bnvar=bnvar, bnvar_inv=bnvar_inv,
        bnraw=bnraw, hpreact=hpreact, h=h, logits=logits, loss=loss,
    )


def forward_source(function=forward) -> list[str]:
    """The lines of a forward pass between its 'begins' and 'ends' markers, dedented."""
    lines = inspect.getsource(function).splitlines()
    start = next(i for i, line in enumerate(lines) if "forward pass begins" in line)
    end = next(i for i, line in enumerate(lines) if "forward pass ends" in line)
    body = lines[start + 1 : end]
    indent = min(len(line) - len(line.lstrip()) for line in body if line.strip())
    return [line[indent:] for line in body]


@dataclass
class Reference:
    """A forward and backward pass at one configuration: what student code sees and is judged by."""

    config: Config
    vocab: Vocabulary
    tensors: dict[str, torch.Tensor]  # parameters, batch and every forward tensor, detached
    gradients: dict[str, torch.Tensor]  # tensor name -> its .grad
    sizes: dict[str, int] = field(default_factory=dict)
    step: int | None = None  # for exercise 4: the step of autograd's training run this state is from

    @property
    def public(self) -> "Public":
        """What a student process may be shown of this reference: everything but the gradients."""
        return Public(self.tensors, self.sizes, {name: tuple(g.shape) for name, g in self.gradients.items()})

    def scope(self, names: tuple[str, ...] | None = None) -> dict[str, object]:
        """Fresh copies of the tensors a student line may read (never the originals), and the sizes."""
        values: dict[str, object] = {
            name: t.clone() for name, t in self.tensors.items() if names is None or name in names
        }
        values.update(self.sizes)
        return values


def sizes_of(config: Config, vocab: Vocabulary) -> dict[str, int]:
    """The integers in a student's scope."""
    return dict(
        n=config.batch_size, batch_size=config.batch_size, vocab_size=len(vocab),
        block_size=config.block_size, n_embd=config.n_embd, n_hidden=config.n_hidden,
    )


@functools.lru_cache(maxsize=8)
def sample_batch(config: Config) -> tuple[Vocabulary, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The vocabulary, the initial parameters and the first training batch of a configuration (the
    same objects every time: callers copy before they change anything)."""
    vocab, train = train_words(config)
    g = torch.Generator().manual_seed(config.seed)
    params = init_parameters(config, len(vocab), g)
    dataset = LazyDataset(train, vocab, config.block_size)
    ix = torch.randint(0, len(dataset), (config.batch_size,), generator=g)
    Xb, Yb = dataset.rows(ix)
    return vocab, params, Xb, Yb


def backward_pass(config: Config, vocab: Vocabulary, params: dict[str, torch.Tensor], Xb, Yb,
                  forward_function=forward) -> Reference:
    """Run a forward pass with every intermediate's gradient retained, then `loss.backward()`.
    The parameters passed in are not changed."""
    params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    with torch.enable_grad():
        out = forward_function(**params, Xb=Xb, Yb=Yb)
        for t in out.values():
            t.retain_grad()
        out["loss"].backward()
    tensors = {name: t.detach() for name, t in {**params, **out}.items()}
    tensors.update(Xb=Xb, Yb=Yb)
    gradients = {name: t.grad.detach() for name, t in {**params, **out}.items() if t.grad is not None}
    return Reference(config=config, vocab=vocab, tensors=tensors, gradients=gradients, sizes=sizes_of(config, vocab))


@dataclass
class Public:
    """What a student may see of a configuration: the forward pass's tensors (parameters and batch
    included), the sizes, and the shape of every tensor's gradient; never a gradient."""

    tensors: dict[str, torch.Tensor]
    sizes: dict[str, int]
    shapes: dict[str, tuple[int, ...]]  # tensor name -> the shape of its gradient


@contextlib.contextmanager
def one_thread():
    """Compute on one thread, whichever thread calls. A matrix product's last bits depend on how many
    threads share it, and `torch.set_num_threads` in the main thread does not reach the math library
    in another thread: without this, a reference computed by a batch's grading thread differed from
    the one `grade FILE` computes, in every gradient."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


_LOCKS: list[threading.RLock] = []


def _new_locks() -> None:  # in a forked child: a lock another thread of the parent held stays held
    for i in range(len(_LOCKS)):
        _LOCKS[i] = threading.RLock()


os.register_at_fork(after_in_child=_new_locks)


def computed_once(maxsize: int = 8):
    """A cache of a reference computation, keyed on the arguments with the defaults filled in
    (`reference(c)` and `reference(c, torch.float32)` are one entry). One computation per key
    however many threads ask at once, on one thread: every caller gets the same object, so the
    gradients injected into a student's run are the very ones its answers are compared with."""

    def decorate(function):
        signature = inspect.signature(function)
        number = len(_LOCKS)
        _LOCKS.append(threading.RLock())

        def compute(*args):
            with one_thread():
                return function(*args)

        cached = functools.lru_cache(maxsize=maxsize)(compute)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with _LOCKS[number]:
                return cached(*bound.args)

        wrapper.cache_info, wrapper.cache_clear = cached.cache_info, cached.cache_clear
        return wrapper

    return decorate


_cached = computed_once()


@_cached
def public(config: Config = LECTURE, dtype: torch.dtype = torch.float32) -> Public:
    """The forward pass of `reference(config, dtype)` alone, with no gradient computed: what a clean
    worker may hold and share with every student process it forks (the same tensors, bitwise)."""
    vocab, params, Xb, Yb = sample_batch(config)
    params = {name: p.to(dtype) for name, p in params.items()}
    with torch.no_grad():
        out = forward(**params, Xb=Xb, Yb=Yb)
    tensors = {**params, **out, "Xb": Xb, "Yb": Yb}
    shapes = {name: tuple(t.shape) for name, t in {**params, **out}.items()}
    return Public(tensors, sizes_of(config, vocab), shapes)


@_cached
def reference(config: Config = LECTURE, dtype: torch.dtype = torch.float32) -> Reference:
    """The lecture's chunked forward and backward pass on the first batch of a configuration
    (in float64 to tell a rounding difference from a wrong formula)."""
    vocab, params, Xb, Yb = sample_batch(config)
    params = {name: p.to(dtype) for name, p in params.items()}
    return backward_pass(config, vocab, params, Xb, Yb)

