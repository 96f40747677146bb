"""backprop-ninja: a self-grading kit for writing a neural network's backward pass by hand.

In a notebook: `from grader import check`, then `check()` to grade the gradient cells you
have run, as `grade` grades the saved notebook (in the kit's own notebooks, `setup("ex1")`
first puts the exercise's tensors in the notebook); `hint("dbnvar")` explains one gradient.
"""

__all__ = ["check", "hint", "setup"]


def __getattr__(name: str):
    # Imported on first use, so that `import grader.cli` (say, for `grade --help`) does not import torch.
    if name in __all__:
        from grader import jupyter

        return getattr(jupyter, name)
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
