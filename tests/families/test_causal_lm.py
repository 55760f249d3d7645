"""Causal LMs explained for the completion of an SFT batch (CompletionScorer, the causal_lm family).

Checked against explicit references written here from the definitions (an eager deep copy of the LM, float64
loops): the target is the summed teacher-forced log-probability of the completion with HF's shift; the
attention-row methods read the completion rows; the perturbation metrics keep the completion and score p̄.
"""

import copy
import math
import warnings

import pytest
import torch
from helpers import lightning_package, make_decoder_tokenizer, quiet_trainer
from reference.attention import unpadded_row

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.adapters import AdaptedBatch
from lightning_xai.errors import BatchFormatError, LightningXAIError, UnsupportedMethodError, UnsupportedModelError
from lightning_xai.explainers import (
    GAE,
    AttentionShapley,
    AttnLRP,
    ConservativeLRP,
    GradientXInput,
    GradSAM,
    IntegratedGradients,
    LeGrad,
    Random,
    RawAttention,
    Rollout,
)
from lightning_xai.explanation_pass import explain_completion_tokens
from lightning_xai.families import CausalLMFamily, CompletionScorer, resolve_family
from lightning_xai.families.causal_lm import CompletionTextModality, completion_scores
from lightning_xai.metrics import AOPCComprehensiveness, DeletionAUC, Plausibility
from lightning_xai.metrics.engine import perturbation_curves

pl = lightning_package("lightning.pytorch")
VOCAB = 24
BOS, EOS, PAD = 2, 3, 0


