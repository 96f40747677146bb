"""Exercise 1, solved: backprop through the whole network, one tensor at a time.

Every line is bitwise equal to PyTorch's autograd at the lecture's configuration.
The exercise stub is generated from this file by `python -m grader.stubs`: it keeps
the imports and the `##` section comments, and replaces every answer with `...`.
"""

import torch
import torch.nn.functional as F

## cross-entropy: loss = -logprobs[range(n), Yb].mean()
dlogprobs = -1.0/n * F.one_hot(Yb, num_classes=vocab_size).float()  # lecture: zeros, then [range(n), Yb] = -1.0/n
dprobs = (1.0 / probs) * dlogprobs
dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)
dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv
dcounts = counts_sum_inv * dprobs + torch.ones_like(counts) * dcounts_sum  # two branches: probs and counts_sum
dnorm_logits = counts * dcounts
dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
dlogits = dnorm_logits + F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes

## second linear layer: logits = h @ W2 + b2
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)

## tanh: h = torch.tanh(hpreact)
# The lecture's (1.0 - h**2) * dh is one rounding away from autograd: PyTorch's
# CPU kernel computes 1 - h*h with a fused multiply-add, as addcmul does.
dhpreact = dh * torch.addcmul(torch.ones_like(h), h, h, value=-1)

## BatchNorm: hpreact = bngain * bnraw + bnbias, with Bessel's correction in bnvar
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dbnraw = bngain * dhpreact
dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv
dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar
dbndiff = bnvar_inv * dbnraw + (2*bndiff) * dbndiff2  # two branches: bnraw and bndiff2
dbnmeani = (-dbndiff).sum(0, keepdim=True)
dhprebn = dbndiff + 1.0/n * (torch.ones_like(hprebn) * dbnmeani)

## first linear layer: hprebn = embcat @ W1 + b1
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)

## embedding: emb = C[Xb], embcat = emb.view(n, -1)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C).index_add_(0, Xb.view(-1), demb.view(-1, n_embd))  # the lecture loops over Xb
