"""The hint bank: for every gradient a student writes, a short hint and a longer explanation.

The short hint appears under a failing row; the long one is printed by
`grade hint NAME`. Both say which forward line made the tensor and which local
derivative is involved, and name the usual mistakes. Neither prints the answer:
no right-hand side that could be pasted in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hint:
    short: str  # one sentence under a failing row
    long: str  # a few paragraphs for `grade hint NAME`


HINTS: dict[str, Hint] = {
    "dlogprobs": Hint(
        "`loss = -logprobs[range(n), Yb].mean()` picks one entry per row and averages n of them with a minus sign.",
        "The loss reads only one entry of each row of `logprobs`: the one at the correct label. Every other "
        "entry has no effect on the loss, so its gradient is zero. The entries that are picked are averaged "
        "over the batch and negated, so each one moves the loss by the same small amount.\n\n"
        "The result has the shape of `logprobs`, (n, vocab_size). Start from zeros of that shape and fill the "
        "picked positions; use `n`, not 32, so the line holds at any batch size.",
    ),
    "dprobs": Hint(
        "`logprobs = probs.log()`: the derivative of log x is 1/x, applied element by element.",
        "Each entry of `logprobs` depends on one entry of `probs` only, so the chain rule is element-wise: the "
        "local derivative of the natural log, times the upstream gradient `dlogprobs`.\n\n"
        "Where a probability is small the local derivative is large: a wrong prediction gets a strong push. "
        "The shape is that of `probs`; no sum is needed.",
    ),
    "dcounts_sum_inv": Hint(
        "`probs = counts * counts_sum_inv` broadcasts a (n, 1) column over (n, vocab_size): sum back over dim 1.",
        "In `probs = counts * counts_sum_inv` the tensor `counts_sum_inv` has one value per row, shape (n, 1), "
        "and the multiplication copies it across every column. The local derivative of a product with respect "
        "to one factor is the other factor.\n\n"
        "Because one value was used vocab_size times, its gradient is the sum of the gradients of all its "
        "copies: sum over dim 1 with `keepdim=True` so the shape stays (n, 1).",
    ),
    "dcounts_sum": Hint(
        "`counts_sum_inv = counts_sum**-1`: the derivative of x**-1 is -x**-2.",
        "This is an element-wise power, so the chain rule is element-wise too: the local derivative of x to "
        "the power -1, times the upstream `dcounts_sum_inv`. Both have shape (n, 1).\n\n"
        "The lecture computes the inverse with `**-1` rather than `1.0/counts_sum` for a reason: it keeps the "
        "backward pass bit-exact with PyTorch's.",
    ),
    "dcounts": Hint(
        "`counts` is used twice, in `probs` and in `counts_sum`: its gradient is the sum of both paths.",
        "`counts` feeds two lines: `probs = counts * counts_sum_inv` and `counts_sum = counts.sum(1, keepdims=True)`. "
        "When a tensor is used twice, the gradients arriving along the two paths add up.\n\n"
        "Through the product, the local derivative is the other factor (broadcast over the columns). Through "
        "the sum, every entry of a row gets the row's upstream gradient: a sum in the forward pass becomes a "
        "broadcast in the backward pass. Forgetting one of the two paths is the classic mistake here.",
    ),
    "dnorm_logits": Hint(
        "`counts = norm_logits.exp()`: the derivative of exp x is exp x itself, which you already have.",
        "An element-wise exponential: the local derivative of e to the x is e to the x, and that value is "
        "already computed in the forward pass under another name. Multiply it by the upstream `dcounts`.\n\n"
        "The shape is (n, vocab_size), like `norm_logits`.",
    ),
    "dlogit_maxes": Hint(
        "`norm_logits = logits - logit_maxes` broadcasts (n, 1) over the columns, with a minus: sum over dim 1.",
        "`logit_maxes` has one value per row and is subtracted from every entry of the row, so its gradient "
        "is the sum over dim 1 of the upstream gradient, with the sign of the subtraction, keeping the (n, 1) "
        "shape.\n\n"
        "In truth this gradient is zero (up to rounding): softmax does not change when you shift a row by a "
        "constant, which is why subtracting the max is only for numerical safety. Because the true value is ~0, "
        "a wrong formula can look right here; the grader re-runs your line on random upstream gradients to "
        "check the formula itself.",
    ),
    "dlogits": Hint(
        "`logits` is used twice, in `norm_logits` and through `max` in `logit_maxes`: add both paths.",
        "`logits` feeds `norm_logits = logits - logit_maxes` directly, and `logit_maxes = logits.max(1, "
        "keepdim=True).values`. The first path passes the upstream gradient straight through.\n\n"
        "The second path goes through `max`: only the entry that was the maximum of each row receives that "
        "row's `dlogit_maxes`; every other entry gets zero from this path. `logits.max(1)` also returns the "
        "indices of the maxima, and `F.one_hot` turns indices into a mask. The contribution is tiny in truth, "
        "so the random-upstream check is what tells whether it is there.",
    ),
    "dh": Hint(
        "`logits = h @ W2 + b2`: for a matrix product, the gradient with respect to one factor uses the other, transposed.",
        "For `logits = h @ W2`, the gradient with respect to `h` is a matrix product of the upstream gradient "
        "and `W2`, with one of them transposed. Work out which by shapes: the result must be (n, n_hidden), the "
        "upstream is (n, vocab_size) and `W2` is (n_hidden, vocab_size). There is only one way to make those "
        "shapes fit.",
    ),
    "dW2": Hint(
        "`logits = h @ W2 + b2`: the gradient of `W2` is a matrix product of `h` and the upstream, one transposed.",
        "The same rule as for `dh`, the other factor: the result must have `W2`'s shape, (n_hidden, vocab_size), "
        "from `h` (n, n_hidden) and the upstream (n, vocab_size). The product sums over the batch by itself, "
        "which is right: `W2` is shared by every example.\n\n"
        "If your shape comes out as (vocab_size, n_hidden), the operands are the wrong way round.",
    ),
    "db2": Hint(
        "`b2` has shape (vocab_size,) and was broadcast over the batch in `h @ W2 + b2`: sum over dim 0.",
        "Adding `b2` passes the upstream gradient through unchanged, but `b2` was added to every row of the "
        "batch. One parameter used n times collects the gradients of all its uses: sum over the batch "
        "dimension, and the result has `b2`'s shape, (vocab_size,), with no size-1 axis.",
    ),
    "dhpreact": Hint(
        "`h = torch.tanh(hpreact)`: the derivative of tanh is 1 - tanh², and tanh(hpreact) is already `h`.",
        "An element-wise tanh: the local derivative is one minus the square of the output, and the output is "
        "`h`, so no new tanh is needed. Multiply by the upstream `dh`.\n\n"
        "The natural way to write this is only `approx`: PyTorch's tanh backward computes 1 - h*h with a fused "
        "multiply-add, which rounds once instead of twice. `torch.addcmul` does the same and is bit-exact. "
        "Either passes.",
    ),
    "dbngain": Hint(
        "`hpreact = bngain * bnraw + bnbias`: `bngain` is (1, n_hidden), broadcast over the batch: sum over dim 0.",
        "Through the product, the local derivative with respect to `bngain` is `bnraw`. But `bngain` has one "
        "value per hidden unit and was used for every example of the batch, so the gradient sums over dim 0. "
        "Keep the size-1 axis (`keepdim=True`): the result must be (1, n_hidden), like `bngain`.",
    ),
    "dbnbias": Hint(
        "`hpreact = bngain * bnraw + bnbias`: `bnbias` is (1, n_hidden), broadcast over the batch: sum over dim 0.",
        "An addition passes the upstream gradient straight through; the only work is undoing the broadcast. "
        "`bnbias` was added to every example, so sum over the batch dimension and keep the size-1 axis so the "
        "shape is (1, n_hidden).",
    ),
    "dbnraw": Hint(
        "`hpreact = bngain * bnraw + bnbias`: the derivative with respect to `bnraw` is the other factor, `bngain`.",
        "`bnraw` has the full shape (n, n_hidden), so nothing needs summing: the local derivative is `bngain`, "
        "which broadcasts over the batch by itself when you multiply it with the upstream gradient.",
    ),
    "dbnvar_inv": Hint(
        "`bnraw = bndiff * bnvar_inv`: `bnvar_inv` is (1, n_hidden), broadcast over the batch: sum over dim 0.",
        "Through the product, the local derivative with respect to `bnvar_inv` is the other factor, `bndiff`. "
        "`bnvar_inv` holds one value per hidden unit and was used for every row, so sum over dim 0 and keep "
        "the size-1 axis: (1, n_hidden).",
    ),
    "dbnvar": Hint(
        "`bnvar_inv = (bnvar + 1e-5)**-0.5`: use the power rule on x**-0.5, with x = bnvar + 1e-5.",
        "An element-wise power of `bnvar + 1e-5`. The power rule gives the local derivative; the small constant "
        "added for numerical safety stays inside the bracket, and its own derivative is 1. Multiply by the "
        "upstream `dbnvar_inv`; both are (1, n_hidden).\n\n"
        "A factor of 2 off usually means the exponent's coefficient was dropped.",
    ),
    "dbndiff2": Hint(
        "`bnvar = 1/(n-1) * bndiff2.sum(0, keepdim=True)`: a sum becomes a broadcast, scaled by Bessel's 1/(n-1).",
        "The variance sums `bndiff2` over the batch and scales by 1/(n-1) (Bessel's correction: an unbiased "
        "estimate divides by n-1, not n). In the backward pass a sum becomes a broadcast: every row receives "
        "the (1, n_hidden) upstream gradient, times the same scale.\n\n"
        "The result has `bndiff2`'s full shape (n, n_hidden). Using 1/n instead of 1/(n-1) is off by a factor "
        "(n-1)/n, small but not within tolerance.",
    ),
    "dbndiff": Hint(
        "`bndiff` is used twice, in `bnraw` and in `bndiff2 = bndiff**2`: its gradient is the sum of both paths.",
        "`bndiff` feeds `bnraw = bndiff * bnvar_inv` (local derivative: the other factor) and `bndiff2 = "
        "bndiff**2` (local derivative: twice the base). The gradients of the two paths add up.\n\n"
        "Keeping only the first path is the most common mistake of the whole exercise: the line then looks "
        "plausible but misses how the variance depends on every example.",
    ),
    "dbnmeani": Hint(
        "`bndiff = hprebn - bnmeani` broadcasts (1, n_hidden) over the batch, with a minus: sum over dim 0, keepdim.",
        "`bnmeani` is subtracted from every row, so its gradient is the sum over the batch of the upstream "
        "gradient, with the sign of the subtraction. The result must be (1, n_hidden): keep the size-1 axis. "
        "The lecture's own `(64,)` version only passes its `cmp()` because that comparison broadcasts; here the "
        "shape is checked first.",
    ),
    "dhprebn": Hint(
        "`hprebn` is used twice, in `bndiff` and in the mean `bnmeani`: add the direct path and the one through the mean.",
        "`hprebn` feeds `bndiff = hprebn - bnmeani` directly, and `bnmeani = 1/n * hprebn.sum(0, keepdim=True)`. "
        "The direct path passes the upstream gradient through. Through the mean, a sum becomes a broadcast: "
        "every row receives `dbnmeani`, scaled by 1/n (the mean divides by n; only the variance uses n-1).\n\n"
        "In exercise 3 you write the whole BatchNorm backward pass in one expression; work it out on paper from "
        "these pieces first.",
    ),
    "dembcat": Hint(
        "`hprebn = embcat @ W1 + b1`: a matrix product, so use `W1` and the upstream, one of them transposed.",
        "The same rule as for `dh` one layer up: the result must be (n, n_embd * block_size), from the upstream "
        "(n, n_hidden) and `W1` (n_embd * block_size, n_hidden). Let the shapes decide which factor is "
        "transposed and in which order.",
    ),
    "dW1": Hint(
        "`hprebn = embcat @ W1 + b1`: the gradient of `W1` is a matrix product of `embcat` and the upstream, one transposed.",
        "The result must have `W1`'s shape, (n_embd * block_size, n_hidden), from `embcat` (n, n_embd * "
        "block_size) and the upstream (n, n_hidden). As for `dW2`, the matrix product does the sum over the "
        "batch for you.",
    ),
    "db1": Hint(
        "`b1` (n_hidden,) was broadcast over the batch in `embcat @ W1 + b1`: sum over dim 0.",
        "An addition passes the gradient through; `b1` was added to every example, so sum over the batch, and "
        "the result has `b1`'s shape (n_hidden,).\n\n"
        "In truth this gradient is zero up to rounding: BatchNorm subtracts the batch mean right after, which "
        "cancels any constant added per hidden unit (that is why `b1` is useless in this network). The grader "
        "re-runs your line on random upstream gradients to check the formula itself.",
    ),
    "demb": Hint(
        "`embcat = emb.view(emb.shape[0], -1)` only reshapes: reshape the gradient back to `emb`'s shape.",
        "A view moves no numbers, it only changes how they are indexed, so the gradient is the upstream "
        "gradient with `emb`'s shape (n, block_size, n_embd). Take the sizes from `emb.shape` or the names in "
        "scope rather than writing 3 and 10: the grader also runs your line at other sizes.",
    ),
    "dC": Hint(
        "`emb = C[Xb]` reads rows of `C`, many of them several times: accumulate (+=) each row's gradients.",
        "Indexing copies rows of `C` into `emb`, one per character of every context. The backward pass routes "
        "each row of `demb` back to the row of `C` it came from. A character that appears several times in the "
        "batch receives the sum of all its gradients, so the updates must accumulate, never overwrite.\n\n"
        "A Python loop over `Xb` works, as in the lecture; a vectorised call that adds rows at given indices "
        "does the whole batch at once (and makes exercise 4's training much faster). Rows of `C` that no "
        "character used get zero.",
    ),
}


# Where an exercise asks for a gradient another way, its own words: exercise 2's `dlogits` is the
# whole cross-entropy in one go, not exercise 1's last step through `max`.
BY_EXERCISE: dict[str, dict[str, Hint]] = {
    "ex2": {
        "dlogits": Hint(
            "`loss = F.cross_entropy(logits, Yb)`: softmax over each row, minus one at the label, averaged over the batch.",
            "Work on one example first. Its loss is minus the log of the softmax probability of its label. The "
            "derivative with respect to its logits is the softmax of those logits, except at the label, where it "
            "is one less: a high probability on a wrong character pushes that logit down, and the label's logit is "
            "pushed up.\n\n"
            "The loss is the mean over the n examples of the batch, so every row is also divided by n (n, not "
            "n-1: there is no variance here). The softmax runs over each row, dim 1; `F.one_hot` turns `Yb` into "
            "the mask of the labels. The answer has the shape of `logits`, (n, vocab_size).",
        ),
    },
    "ex3": {
        "dhprebn": Hint(
            "BatchNorm in one go: three paths from `hprebn`, through `bnraw`, the mean and the variance (n-1, Bessel).",
            "`hprebn` reaches `hpreact` three ways: directly, in `hprebn - bnmean`; through the mean `bnmean`, "
            "which every row subtracts; and through the variance `bnvar`, which every row divides by. Write the "
            "gradient of each path on paper from the chunked lines of exercise 1, then add them up and simplify: "
            "the factor `bngain * bnvar_inv / n` comes out in front.\n\n"
            "The mean divides by n. The variance divides by n-1 (Bessel's correction), and that n-1 survives "
            "the simplification as a factor n/(n-1) on the variance's path; leaving it out, or inverting it, is "
            "the usual mistake. The sums run over the batch, dim 0; the answer has the shape of `hprebn`.",
        ),
    },
    "ex4": {
        "dC": Hint(
            "Exercise 4: `dC` is where the whole chain ends; a wrong line above it shows up here first.",
            "In the training loop the grader compares only the parameter gradients, so a mistake anywhere in your "
            "backward pass shows up in every parameter below it. Look at the first failing parameter in backward "
            "order (`dW2`, `db2`, then `dbngain`, `dbnbias`, then `dW1`, `db1`, `dC`): the line that feeds it is "
            "where the chain breaks. Check `dlogits` against exercise 2 and `dhprebn` against exercise 3.\n\n"
            "`dC` itself accumulates each row of `demb` into the row of `C` it came from: a character used several "
            "times gets the sum of its gradients.",
        ),
    },
}


# Exercise 4's loop writes exercise 2's `dlogits` and exercise 3's `dhprebn`.
BY_EXERCISE["ex4"].update(dlogits=BY_EXERCISE["ex2"]["dlogits"], dhprebn=BY_EXERCISE["ex3"]["dhprebn"])


def hint_for(name: str, exercise: str | None = None) -> Hint | None:
    """The hint bank's entry for a gradient name (`dbnvar`) in an exercise (exercise 1's words when the
    exercise has none of its own), or None."""
    return BY_EXERCISE.get(exercise or "", {}).get(name) or HINTS.get(name)
