# Exercise 3: backprop through BatchNorm in one go
#
# Given `dhpreact` (the correct gradient, in scope), write `dhprebn` as one expression
# of `dhpreact`, `bngain`, `bnvar_inv`, `bnraw` and `n`, without going through
# `dbnraw`, `dbnvar`, ... one at a time. Mind Bessel's correction: the variance
# divides by n-1.
#
# Check your work at any time (blank lines are reported as `blank`):
#
#     grade exercises/ex3_batchnorm.py
#
# Autograd is off while your code runs: write every gradient by hand.
#
# In scope (the grader runs the forward pass and provides them):
#   torch, F (torch.nn.functional)
#   sizes: n = batch_size = 32, vocab_size = 27, block_size = 3, n_embd = 10, n_hidden = 64
#   (use these names: your code is also graded at other sizes)
#   parameters: C (27, 10), W1 (30, 64), b1 (64,), W2 (64, 27), b2 (27,), bngain (1, 64), bnbias (1, 64)
#   the batch: Xb (32, 3) and Yb (32,), character indices
#   given: dhpreact (32, 64), the correct gradient of `hpreact`
#   every tensor of the forward pass that is assigned below:
#
#   emb = C[Xb]                                                 # (32, 3, 10) embed the characters into vectors
#   embcat = emb.view(emb.shape[0], -1)                         # (32, 30) concatenate the vectors
#   # Linear layer 1
#   hprebn = embcat @ W1 + b1                                   # (32, 64) hidden layer pre-activation
#   # BatchNorm layer
#   bnmeani = 1/n*hprebn.sum(0, keepdim=True)                   # (1, 64)
#   bndiff = hprebn - bnmeani                                   # (32, 64)
#   bndiff2 = bndiff**2                                         # (32, 64)
#   bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)              # (1, 64) Bessel's correction: 1/(n-1), not 1/n
#   bnvar_inv = (bnvar + 1e-5)**-0.5                            # (1, 64)
#   bnraw = bndiff * bnvar_inv                                  # (32, 64)
#   hpreact = bngain * bnraw + bnbias                           # (32, 64)
#   # Non-linearity
#   h = torch.tanh(hpreact)                                     # (32, 64) hidden layer
#   # Linear layer 2
#   logits = h @ W2 + b2                                        # (32, 27) output layer
#   # cross entropy loss (same as F.cross_entropy(logits, Yb))
#   logit_maxes = logits.max(1, keepdim=True).values            # (32, 1)
#   norm_logits = logits - logit_maxes                          # (32, 27) subtract max for numerical stability
#   counts = norm_logits.exp()                                  # (32, 27)
#   counts_sum = counts.sum(1, keepdims=True)                   # (32, 1)
#   counts_sum_inv = counts_sum**-1                             # (32, 1) 1.0/counts_sum does not give an exact backward pass
#   probs = counts * counts_sum_inv                             # (32, 27)
#   logprobs = probs.log()                                      # (32, 27)
#   loss = -logprobs[range(n), Yb].mean()                       # ()

import torch
import torch.nn.functional as F

# hpreact = bngain * bnraw + bnbias, bnraw = (hprebn - mean) * bnvar_inv: dhprebn in one expression
dhprebn = ...
