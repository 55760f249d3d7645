"""AOPC's "ferret" convention at its edges: no positive relevance (ferret 0.4.2: sufficiency 1, comprehensiveness 0),
thresholds whose only_pos rationale is empty, and, when an unpacked ferret-xai 0.4.2 wheel is named by
``LXAI_FERRET_DIR``, ferret's own evaluators on the same model, texts and scores."""

import importlib
import os
import sys
import types

import numpy as np
import pytest
import torch
from helpers import WORDS, make_model, make_tokenizer
from reference import faithfulness as ref

from lightning_xai.explain import logits_of
from lightning_xai.metrics import AOPCComprehensiveness, AOPCSufficiency, ScoringContext
from lightning_xai.metrics import aopc_comprehensiveness as comprehensiveness
from lightning_xai.metrics import aopc_sufficiency as sufficiency
from lightning_xai.modalities import TextModality
from lightning_xai.types import Explanation

TOKENIZER = make_tokenizer()
CLS, SEP, PAD, MASK = 2, 3, 0, 4
PLANTED = 7  # the id of WORDS[2] ("movie") in helpers.VOCAB


def _text(tokenizer=TOKENIZER):
    return TextModality(special_ids=[PAD, 1, CLS, SEP, MASK], pad_id=PAD, replacement_id=MASK, tokenizer=tokenizer)


class Planted(torch.nn.Module):
    """Class 1's logit is 8 when the planted id is present, else 0 (class 0 always 0)."""

    def forward(self, input_ids, attention_mask=None):
        present = (input_ids == PLANTED).any(dim=1).float()
        return torch.stack([torch.zeros_like(present), 8 * present], dim=1)


P1 = torch.sigmoid(torch.tensor(8.0)).item()


def _forward(model):
    return lambda inputs: logits_of(model(**inputs))


def _sharpened_bert():
    """A tiny random BERT with parameters x4: its probabilities move by ~1e-2 when tokens go (x1: ~1e-8)."""
    model = make_model("bert", num_labels=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4)
    return model


def _batch(rows):
    """``rows``: ``[(content ids, content relevance)]`` -> right-padded inputs and an Explanation of class 1."""
    width = max(len(ids) for ids, _ in rows) + 2
    ids = torch.full((len(rows), width), PAD)
    relevance = torch.zeros(len(rows), width)
    for row, (content, scores) in enumerate(rows):
        ids[row, : len(content) + 2] = torch.tensor([CLS, *content, SEP])
        relevance[row, 1 : len(content) + 1] = torch.tensor(scores, dtype=torch.float32)
    valid = ids != PAD
    valid[:, 0] = True
    special = (ids == CLS) | (ids == SEP) | ~valid
    target = torch.ones(len(rows), dtype=torch.long)
    explanation = Explanation("m", relevance * valid, valid, special, target)
    return {"input_ids": ids, "attention_mask": valid.long()}, explanation


