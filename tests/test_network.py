"""The reference network: the lecture's data pipeline and initialisation, at any configuration."""

from __future__ import annotations

import torch

from grader.network import (
    LECTURE, Config, LazyDataset, Vocabulary, build_dataset, load_words, reference, split_words,
)

from conftest import python_prints


def test_lecture_vocabulary_is_dot_then_a_to_z():
    vocab = Vocabulary.from_words(load_words())
    assert "".join(vocab.itos) == ".abcdefghijklmnopqrstuvwxyz"
    assert len(load_words()) == 32033


def test_batch_rows_match_the_lectures_full_dataset():
    words = load_words()
    vocab = Vocabulary.from_words(words)
    train, dev, test = split_words(words)
    assert (len(train), len(dev), len(test)) == (25626, 3203, 3204)
    X, Y = build_dataset(train, vocab, 3)
    lazy = LazyDataset(train, vocab, 3)
    assert len(lazy) == X.shape[0]
    ix = torch.randint(0, X.shape[0], (500,), generator=torch.Generator().manual_seed(0))
    Xb, Yb = lazy.rows(ix)
    assert torch.equal(Xb, X[ix]) and torch.equal(Yb, Y[ix])


def test_reference_is_reproducible_and_has_every_gradient():
    first, second = reference.__wrapped__(LECTURE), reference.__wrapped__(LECTURE)
    assert torch.equal(first.tensors["loss"], second.tensors["loss"])
    assert set(first.gradients) >= {"logprobs", "counts_sum_inv", "hprebn", "emb", "C", "W1", "bngain"}
    assert first.gradients["bngain"].shape == (1, 64)
    assert 3.0 < first.tensors["loss"].item() < 4.0  # about -log(1/27) at initialisation


def test_another_alphabet_and_sizes_change_every_shape(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(["anne-marie", "jo ann", "bob", "eve", "ada", "max", "li", "kim", "sam", "zoe", "al"] * 3))
    config = Config(name="other", seed=7, block_size=4, n_embd=5, n_hidden=16, batch_size=13, words_path=words)
    ref = reference(config)
    assert ref.vocab.itos[:3] == (".", " ", "-")
    assert ref.sizes == dict(n=13, batch_size=13, vocab_size=len(ref.vocab), block_size=4, n_embd=5, n_hidden=16)
    assert ref.gradients["logits"].shape == (13, len(ref.vocab))
    assert ref.gradients["emb"].shape == (13, 4, 5)


def test_the_forward_pass_a_worker_shares_is_the_references_bitwise():
    import torch

    from grader.network import LECTURE, OTHER, SMALL, public, reference

    for config in (LECTURE, OTHER, SMALL):
        for dtype in (torch.float32, torch.float64):
            shared, ref = public(config, dtype), reference(config, dtype)
            assert set(shared.tensors) == set(ref.tensors) and shared.sizes == ref.sizes
            assert all(torch.equal(shared.tensors[n], ref.tensors[n]) for n in ref.tensors), (config.name, dtype)
            assert shared.shapes == {n: tuple(g.shape) for n, g in ref.gradients.items()}


def test_the_splits_worked_out_by_the_helper_process_are_the_ones_computed_here():
    """`grade FILE` has a helper process split the word lists while it imports torch; what the helper
    sends back must be exactly what this process would compute (and it must not need torch)."""
    probe = (
        "import sys\n"
        "from grader import words\n"
        "from grader.configs import LECTURE, OTHER, SMALL, TRAINING\n"
        "fetch = words.Prefetch([LECTURE, OTHER, SMALL, TRAINING])\n"
        "fetch.collect()\n"
        "got = dict(words._TRAIN)\n"
        "assert len(got) == 3, len(got)  # TRAINING shares the lecture's words\n"
        "words._TRAIN.clear()\n"
        "for config in (LECTURE, OTHER, SMALL):\n"
        "    assert words.train_words(config) == got[words._key(config)], config.name\n"
        "print('same' if 'torch' not in sys.modules else 'torch imported')\n"
    )
    assert python_prints(probe) == "same"
