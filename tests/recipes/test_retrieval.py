"""The key-value retrieval recipe's data and model: deterministic SFT batches with known rationales."""

import torch

from lightning_xai.families.causal_lm import completion_rows
from lightning_xai.metrics import Plausibility, ScoringContext
from lightning_xai.recipes import CausalLMFineTuner, RetrievalDataModule, generate_retrieval_examples
from lightning_xai.recipes.retrieval import retrieval_vocabulary
from lightning_xai.types import Explanation


def probe(**kwargs) -> dict:
    data = RetrievalDataModule(val_size=16, train_size=16, **kwargs)
    data.setup()
    return data, data.collate(data._splits["val"])


def test_generation_is_deterministic_and_the_rationale_is_the_queried_pair():
    assert generate_retrieval_examples(8, seed=3) == generate_retrieval_examples(8, seed=3)
    assert generate_retrieval_examples(8, seed=3) != generate_retrieval_examples(8, seed=4)
    for fused in (True, False):
        for example in generate_retrieval_examples(32, seed=0, num_pairs=4, fused=fused):
            query = example.prompt[-1]
            marked = [token for token, keep in zip(example.prompt, example.rationale, strict=True) if keep]
            if fused:  # the one pair token of the queried key, whose value is the completion
                assert marked == [f"{query}={example.completion[0]}"]
            else:
                assert marked == [query, example.completion[0]]
            assert example.completion[1] == "</s>"


def test_batches_are_sft_batches_over_the_tokenizer():
    data, batch = probe()
    assert data.vocab_size == len(data.tokenizer) == len(retrieval_vocabulary(6, 6)) == 53
    labels, ids = batch["labels"], batch["input_ids"]
    prompt = labels == -100
    assert torch.equal(labels[~prompt], ids[~prompt])  # the completion: value and </s>
    assert (~prompt).sum(dim=1).tolist() == [2] * 16
    assert completion_rows(labels).sum(dim=1).tolist() == [2] * 16  # predicted from the query key and the value
    assert not (batch["rationale_mask"] & ~prompt).any()  # the rationale lies in the prompt


def test_an_oracle_explainer_is_fully_plausible():
    """Relevance = the rationale itself: AUPRC 1.0 on every sample (what the monitor's plausibility measures)."""
    _, batch = probe()
    rationale = batch["rationale_mask"]
    valid = batch["attention_mask"].bool()
    special = (batch["labels"] != -100) | (batch["input_ids"] == 2)
    oracle = Explanation("oracle", rationale.float(), valid, special, torch.ones(16, dtype=torch.long))
    metric = Plausibility(kind="auprc")
    metric.update(oracle, ScoringContext(rationale=rationale))
    assert float(metric.compute()) == 1.0


def test_the_fine_tuner_learns_from_sft_batches_and_logs_completion_accuracy():
    data, batch = probe()
    module = CausalLMFineTuner(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}
    assert torch.isfinite(module.model(**inputs).loss)
    state = torch.random.get_rng_state()
    CausalLMFineTuner(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16)
    assert torch.equal(state, torch.random.get_rng_state())  # built from a private stream