@pytest.mark.parametrize("removal", ["retokenize", "delete"])
def test_no_positive_relevance_gives_ferrets_constants(removal):
    """All-negative and all-zero maps, short (n=4: int(0.1 n) = 0) and long (n=12: the 10% bin has k = 1): ferret
    builds no rationale, so sufficiency is 1 and comprehensiveness 0, whatever the model does."""
    short, long = [5, 6, PLANTED, 8], [5, 6, PLANTED, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    inputs, exp = _batch([
        (short, [-0.1, -0.2, -0.9, -0.3]),
        (short, [0.0, 0.0, 0.0, 0.0]),
        (long, [-0.01 * (i + 1) for i in range(12)]),
        (long, [0.0] * 12),
    ])
    forward = _forward(Planted())
    suff = sufficiency(forward, inputs, exp, _text(), convention="ferret", removal=removal, reduction="none")
    comp = comprehensiveness(forward, inputs, exp, _text(), convention="ferret", removal=removal, reduction="none")
    assert suff.tolist() == [1.0] * 4 and comp.tolist() == [0.0] * 4
    # the module metrics agree, and the reduced mean counts each sample
    context = ScoringContext(forward, inputs, _text())
    assert AOPCSufficiency(convention="ferret", removal=removal).sample_values(exp, context).tolist() == [1.0] * 4
    assert AOPCComprehensiveness(convention="ferret", removal=removal).sample_values(exp, context).tolist() == [0.0] * 4
    assert float(sufficiency(forward, inputs, exp, _text(), convention="ferret", removal=removal)) == 1.0
    # the slow reference (ferret's loop written out) says the same
    for row in range(4):
        length = int(inputs["attention_mask"][row].sum())
        ids, rel = inputs["input_ids"][row, :length].tolist(), exp.relevance[row, :length].tolist()
        content = exp.content_mask[row, :length].tolist()
        for suff_flag, expected in ((True, 1.0), (False, 0.0)):
            assert ref.aopc_reference(forward, ids, content, rel, 1, MASK, "ferret", sufficiency=suff_flag,
                                      mode="delete") == expected


def test_only_positive_tokens_enter_and_empty_thresholds_are_skipped():
    """n = 12 with a single positive token: every threshold's rationale is that token, so one kept threshold; the
    other conventions are not affected by the sign."""
    long = [5, 6, PLANTED, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    scores = [-0.01 * (i + 1) for i in range(12)]
    scores[2] = 0.5
    inputs, exp = _batch([(long, scores)])
    forward = _forward(Planted())
    # keeping only the planted token keeps p; removing it drops p to 0.5
    assert float(sufficiency(forward, inputs, exp, _text(), convention="ferret")) == pytest.approx(0.0, abs=1e-6)
    assert float(comprehensiveness(forward, inputs, exp, _text(), convention="ferret")) == pytest.approx(P1 - 0.5,
                                                                                                       abs=1e-6)
    # all-negative: ERASER still ranks by value (sign ignored) -- the constants are ferret's only
    inputs, negative = _batch([(long, [-0.01 * (i + 1) for i in range(12)])])
    assert float(comprehensiveness(forward, inputs, negative, _text())) != 0.0


def test_mixed_batch_equals_slow_reference():
    g = torch.Generator().manual_seed(3)
    rows = []
    for n, kind in ((4, "negative"), (12, "one"), (9, "random"), (13, "negative"), (11, "random"), (10, "zero")):
        content = (torch.randint(5, 19, (n,), generator=g)).tolist()
        content[int(torch.randint(0, n, (1,), generator=g))] = PLANTED
        scores = torch.randn(n, generator=g)
        if kind == "negative":
            scores = -scores.abs() - 0.01
        elif kind == "zero":
            scores = torch.zeros(n)
        elif kind == "one":
            scores = -scores.abs() - 0.01
            scores[content.index(PLANTED)] = 1.0
        rows.append((content, scores.tolist()))
    inputs, exp = _batch(rows)
    forward = _forward(_sharpened_bert())
    for suff_flag, metric in ((True, sufficiency), (False, comprehensiveness)):
        values = metric(forward, inputs, exp, _text(), convention="ferret", reduction="none")
        for row in range(len(rows)):
            length = int(inputs["attention_mask"][row].sum())
            expected = ref.aopc_reference(forward, inputs["input_ids"][row, :length].tolist(),
                                          exp.content_mask[row, :length].tolist(),
                                          exp.relevance[row, :length].tolist(), 1, MASK, "ferret",
                                          sufficiency=suff_flag, mode=ref.retokenizing(TOKENIZER))
            assert values[row].item() == pytest.approx(expected, abs=2e-5), (suff_flag, row)
        constants = values[[0, 3, 5]].tolist()
        assert constants == ([1.0] * 3 if suff_flag else [0.0] * 3)


def _ferret_measures():
    """ferret 0.4.2's evaluator module from an unpacked wheel (its package __init__ needs captum/lime/shap: skipped)."""
    path = os.environ.get("LXAI_FERRET_DIR")
    if not path:
        pytest.skip("set LXAI_FERRET_DIR to an unpacked ferret-xai==0.4.2 wheel to compare with ferret itself")
    package = types.ModuleType("ferret")
    package.__path__ = [os.path.join(path, "ferret")]
    sys.modules.setdefault("ferret", package)
    measures = importlib.import_module("ferret.evaluators.faithfulness_measures")
    return measures, importlib.import_module("ferret.explainers.explanation").Explanation


def test_equals_ferrets_own_evaluators():
    measures, FerretExplanation = _ferret_measures()
    model = _sharpened_bert()
    g = torch.Generator().manual_seed(0)
    word_ids = {w: TOKENIZER.convert_tokens_to_ids(w) for w in WORDS}
    rows = []
    for n, kind in ((4, "negative"), (12, "negative"), (12, "zero"), (12, "one"), (6, "random"), (11, "random"),
                    (14, "positive")):
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g)]
        scores = torch.randn(n, generator=g)
        scores = {"negative": -scores.abs() - 0.01, "zero": torch.zeros(n), "positive": scores.abs() + 0.01,
                  "random": scores, "one": torch.cat([torch.tensor([1.0]), -scores[1:].abs() - 0.01])}[kind]
        rows.append(([word_ids[w] for w in words], scores.tolist(), " ".join(words)))
    inputs, exp = _batch([(ids, scores) for ids, scores, _ in rows])
    forward = _forward(model)
    ours = {"suff": sufficiency(forward, inputs, exp, _text(), convention="ferret", reduction="none"),
            "comp": comprehensiveness(forward, inputs, exp, _text(), convention="ferret", reduction="none")}
    evaluators = {"suff": measures.AOPC_Sufficiency_Evaluation(model, TOKENIZER),
                  "comp": measures.AOPC_Comprehensiveness_Evaluation(model, TOKENIZER)}
    for row, (_, scores, text) in enumerate(rows):
        tokens = TOKENIZER.convert_ids_to_tokens(TOKENIZER(text)["input_ids"])
        explanation = FerretExplanation(text, tokens, np.array([0.0, *scores, 0.0]), "ours", 1)
        for key, evaluator in evaluators.items():
            theirs = float(evaluator.compute_evaluation(explanation, target=1).score)
            assert ours[key][row].item() == pytest.approx(theirs, abs=1e-6), (key, row)
