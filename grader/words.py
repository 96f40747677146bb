"""The word list, its vocabulary and the lecture's split, without torch: `grade FILE` has them worked
out by a helper process while it imports torch (`Prefetch`), and the grading worker inherits them."""

from __future__ import annotations

import functools
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from grader.configs import SPLIT_SEED, Config, DataError, default_words_path


@functools.lru_cache(maxsize=4)
def _read_words(path: Path) -> tuple[str, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"the word list {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"the word list {path} cannot be read: {exc}") from None
    return tuple(word for word in map(str.strip, text.splitlines()) if word)


@functools.lru_cache(maxsize=8)
def load_words(path: Path | None = None, drop_letters: str = "", max_words: int | None = None) -> tuple[str, ...]:
    """The word list, one word a line, in file order (blank lines skipped)."""
    path = path or default_words_path()
    words = _read_words(path)
    if drop_letters:
        dropped = re.compile("[" + re.escape(drop_letters) + "]")
        words = [w for w in words if not dropped.search(w)]
    if max_words is not None:
        words = words[:max_words]
    if len(words) < 10:
        raise DataError(f"the word list {path} has fewer than 10 usable words")
    return tuple(words)


@dataclass(frozen=True)
class Vocabulary:
    """Characters to indices: '.' is 0 (start and end of a word), then the sorted characters."""

    itos: tuple[str, ...]

    @classmethod
    def from_words(cls, words: tuple[str, ...]) -> "Vocabulary":
        chars = sorted(set("".join(words)) - {"."})
        return cls(itos=(".", *chars))

    @functools.cached_property
    def stoi(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)


def split_words(words: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """The lecture's 80/10/10 split after `random.seed(42); random.shuffle(words)`."""
    shuffled = list(words)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    n1, n2 = int(0.8 * len(shuffled)), int(0.9 * len(shuffled))
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]


_TRAIN: dict[tuple, tuple[Vocabulary, list[str]]] = {}


def _key(config: Config) -> tuple:
    return (str(config.words_path or default_words_path()), config.drop_letters, config.max_words)


def train_words(config: Config) -> tuple[Vocabulary, list[str]]:
    """A configuration's vocabulary and training words (the first 80% of the lecture's shuffle)."""
    key = _key(config)
    if key not in _TRAIN:
        words = load_words(config.words_path, config.drop_letters, config.max_words)
        _TRAIN[key] = (Vocabulary.from_words(words), split_words(words)[0])
    return _TRAIN[key]


class Prefetch:
    """`train_words` for some configurations, worked out in a child process started before this one
    imports torch (which takes a second on one core and leaves the other idle). `collect` installs
    what the child found; anything that goes wrong leaves the work to `train_words`."""

    def __init__(self, configs):
        self.pid = self.fd = None
        wanted = {}
        for config in configs:
            wanted.setdefault(_key(config), config)
        self.keys = [key for key in wanted if key not in _TRAIN]
        if not self.keys:
            return
        try:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
        except OSError:
            return
        if pid == 0:  # the child: work it out, write it, leave
            try:
                os.close(read_fd)
                found = {}
                for key in self.keys:
                    vocab, train = train_words(wanted[key])
                    found[json.dumps(key)] = ["".join(vocab.itos), "\n".join(train)]
                data = json.dumps(found).encode()
                while data:
                    data = data[os.write(write_fd, data):]
            finally:
                os._exit(0)
        os.close(write_fd)
        self.pid, self.fd = pid, read_fd

    def collect(self) -> None:
        if self.pid is None:
            return
        try:
            with os.fdopen(self.fd, "rb") as pipe:
                found = json.loads(pipe.read() or b"{}")
            for key in self.keys:
                itos, train = found[json.dumps(key)]
                _TRAIN.setdefault(key, (Vocabulary(tuple(itos)), train.split("\n")))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        finally:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = None
