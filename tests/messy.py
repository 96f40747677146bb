"""Notebooks as students keep them: their own copy of the lecture, with data loading, plots,
training, scratch cells and all four exercises in one file. Written for these tests.

`lecture_cells()` is a list of code cells (source strings); `changes` swaps a line for
another (to plant a mistake), and `where(cells, text)` finds the (code cell, line) of a
line, counted as Jupyter shows them.
"""

from __future__ import annotations

import nbformat

SETUP = [
    "import torch\nimport torch.nn.functional as F\nimport matplotlib.pyplot as plt\n%matplotlib inline",
    "words = open('names.txt', 'r').read().splitlines()\nprint(len(words), words[:3])",
    "letters = sorted(set(''.join(words)))\nstoi = {ch: i + 1 for i, ch in enumerate(letters)}\nstoi['.'] = 0\n"
    "itos = {i: ch for ch, i in stoi.items()}\nvocab_size = len(itos)",
    "block_size = 3\n\ndef build_dataset(words):\n    X, Y = [], []\n    for w in words:\n"
    "        context = [0] * block_size\n        for ch in w + '.':\n            ix = stoi[ch]\n"
    "            X.append(context)\n            Y.append(ix)\n            context = context[1:] + [ix]\n"
    "    return torch.tensor(X), torch.tensor(Y)\n\nimport random\nrandom.seed(42)\nrandom.shuffle(words)\n"
    "n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))\nXtr, Ytr = build_dataset(words[:n1])\n"
    "Xdev, Ydev = build_dataset(words[n1:n2])",
    "def cmp(s, dt, t):\n    ex = torch.all(dt == t.grad).item()\n    app = torch.allclose(dt, t.grad)\n"
    "    maxdiff = (dt - t.grad).abs().max().item()\n    print(f'{s:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}')",
    "n_embd, n_hidden = 10, 64\ng = torch.Generator().manual_seed(2147483647)\n"
    "C = torch.randn((vocab_size, n_embd), generator=g)\n"
    "W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5/3) / ((n_embd * block_size)**0.5)\n"
    "b1 = torch.randn(n_hidden, generator=g) * 0.1\nW2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1\n"
    "b2 = torch.randn(vocab_size, generator=g) * 0.1\nbngain = torch.randn((1, n_hidden)) * 0.1 + 1.0\n"
    "bnbias = torch.randn((1, n_hidden)) * 0.1\nparameters = [C, W1, b1, W2, b2, bngain, bnbias]\n"
    "for p in parameters:\n    p.requires_grad = True",
    "batch_size = 32\nn = batch_size\nix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)\n"
    "Xb, Yb = Xtr[ix], Ytr[ix]",
    "emb = C[Xb]\nembcat = emb.view(emb.shape[0], -1)\nhprebn = embcat @ W1 + b1\n"
    "bnmeani = 1/n*hprebn.sum(0, keepdim=True)\nbndiff = hprebn - bnmeani\nbndiff2 = bndiff**2\n"
    "bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)\nbnvar_inv = (bnvar + 1e-5)**-0.5\nbnraw = bndiff * bnvar_inv\n"
    "hpreact = bngain * bnraw + bnbias\nh = torch.tanh(hpreact)\nlogits = h @ W2 + b2\n"
    "logit_maxes = logits.max(1, keepdim=True).values\nnorm_logits = logits - logit_maxes\ncounts = norm_logits.exp()\n"
    "counts_sum = counts.sum(1, keepdims=True)\ncounts_sum_inv = counts_sum**-1\nprobs = counts * counts_sum_inv\n"
    "logprobs = probs.log()\nloss = -logprobs[range(n), Yb].mean()\n"
    "for p in parameters:\n    p.grad = None\n"
    "for t in [logprobs, probs, counts, counts_sum, counts_sum_inv, norm_logits, logit_maxes, logits, h,\n"
    "          hpreact, bnraw, bnvar_inv, bnvar, bndiff2, bndiff, hprebn, bnmeani, embcat, emb]:\n"
    "    t.retain_grad()\nloss.backward()\nloss",
]

