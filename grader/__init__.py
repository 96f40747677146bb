"""backprop-ninja: a self-grading kit for writing a neural network's backward pass by hand.

In a notebook: `from grader import setup, check`, then `setup("ex1")` to get the
exercise's tensors, and `check()` to grade the gradients you wrote.
"""

from grader.jupyter import check, setup

__all__ = ["check", "setup"]