def tiny_lm(architecture: str = "llama", seed: int = 0, layers: int = 2):
    """A tiny random causal LM (GQA: 4 query heads, 2 key/value heads), in eval mode."""
    import transformers

    options = dict(
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        vocab_size=VOCAB,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    if architecture == "gemma2":
        options.update(attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=8)
    name = {"llama": "Llama", "qwen2": "Qwen2", "gemma2": "Gemma2"}[architecture]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(transformers, f"{name}ForCausalLM")(getattr(transformers, f"{name}Config")(**options)).eval()


def sft_batch():
    """Three right-padded rows: prompts of 4, 6 and 3 tokens, completions of 2, 1 and 3 (labels -100 elsewhere)."""
    rows = [([BOS, 5, 6, 7], [8, 9]), ([BOS, 10, 11, 12, 13, 14], [15]), ([BOS, 16, 17], [18, 19, EOS])]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((3, width), PAD)
    labels = torch.full((3, width), -100)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        ids[i, :n] = torch.tensor(prompt + completion)
        labels[i, len(prompt) : n] = torch.tensor(completion)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def modality():
    return CompletionTextModality(special_ids=[PAD, BOS, EOS], pad_id=PAD, replacement_id=None, removal="attention")


def reference_pass(lm, row: dict):
    """Eager attentions of one unpadded row and the float64 summed log-probability ``S`` of its completion, with
    ``S`` already differentiated into the attentions; plus the completion rows ``t`` (labels[t + 1] != -100)."""
    model = copy.deepcopy(lm).eval()
    model.set_attn_implementation("eager")
    out = model(input_ids=row["input_ids"], attention_mask=row["attention_mask"], output_attentions=True)
    for attention in out.attentions:
        attention.retain_grad()
    labels = row["labels"][0]
    log_probs = out.logits[0].double().log_softmax(dim=-1)
    rows = [t for t in range(labels.shape[0] - 1) if int(labels[t + 1]) != -100]
    total = sum(log_probs[t, int(labels[t + 1])] for t in rows)
    total.backward()
    return out.attentions, rows, float(total.detach())


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_the_target_is_the_summed_teacher_forced_log_probability_of_the_completion(architecture):
    lm = tiny_lm(architecture)
    batch = sft_batch()
    scorer = CompletionScorer(lm)
    with torch.no_grad():
        logits = scorer(**batch).logits
        for row in range(3):
            single = unpadded_row(batch, row)
            loss = lm(**single).loss  # HF: mean NLL over labels[t + 1] != -100, predicted by row t
            count = int((single["labels"][0, 1:] != -100).sum())
            torch.testing.assert_close(logits[row, 1], -loss * count)  # explained: the SUM of log-probabilities
            torch.testing.assert_close(logits.softmax(-1)[row, 1], torch.exp(-loss))  # metrics: p̄ = exp(mean)
            torch.testing.assert_close(logits.log_softmax(-1)[row, 1], -loss)  # log-odds reads the mean log-prob
        with scorer.explaining_logits():  # LRP's target: the summed logits of the completion tokens (lxt)
            summed = scorer(**batch).logits[:, 1]
        lm_logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for row in range(3):
        labels = batch["labels"][row]
        expected = sum(
            float(lm_logits[row, t, labels[t + 1]]) for t in range(labels.shape[0] - 1) if int(labels[t + 1]) != -100
        )
        assert math.isclose(float(summed[row]), expected, rel_tol=1e-5)
    assert scorer._explained == "log_prob"  # restored


def test_gradient_x_input_equals_the_explicit_gradient_of_the_summed_log_probability():
    """An oracle for the target: x . dS/dx at the token embeddings, S written here from HF's loss."""
    lm = tiny_lm()
    batch = sft_batch()
    maps = explain(lm, batch, [GradientXInput()], modality=modality())["gradient_x_input"]  # wraps the LM itself
    for row in range(3):
        single = unpadded_row(batch, row)
        model = copy.deepcopy(lm)
        embeddings = model.get_input_embeddings()(single["input_ids"]).detach().requires_grad_()
        loss = model(inputs_embeds=embeddings, attention_mask=single["attention_mask"], labels=single["labels"]).loss
        count = int((single["labels"][0, 1:] != -100).sum())
        (gradient,) = torch.autograd.grad(-loss * count, embeddings)
        expected = (embeddings * gradient).sum(-1)[0]
        content = ~torch.isin(single["input_ids"][0], torch.tensor([PAD, BOS, EOS])) & (single["labels"][0] == -100)
        n = single["input_ids"].shape[1]
        torch.testing.assert_close(maps.relevance[row, :n], expected.detach(), rtol=1e-4, atol=1e-6)
        assert torch.equal(maps.content_mask[row, :n], content)  # the prompt's words only


def test_attention_row_methods_read_the_completion_rows():
    """Raw attention, rollout, GAE and the cls Shapley game read the mean of the rows predicting completion tokens
    (explicit float64 references on an eager copy), not row 0 and not the last token alone."""
    lm = tiny_lm()
    batch = sft_batch()
    explainers = [RawAttention(), Rollout(), GAE(), AttentionShapley(game="cls")]
    maps = explain(CompletionScorer(lm), batch, explainers, modality=modality())
    for row in range(3):
        single = unpadded_row(batch, row)
        attentions, rows, _ = reference_pass(lm, single)
        n = single["input_ids"].shape[1]
        heads = [a[0].detach().double().mean(dim=0) for a in attentions]  # [N, N] per layer
        raw = torch.stack([heads[-1][t] for t in rows]).mean(dim=0)
        rollout = torch.eye(n, dtype=torch.float64)
        gae = torch.eye(n, dtype=torch.float64)
        for attention, mean in zip(attentions, heads, strict=True):
            mixed = mean + torch.eye(n, dtype=torch.float64)
            rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
            weighted = (attention.grad[0].double() * attention[0].detach().double()).clamp_min(0).mean(dim=0)
            gae = gae + weighted @ gae
        content = (single["labels"][0] == -100) & ~torch.isin(single["input_ids"][0], torch.tensor([PAD, BOS, EOS]))
        shapley = torch.stack(heads).mean(dim=0)
        expected = {
            "raw_attention": raw,
            "rollout": torch.stack([rollout[t] for t in rows]).mean(dim=0),
            "gae": torch.stack([gae[t] for t in rows]).mean(dim=0),
            "attention_shapley": torch.where(content, torch.stack([shapley[t] for t in rows]).mean(dim=0), 0.0),
        }
        for name, reference in expected.items():
            torch.testing.assert_close(
                maps[name].relevance[row, :n], reference.float(), rtol=1e-4, atol=1e-5, msg=f"{name} row {row}"
            )
        assert not torch.allclose(heads[-1][0].float(), raw.float())  # row 0 (BOS attends to itself) differs
    assert maps["raw_attention"].target.tolist() == [1, 1, 1]


def test_completion_maps_batched_equal_a_per_sample_loop():
    """Every method in one batched pass (right padding, completions of 1-3 tokens) == each row alone, unpadded."""
    lm = tiny_lm()
    batch = sft_batch()
    methods = [
        GradSAM(),
        RawAttention(),
        Rollout(),
        GAE(),
        LeGrad(),
        AttnLRP(),
        ConservativeLRP(),
        GradientXInput(),
        IntegratedGradients(steps=4),
        AttentionShapley(),
    ]
    maps = explain(CompletionScorer(lm), batch, methods, modality=modality())
    for row in range(3):
        single = explain(
            CompletionScorer(lm), unpadded_row(batch, row), [copy.deepcopy(m) for m in methods], modality=modality()
        )
        for name, explanation in single.items():
            n = explanation.relevance.shape[1]
            scale = float(explanation.relevance.abs().max()) + 1e-12
            torch.testing.assert_close(
                maps[name].relevance[row, :n] / scale,
                explanation.relevance[0] / scale,
                rtol=1e-4,
                atol=2e-5,
                msg=f"{name} row {row}",
            )
            assert torch.all(maps[name].relevance[row, n:] == 0)


def test_legrad_reads_each_layer_through_the_final_norm_and_lm_head():
    """The last layer's logit lens reproduces the scorer's output; each layer's lens scores its own S."""
    lm = tiny_lm()
    batch = sft_batch()
    scorer = CompletionScorer(lm)
    family = resolve_family(scorer)
    assert isinstance(family, CausalLMFamily)
    with torch.no_grad(), family.capture().record() as record:
        logits = scorer(**batch).logits
        valid = batch["attention_mask"].bool()
        rows = family.prediction_rows(batch, valid)
        lens = family.layer_logits(record.hidden_states[-1], rows, batch)
        first = family.layer_logits(record.hidden_states[0], rows, batch)
        expected_first = completion_scores(lm.lm_head(lm.model.norm(record.hidden_states[0])), batch["labels"])
    torch.testing.assert_close(lens, logits)
    torch.testing.assert_close(first, expected_first)
    assert torch.allclose(rows.sum(dim=1), torch.ones(3))  # equal weights on the completion rows


def test_perturbations_remove_prompt_tokens_only_and_score_the_mean_log_probability():
    """Deletion's curve: point 0 is exp(mean log-prob) of the completion; the last point is the same with every
    prompt word hidden through the attention mask (explicit forwards of the LM); completion tokens stay."""
    lm = tiny_lm()
    batch = sft_batch()
    scorer = CompletionScorer(lm)
    explanation = explain(scorer, batch, [GradSAM()], modality=modality())["grad_sam"]
    masks = DeletionAUC(steps=2).removal_masks(explanation)
    completion = batch["labels"] != -100
    assert not (masks & completion[:, None, :]).any()
    with torch.no_grad():
        curves = perturbation_curves(lambda inputs: scorer(**inputs).logits, batch, explanation, modality(), steps=2)
        for row in range(3):
            single = unpadded_row(batch, row)
            start = torch.exp(-lm(**single).loss)
            hidden = dict(single)
            content = explanation.content_mask[row, : single["input_ids"].shape[1]]
            hidden["attention_mask"] = single["attention_mask"].masked_fill(content[None], 0)
            end = torch.exp(-lm(**hidden).loss)
            torch.testing.assert_close(curves[row, 0], start)
            torch.testing.assert_close(curves[row, -1], end)


def test_methods_that_cannot_be_defined_are_refused_with_the_reason():
    """Gemma-2 soft-caps its attention and final logits: no LRP rule, no logit lens; the rest runs."""
    scorer = CompletionScorer(tiny_lm("gemma2"))
    family = resolve_family(scorer)
    with pytest.raises(UnsupportedMethodError) as error:
        family.check([AttnLRP(), LeGrad(), GradSAM()])
    message = str(error.value)
    assert "'attn_lrp'" in message and "'legrad'" in message and "'grad_sam'" not in message
    assert "'causal_lm'" in message and "final_logit_softcapping" in message and "What to do" in message
    maps = explain(scorer, sft_batch(), [GradSAM(), RawAttention()], modality=modality())
    assert all(torch.isfinite(m.relevance).all() for m in maps.values())


def test_a_bare_causal_lm_is_pointed_to_the_scorer_and_labels_are_required():
    lm = tiny_lm()
    with pytest.raises(UnsupportedModelError, match="CompletionScorer"):
        resolve_family(lm)
    batch = sft_batch()
    with pytest.raises(BatchFormatError, match="labels"):
        CompletionScorer(lm)(input_ids=batch["input_ids"])
    family = resolve_family(CompletionScorer(lm))
    with pytest.raises(BatchFormatError, match="What to do"):  # the monitor is then disabled, saying so
        family.adapt_batch(AdaptedBatch({"input_ids": batch["input_ids"]}, torch.tensor([0, 1, 0])))
    adapted = family.adapt_batch(AdaptedBatch({"input_ids": batch["input_ids"]}, batch["labels"]))
    assert adapted.labels is None and torch.equal(adapted.inputs["labels"], batch["labels"])
    with pytest.raises(LightningXAIError, match="always explains output 1"):
        explain(lm, batch, [GradSAM()], modality=modality(), target=0)


# ------------------------------------------------------------------------------------------------ monitored fit


def retrieval_rows(n: int, seed: int, empty: tuple[int, ...] = ()):
    """``<s> k v k v k v ? k -> v </s>``: the completion is the value of the queried key; rationale: that pair."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        keys = torch.randperm(6, generator=g)[:3] + 5
        values = torch.randint(11, VOCAB, (3,), generator=g)
        query = int(torch.randint(0, 3, (1,), generator=g))
        prompt = [BOS] + [int(t) for pair in zip(keys, values, strict=True) for t in pair] + [4, int(keys[query])]
        ids = torch.tensor(prompt + [int(values[query]), EOS])
        labels = torch.full_like(ids, -100)
        if i not in empty:
            labels[len(prompt) :] = ids[len(prompt) :]
        rationale = torch.zeros_like(ids, dtype=torch.bool)
        rationale[1 + 2 * query : 3 + 2 * query] = True
        rows.append(
            {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "rationale_mask": rationale}
        )
    return rows


def loaders(empty: tuple[int, ...] = ()):
    def collate(rows):
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}

    train = torch.utils.data.DataLoader(retrieval_rows(16, 0), batch_size=8, collate_fn=collate)
    val = torch.utils.data.DataLoader(retrieval_rows(6, 1, empty), batch_size=3, collate_fn=collate)
    return train, val


class TinySFT(pl.LightningModule):
    """A tiny Llama fine-tuned with HF's causal-LM loss on SFT batches."""

    def __init__(self):
        super().__init__()
        self.model = tiny_lm(layers=2)
        self.model.train()
        self.tokenizer = make_decoder_tokenizer()

    def training_step(self, batch, batch_idx):
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}
        return self.model(**inputs).loss

    def validation_step(self, batch, batch_idx):
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}
        loss = self.model(**inputs).loss
        if torch.isfinite(loss):
            self.log("val_loss", loss)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def fit(tmp_path, monitor=None, empty: tuple[int, ...] = ()):
    torch.manual_seed(0)
    module = TinySFT()
    trainer = quiet_trainer(pl, tmp_path, monitor)
    trainer.fit(module, *loaders(empty))
    return module, torch.rand(1)