EXERCISE1 = [
    "# Exercise 1, all the way down\n"
    "dlogprobs = torch.zeros_like(logprobs)\n"
    "dlogprobs[range(n), Yb] = -1.0 / n\n"
    "dprobs = dlogprobs / probs\n"
    "dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)\n"
    "dcounts = counts_sum_inv * dprobs\n"
    "dcounts_sum = -counts_sum**-2 * dcounts_sum_inv\n"
    "dcounts += torch.ones_like(counts) * dcounts_sum\n"
    "dnorm_logits = counts * dcounts\n"
    "dlogits = dnorm_logits.clone()\n"
    "dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)\n"
    "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes\n"
    "cmp('logits', dlogits, logits)",
    "dh = dlogits @ W2.T\n"
    "dW2 = h.T @ dlogits\n"
    "db2 = dlogits.sum(0)\n"
    "dhpreact = (1.0 - h**2) * dh\n"
    "dbngain = (bnraw * dhpreact).sum(0, keepdim=True)\n"
    "dbnraw = bngain * dhpreact\n"
    "dbnbias = dhpreact.sum(0, keepdim=True)\n"
    "dbndiff = bnvar_inv * dbnraw\n"
    "dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)\n"
    "dbnvar = -0.5 * (bnvar + 1e-5)**-1.5 * dbnvar_inv\n"
    "dbndiff2 = 1.0 / (n - 1) * torch.ones_like(bndiff2) * dbnvar\n"
    "dbndiff += 2 * bndiff * dbndiff2\n"
    "dhprebn = dbndiff.clone()\n"
    "dbnmeani = (-dbndiff).sum(0, keepdim=True)\n"
    "dhprebn += 1.0 / n * torch.ones_like(hprebn) * dbnmeani\n"
    "dembcat = dhprebn @ W1.T\n"
    "dW1 = embcat.T @ dhprebn\n"
    "db1 = dhprebn.sum(0)\n"
    "demb = dembcat.view(emb.shape)\n"
    "dC = torch.zeros_like(C)\n"
    "for k in range(Xb.shape[0]):\n"
    "    for j in range(Xb.shape[1]):\n"
    "        ix = Xb[k, j]\n"
    "        dC[ix] += demb[k, j]\n"
    "cmp('C', dC, C)\ncmp('W1', dW1, W1)",
]

EXERCISE2 = [
    "loss_fast = F.cross_entropy(logits, Yb)\nprint(loss_fast.item(), 'diff:', (loss_fast - loss).item())",
    "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n\ncmp('logits', dlogits, logits)",
    "dlogits[0] * n",
    "P = F.softmax(logits, 1)  # for the picture only\nplt.figure(figsize=(4, 4))\nplt.imshow(P.detach(), cmap='gray')",
]

EXERCISE3 = [
    "hpreact_fast = bngain * (hprebn - hprebn.mean(0, keepdim=True)) / torch.sqrt(hprebn.var(0, keepdim=True, "
    "unbiased=True) + 1e-5) + bnbias\nprint('max diff:', (hpreact_fast - hpreact).abs().max())",
    "dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))\n"
    "cmp('hprebn', dhprebn, hprebn)",
    "dhprebn.shape, bngain.shape, bnvar_inv.shape",
]

