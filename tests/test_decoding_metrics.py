"""Decoding and text metrics on hand-checked examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text_recognizer import decoding, metrics
from text_recognizer.datasets.text import make_mapping

MAPPING = make_mapping("abc ")  # <blank>=0, <pad>=1, a=2, b=3, c=4, space=5


def one_hot_log_probs(path: list[int], num_classes: int = len(MAPPING)) -> torch.Tensor:
    """(1, T, C) log-probabilities whose argmax follows ``path``."""
    p = torch.full((len(path), num_classes), 0.01)
    p[torch.arange(len(path)), torch.tensor(path)] = 1.0
    return (p / p.sum(1, keepdim=True)).log()[None]


def test_greedy_merges_repeats_then_drops_blank_and_padding():
    # a a _ a b <pad> b c c  ->  a, a (a blank separates), b, b (padding separates), c
    lp = one_hot_log_probs([2, 2, 0, 2, 3, 1, 3, 4, 4])
    assert decoding.greedy_ctc_decode(lp) == [[2, 2, 3, 3, 4]]
    batch = torch.cat(
        [lp, one_hot_log_probs([0] * 9), one_hot_log_probs([5, 5, 2, 0, 0, 0, 0, 0, 0])]
    )
    assert decoding.greedy_ctc_decode(batch) == [[2, 2, 3, 3, 4], [], [5, 2]]
    assert decoding.to_texts(decoding.greedy_ctc_decode(batch), MAPPING) == ["aabbc", "", " a"]


def test_beam_finds_the_more_probable_labelling_that_greedy_misses():
    # Two frames, P(blank) = 0.6, P(a) = 0.4 each: best path is blank-blank (""), but
    # P("a") = 0.4 * 0.6 + 0.6 * 0.4 + 0.4 * 0.4 = 0.64 > P("") = 0.36.
    probs = torch.tensor([[[0.6, 0.0, 0.4], [0.6, 0.0, 0.4]]])
    assert decoding.greedy_ctc_decode(probs.log()) == [[]]
    assert decoding.beam_ctc_decode(probs, beam_width=5) == [[2]]
    log_probs = probs.clamp_min(1e-12).log().expand(2, -1, -1)
    p = decoding.sequence_probability(log_probs, [[2], []])
    torch.testing.assert_close(p, torch.tensor([0.64, 0.36]), atol=1e-5, rtol=0)


def test_beam_agrees_with_greedy_on_peaky_outputs_and_handles_a_blank_elsewhere():
    lp = torch.cat([one_hot_log_probs([2, 0, 3, 3, 0, 4, 5, 0]), one_hot_log_probs([0] * 8)])
    assert decoding.beam_ctc_decode(lp.exp(), beam_width=10) == decoding.greedy_ctc_decode(lp)
    # the same outputs with the blank moved to the last column
    moved = lp[..., [1, 2, 3, 4, 5, 0]]
    assert decoding.beam_ctc_decode(moved.exp().numpy(), 10, blank=5, ignore=(0,)) == [
        [1, 2, 3, 4],
        [],
    ]


def test_fixed_length_decoding_stops_at_the_first_padding():
    logits = one_hot_log_probs([2, 3, 1, 4])  # "ab", then padding, then a stray "c"
    assert decoding.fixed_length_decode(logits) == [[2, 3]]
    assert decoding.fixed_length_decode(one_hot_log_probs([0, 2, 2, 1])) == [[2, 2]]
    labels = np.array([[2, 5, 3, 1, 1], [1, 1, 1, 1, 1]])
    assert decoding.label_texts(labels, MAPPING) == ["a b", ""]


def test_character_and_word_edit_distances():
    assert metrics.char_edits("kitten", "sitting") == 3
    assert metrics.cer("kitten", "sitting") == pytest.approx(3 / 7)
    assert metrics.cer("", "") == 0 and metrics.cer("ab", "") == 2
    assert metrics.word_edits("the cat sat", "the cat sat down") == 1
    assert metrics.word_edits("the bat sat", "the cat sat") == 1


def test_character_accuracy_compares_positions_like_the_names_seed():
    assert metrics.char_matches("MARTIN", "MARTIN") == 6
    assert metrics.char_matches("MARTN", "MARTIN") == 4  # shorter: compared up to its length
    assert metrics.char_matches("XMARTIN", "MARTIN") == 0  # a shift spoils every later position
    assert metrics.char_matches("MARTINEZ", "MARTIN") == 6  # extra characters are not counted


def test_batch_pairs_add_up_over_batches():
    preds, truths = ["MARTN", "LEA", "JEAN PAUL", ""], ["MARTIN", "LEA", "JEAN PAUL", "EVA"]
    pairs = metrics.text_metrics(preds, truths)
    assert pairs == {
        "cer": (1 + 0 + 0 + 3, 6 + 3 + 9 + 3),
        "wer": (1 + 0 + 0 + 1, 1 + 1 + 2 + 1),
        "char_accuracy": (4 + 3 + 9 + 0, 21),
        "word_accuracy": (2, 4),
    }
    halves = [
        metrics.text_metrics(preds[:2], truths[:2]),
        metrics.text_metrics(preds[2:], truths[2:]),
    ]
    summed = {k: tuple(a + b for a, b in zip(*(h[k] for h in halves), strict=True)) for k in pairs}
    assert summed == pairs
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        metrics.text_metrics(["a", "b", "c"], ["a", "b"])
