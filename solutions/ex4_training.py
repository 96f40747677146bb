"""Exercise 4, solved: the whole backward pass inside the training loop.

This block runs at every training step, after the forward pass, and must leave
the seven parameter gradients in `dC dW1 db1 dW2 db2 dbngain dbnbias`. The stub
is generated from this file by `python -m grader.stubs`.
"""

import torch
import torch.nn.functional as F

## cross-entropy: loss = F.cross_entropy(logits, Yb) (your exercise 2)
dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)) / n

## second linear layer: logits = h @ W2 + b2
dh = dlogits @ W2.T
dW2 = h.T @ dlogits
db2 = dlogits.sum(0)

## tanh: h = torch.tanh(hpreact)
dhpreact = dh * torch.addcmul(torch.ones_like(h), h, h, value=-1)  # lecture: (1.0 - h**2) * dh

## BatchNorm: hpreact = bngain * bnraw + bnbias (your exercise 3 for dhprebn)
dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
dbnbias = dhpreact.sum(0, keepdim=True)
dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))

## first linear layer: hprebn = embcat @ W1 + b1
dembcat = dhprebn @ W1.T
dW1 = embcat.T @ dhprebn
db1 = dhprebn.sum(0)

## embedding: emb = C[Xb], embcat = emb.view(n, -1)
demb = dembcat.view(emb.shape)
dC = torch.zeros_like(C).index_add_(0, Xb.view(-1), demb.view(-1, n_embd))