EXERCISE4 = [
    "n_embd, n_hidden = 10, 200\ng = torch.Generator().manual_seed(2147483647)\n"
    "C = torch.randn((vocab_size, n_embd), generator=g)\n"
    "W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5/3) / ((n_embd * block_size)**0.5)\n"
    "b1 = torch.randn(n_hidden, generator=g) * 0.1\nW2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1\n"
    "b2 = torch.randn(vocab_size, generator=g) * 0.1\nbngain = torch.randn((1, n_hidden)) * 0.1 + 1.0\n"
    "bnbias = torch.randn((1, n_hidden)) * 0.1\nparameters = [C, W1, b1, W2, b2, bngain, bnbias]\n"
    "for p in parameters:\n    p.requires_grad = True\n"
    "max_steps = 200\nbatch_size = 32\nn = batch_size\nlossi = []\n"
    "for i in range(max_steps):\n"
    "    ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)\n"
    "    Xb, Yb = Xtr[ix], Ytr[ix]\n"
    "    emb = C[Xb]\n"
    "    embcat = emb.view(emb.shape[0], -1)\n"
    "    hprebn = embcat @ W1 + b1\n"
    "    bnmean = hprebn.mean(0, keepdim=True)\n"
    "    bnvar = hprebn.var(0, keepdim=True, unbiased=True)\n"
    "    bnvar_inv = (bnvar + 1e-5)**-0.5\n"
    "    bnraw = (hprebn - bnmean) * bnvar_inv\n"
    "    hpreact = bngain * bnraw + bnbias\n"
    "    h = torch.tanh(hpreact)\n"
    "    logits = h @ W2 + b2\n"
    "    loss = F.cross_entropy(logits, Yb)\n"
    "    for p in parameters:\n"
    "        p.grad = None\n"
    "    loss.backward()  # to compare with autograd while debugging\n"
    "    with torch.no_grad():\n"
    "        dlogits = F.softmax(logits, 1)\n"
    "        dlogits[range(n), Yb] -= 1\n"
    "        dlogits /= n\n"
    "        dh = dlogits @ W2.T\n"
    "        dW2 = h.T @ dlogits\n"
    "        db2 = dlogits.sum(0)\n"
    "        dhpreact = (1.0 - h**2) * dh\n"
    "        dbngain = (bnraw * dhpreact).sum(0, keepdim=True)\n"
    "        dbnbias = dhpreact.sum(0, keepdim=True)\n"
    "        dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))\n"
    "        dembcat = dhprebn @ W1.T\n"
    "        dW1 = embcat.T @ dhprebn\n"
    "        db1 = dhprebn.sum(0)\n"
    "        demb = dembcat.view(emb.shape)\n"
    "        dC = torch.zeros_like(C)\n"
    "        for k in range(Xb.shape[0]):\n"
    "            for j in range(Xb.shape[1]):\n"
    "                ix = Xb[k, j]\n"
    "                dC[ix] += demb[k, j]\n"
    "        grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]\n"
    "        lr = 0.1 if i < 100000 else 0.01\n"
    "        for p, grad in zip(parameters, grads):\n"
    "            p.data += -lr * grad\n"
    "    if i % 50 == 0:\n"
    "        print(f'{i:7d}/{max_steps:7d}: {loss.item():.4f}')\n"
    "    lossi.append(loss.log10().item())",
    "plt.plot(lossi)",
    "g = torch.Generator().manual_seed(2147483647 + 10)\nfor _ in range(5):\n    out, context = [], [0] * block_size\n"
    "    while True:\n        emb = C[torch.tensor([context])]\n        h = torch.tanh(emb.view(1, -1) @ W1 + b1)\n"
    "        probs = F.softmax(h @ W2 + b2, dim=1)\n        ix = torch.multinomial(probs, num_samples=1, generator=g).item()\n"
    "        context = context[1:] + [ix]\n        out.append(ix)\n        if ix == 0:\n            break\n"
    "    print(''.join(itos[i] for i in out))",
]


def lecture_cells(changes: dict[str, str] | None = None, *, parts=(SETUP, EXERCISE1, EXERCISE2, EXERCISE3, EXERCISE4)
                  ) -> list[str]:
    """Every code cell of a student's lecture notebook; `changes` replaces whole lines (old -> new)."""
    cells = [cell for part in parts for cell in part]
    for old, new in (changes or {}).items():
        hits = [i for i, cell in enumerate(cells) if old in cell.splitlines()]
        assert len(hits) == 1, f"{old!r} is in {len(hits)} cells"
        cells[hits[0]] = "\n".join(new if line == old else line for line in cells[hits[0]].splitlines())
    return cells


def where(cells: list[str], line: str, *, last: bool = False) -> tuple[int, int]:
    """(code cell, line in cell), 1-based, of a line of the notebook."""
    hits = [(i, j) for i, cell in enumerate(cells, start=1) for j, text in enumerate(cell.splitlines(), start=1)
            if text == line]
    assert hits and (last or len(hits) == 1), f"{line!r} found {len(hits)} times"
    return hits[-1]


def notebook(cells: list[str], *, markdown_every: int = 2, counts: list[int] | None = None) -> str:
    """The cells as a notebook file's text, with markdown between them (not counted as cells), and
    execution counts when given."""
    out = []
    for i, source in enumerate(cells):
        if markdown_every and i % markdown_every == 0:
            out.append(nbformat.v4.new_markdown_cell(f"Some notes before code cell {i + 1}."))
        cell = nbformat.v4.new_code_cell(source)
        if counts is not None:
            cell.execution_count = counts[i]
        out.append(cell)
    return nbformat.writes(nbformat.v4.new_notebook(cells=out))
