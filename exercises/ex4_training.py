# Exercise 4: putting it all together, training on your own gradients
#
# This block runs at every step of the lecture's training loop, after the forward
# pass below (`n_hidden` is 200 here). Write the whole backward pass down to the
# parameter gradients `dC dW1 db1 dW2 db2 dbngain dbnbias` (use your formulas from
# exercises 2 and 3). The grader compares them with autograd's at a few steps, then
# trains 1,000 steps on them and on autograd's, and checks the loss curves agree.
# `grade exercises/ex4_training.py --train` runs the lecture's full optimisation.
#
# Check your work at any time (blank lines are reported as `blank`):
#
#     grade exercises/ex4_training.py
#
# Autograd is off while your code runs: write every gradient by hand.
#
# In scope (the grader runs the forward pass and provides them):
#   torch, F (torch.nn.functional)
#   sizes: n = batch_size = 32, vocab_size = 27, block_size = 3, n_embd = 10, n_hidden = 200
#   (use these names, not the numbers)
#   parameters: C (27, 10), W1 (30, 200), b1 (200,), W2 (200, 27), b2 (27,), bngain (1, 200), bnbias (1, 200)
#   the batch: Xb (32, 3) and Yb (32,), character indices
#   every tensor of the forward pass that is assigned below:
#
#   emb = C[Xb]                                         # (32, 3, 10) embed the characters into vectors
#   embcat = emb.view(emb.shape[0], -1)                 # (32, 30) concatenate the vectors
#   # Linear layer
#   hprebn = embcat @ W1 + b1                           # (32, 200) hidden layer pre-activation
#   # BatchNorm layer
#   bnmean = hprebn.mean(0, keepdim=True)               # (1, 200)
#   bnvar = hprebn.var(0, keepdim=True, unbiased=True)  # (1, 200) Bessel's correction
#   bnvar_inv = (bnvar + 1e-5)**-0.5                    # (1, 200)
#   bnraw = (hprebn - bnmean) * bnvar_inv               # (32, 200)
#   hpreact = bngain * bnraw + bnbias                   # (32, 200)
#   # Non-linearity
#   h = torch.tanh(hpreact)                             # (32, 200) hidden layer
#   logits = h @ W2 + b2                                # (32, 27) output layer
#   loss = F.cross_entropy(logits, Yb)                  # () loss function

import torch
import torch.nn.functional as F

# cross-entropy: loss = F.cross_entropy(logits, Yb) (your exercise 2)
dlogits = ...

# second linear layer: logits = h @ W2 + b2
dh = ...
dW2 = ...
db2 = ...

# tanh: h = torch.tanh(hpreact)
dhpreact = ...

# BatchNorm: hpreact = bngain * bnraw + bnbias (your exercise 3 for dhprebn)
dbngain = ...
dbnbias = ...
dhprebn = ...

# first linear layer: hprebn = embcat @ W1 + b1
dembcat = ...
dW1 = ...
db1 = ...

# embedding: emb = C[Xb], embcat = emb.view(n, -1)
demb = ...
dC = ...
