"""The key-value retrieval recipe's data and model: deterministic SFT batches with known rationales."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_xai import cli
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


def test_explain_reproduces_the_callback_on_the_causal_lm(tmp_path, monkeypatch, capsys):
    """`lightning-xai explain` on a checkpoint of the retrieval recipe logs the callback's values."""
    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "tiny_lm_retrieval.yaml")
    tiny = [
        "--data.init_args.train_size=32",
        "--data.init_args.val_size=16",
        "--data.init_args.batch_size=8",
        "--model.init_args.hidden_size=16",
        "--model.init_args.intermediate_size=16",
    ]
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "fit",
            "--config",
            recipe,
            *tiny,
            "--trainer.max_epochs=1",
            "--trainer.enable_checkpointing=true",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    run = tmp_path / "runs" / "tiny_lm_retrieval" / "version_0"
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    trained_record = json.loads((run / "xai" / "explanations.jsonl").read_text().splitlines()[-1])
    trained = trained_record["scalars"]
    assert {"xai/attn_lrp/auprc_plausibility", "xai/grad_sam/deletion_auc"} <= set(trained)
    capsys.readouterr()
    cli.main(["explain", "--ckpt", str(ckpt), "--config", recipe, "--out", str(tmp_path / "offline"), *tiny])
    offline_record = json.loads((tmp_path / "offline" / "xai" / "explanations.jsonl").read_text().splitlines()[-1])
    offline = offline_record["scalars"]
    assert offline.keys() == trained.keys()
    for key, value in trained.items():
        assert offline[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # the per-completion-token maps of the recipe's 4 heatmap samples, the same offline
    views = [sample["completion_tokens"] for sample in trained_record["samples"]]
    assert len(views) == 4 and all(view["tokens"][1] == "</s>" and "attn_lrp" in view["maps"] for view in views)
    offline_views = [sample.get("completion_tokens") for sample in offline_record["samples"]]
    assert offline_views[4:] == [None] * (len(offline_views) - 4)  # explain draws 8 heatmaps; the recipe asks for 4
    for view, again in zip(views, offline_views[:4], strict=True):
        assert again["tokens"] == view["tokens"] and again["maps"].keys() == view["maps"].keys()
        for method, rows in view["maps"].items():
            assert np.asarray(again["maps"][method]) == pytest.approx(np.asarray(rows), rel=1e-4, abs=1e-6), method