def test_a_monitored_causal_lm_fit_logs_every_method_and_trains_as_without_the_monitor(tmp_path):
    methods = [GradSAM(), AttnLRP(), LeGrad(), RawAttention(), Random()]
    monitor = ExplanationMonitor(
        explainers=methods,
        num_samples=6,
        num_heatmaps=2,
        on_error="raise",
        metrics=[DeletionAUC(steps=2), AOPCComprehensiveness(), Plausibility(kind="auprc")],
        write_files=False,
    )
    monitored, draw = fit(tmp_path / "a", monitor)
    plain, plain_draw = fit(tmp_path / "b")
    for key, value in plain.state_dict().items():  # monitoring changed nothing about training
        assert torch.equal(value, monitored.state_dict()[key]), key
    assert all(
        p.grad is None or torch.equal(p.grad, q.grad)
        for p, q in zip(monitored.parameters(), plain.parameters(), strict=True)
    )
    assert torch.equal(draw, plain_draw)  # the global RNG continues as without the monitor
    assert sorted(monitor.history) == [0, 1]
    logged = monitor.history[1]
    for method in ("grad_sam", "attn_lrp", "legrad", "raw_attention", "random"):
        for metric in ("deletion_auc", "aopc_comprehensiveness", "auprc_plausibility"):
            value = logged.get(f"xai/{method}/{metric}")
            assert value is not None and math.isfinite(value), (method, metric, sorted(logged))
    assert not any(key.endswith("skipped_samples") for key in logged)


