"""backprop-ninja: a self-grading kit for writing a neural network's backward pass by hand.

In a notebook: `from grader import check`, then `check()` to grade the gradient cells you
have run, as `grade` grades the saved notebook (in the kit's own notebooks, `setup("ex1")`
first puts the exercise's tensors in the notebook); `hint("dbnvar")` explains one gradient.
"""

from grader.jupyter import check, hint, setup

__all__ = ["check", "hint", "setup"]
