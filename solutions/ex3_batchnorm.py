"""Exercise 3, solved: the gradient through BatchNorm in one go.

With bnraw = (hprebn - mean) / sqrt(var + eps) and Bessel's unbiased variance,
dhprebn = bngain * bnvar_inv / n * (n*dhpreact - sum(dhpreact) - n/(n-1) * bnraw * sum(dhpreact * bnraw)).
The stub is generated from this file by `python -m grader.stubs`.
"""

import torch
import torch.nn.functional as F

## hpreact = bngain * bnraw + bnbias, bnraw = (hprebn - mean) * bnvar_inv: dhprebn in one expression
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