def test_a_sample_without_completion_tokens_is_skipped_with_a_warning(tmp_path):
    monitor = ExplanationMonitor(
        explainers=[GradSAM(), RawAttention()],
        num_samples=6,
        num_heatmaps=3,
        metrics=[DeletionAUC(steps=2), Plausibility(kind="auprc")],
        write_files=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, monitor, empty=(1,))  # probe sample 1 has every label -100
    messages = [str(w.message) for w in caught]
    assert any("no completion tokens" in m and "What to do" in m for m in messages), messages
    for epoch in (0, 1):  # training went on; the other samples are scored
        logged = monitor.history[epoch]
        for method in ("grad_sam", "raw_attention"):
            assert logged[f"xai/{method}/skipped_samples"] == 1.0
            assert math.isfinite(logged[f"xai/{method}/deletion_auc"])
            assert math.isfinite(logged[f"xai/{method}/auprc_plausibility"])


def test_per_completion_token_maps_add_up_to_the_completion_map():
    """The inseq-style view: one map per completion token. Gradient x input is linear in the target, so a sample's
    token maps sum to its completion map; raw attention reads the one row predicting each token, and the mean of
    those rows is the completion map."""
    lm = tiny_lm()
    batch = sft_batch()
    tokens = explain_completion_tokens(lm, batch, [GradientXInput(), RawAttention()], modality=modality())
    whole = explain(lm, batch, [GradientXInput(), RawAttention()], modality=modality())
    completion = batch["labels"] != -100
    assert tokens["raw_attention"].positions.tolist() == [[4, 5, -1], [6, -1, -1], [3, 4, 5]]
    for row in range(3):
        count = int(completion[row].sum())
        gxi = tokens["gradient_x_input"].relevance[row]
        torch.testing.assert_close(
            gxi[:count].sum(dim=0), whole["gradient_x_input"].relevance[row], rtol=1e-4, atol=1e-6
        )
        assert torch.all(gxi[count:] == 0)
        raw = tokens["raw_attention"].relevance[row, :count]
        torch.testing.assert_close(raw.mean(dim=0), whole["raw_attention"].relevance[row])
        attentions, _, _ = reference_pass(lm, unpadded_row(batch, row))
        last = attentions[-1][0].detach().double().mean(dim=0)
        n = last.shape[0]
        for c, position in enumerate(tokens["raw_attention"].positions[row, :count].tolist()):
            torch.testing.assert_close(raw[c, :n], last[position - 1].float())  # the row predicting the token
    assert torch.equal(tokens["raw_attention"].content_mask, whole["raw_attention"].content_mask)
