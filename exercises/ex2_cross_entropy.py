# Exercise 2: backprop through cross-entropy in one go
#
# The loss is `F.cross_entropy(logits, Yb)`. Write `dlogits`, the gradient of the loss
# with respect to `logits`, as one expression of `logits`, `Yb` and `n` (you may use
# `F.softmax`): no chunked intermediates (`probs`, `counts`, ...) are in scope.
# Even the lecture's answer is `approx`, not `exact`: that is a pass (rounding).
#
# Check your work at any time (blank lines are reported as `blank`):
#
#     grade exercises/ex2_cross_entropy.py
#
# Autograd is off while your code runs: write every gradient by hand.
#
# In scope (the grader runs the forward pass and provides them):
#   torch, F (torch.nn.functional)
#   sizes: n = batch_size = 32, vocab_size = 27, block_size = 3, n_embd = 10, n_hidden = 64
#   (use these names: your code is also graded at other sizes)
#   parameters: C (27, 10), W1 (30, 64), b1 (64,), W2 (64, 27), b2 (27,), bngain (1, 64), bnbias (1, 64)
#   the batch: Xb (32, 3) and Yb (32,), character indices
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
#   loss = F.cross_entropy(logits, Yb)                          # the same loss, in one call

import torch
import torch.nn.functional as F

# loss = F.cross_entropy(logits, Yb): dlogits in one expression
dlogits = ...
