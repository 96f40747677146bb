"""The configurations of the reference network, and the grader's plain errors: nothing here imports
torch, so the commands that never compute a tensor (`grade --help`, `grade hint`) start fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 5.0  # seconds a file's code may run, at all its sizes together


class SubmissionError(Exception):
    """The file cannot be graded at all (unreadable, not Python)."""


LECTURE_SEED = 2147483647
SPLIT_SEED = 42


def default_words_path() -> Path:
    """Where `names.txt` lives: the installed package's copy (`grader/kit_files/data`), else the checkout's."""
    candidates = [
        Path(__file__).resolve().parent / "kit_files" / "data" / "names.txt",
        Path(__file__).resolve().parent.parent / "data" / "names.txt",
    ]
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


@dataclass(frozen=True)
class Config:
    """One configuration of the network: its sizes, its seed and its data."""

    name: str = "lecture"
    seed: int = LECTURE_SEED
    block_size: int = 3  # characters of context
    n_embd: int = 10  # dimensions of a character embedding
    n_hidden: int = 64  # neurons in the hidden layer
    batch_size: int = 32
    words_path: Path | None = None  # None: data/names.txt
    drop_letters: str = ""  # words holding any of these letters are left out
    max_words: int | None = None  # keep only the first words of the file

    def to_dict(self) -> dict:
        """A JSON-ready copy, to send a configuration to a grading worker."""
        data = dict(self.__dict__)
        data["words_path"] = str(self.words_path) if self.words_path else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        data = dict(data)
        data["words_path"] = Path(data["words_path"]) if data.get("words_path") else None
        return cls(**data)

    def describe(self) -> str:
        """One line for reports: the sizes a student might hard-code."""
        extra = f", names without {', '.join(self.drop_letters)}" if self.drop_letters else ""
        return (
            f"{self.name}: batch {self.batch_size}, block_size {self.block_size}, "
            f"n_embd {self.n_embd}, n_hidden {self.n_hidden}, seed {self.seed}{extra}"
        )


LECTURE = Config()
TRAINING = Config(name="training", n_hidden=200)  # the lecture's training loop (exercise 4)
# Every size a student might hard-code is different here, and so are the alphabet and the seed.
OTHER = Config(name="other sizes", seed=1337, block_size=4, n_embd=7, n_hidden=48, batch_size=13, drop_letters="qxz")
SMALL = Config(name="small", seed=7, block_size=2, n_embd=5, n_hidden=20, batch_size=7, drop_letters="jkvwy")
# The lecture's sizes, and a hint for each when a line holds it as a literal.
LECTURE_LITERALS = {32: "n", 31: "n-1", 27: "vocab_size", 64: "n_hidden", 30: "n_embd * block_size",
                    10: "n_embd", 3: "block_size"}


PARAMETER_NAMES = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")


class DataError(Exception):
    """The word list is missing, unreadable or unusable."""
