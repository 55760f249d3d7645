"""PEFT (LoRA) causal LMs: explained through the base model with the adapters active.

References: the same LoRA model merged into its weights (``merge_and_unload`` on a copy) computes the same function,
so every gradient method must give the same maps; the base model without adapters must give other maps.
"""

import copy
import math

import pytest
import torch
from helpers import lightning_package, make_decoder_tokenizer, quiet_trainer
from test_causal_lm import BOS, EOS, PAD, VOCAB, modality, sft_batch, tiny_lm  # one tiny LM and SFT batch

from lightning_xai import ExplanationMonitor, explain
from lightning_xai.adapters import default_model_getter
from lightning_xai.errors import UnsupportedModelError
from lightning_xai.explainers import (
    GAE,
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
from lightning_xai.families import CausalLMFamily, CompletionScorer, resolve_family
from lightning_xai.families.peft_models import is_peft_wrapper
from lightning_xai.metrics import DeletionAUC, Plausibility

peft = pytest.importorskip("peft")
pl = lightning_package("lightning.pytorch")
#: Gradient and attention methods: the LoRA model and its merged copy compute the same function.
EXACT = [GradientXInput(), GradSAM(), IntegratedGradients(steps=4), LeGrad(), RawAttention(), Rollout(), GAE(),
         ConservativeLRP.lxt(), AttnLRP(epsilon=0.0)]


def with_lora(lm, dropout: float = 0.0, trained: bool = True, **options):
    """``lm`` (a copy) with LoRA adapters on every linear layer; ``trained``: lora_B non-zero (as after training)."""
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = peft.get_peft_model(copy.deepcopy(lm), config)
        if trained:
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if "lora_B" in name:
                        parameter.normal_(0.0, 0.3)
    return model


def maps(model, methods):
    return {name: e.relevance for name, e in explain(model, sft_batch(), methods, modality=modality()).items()}


def test_lora_maps_equal_the_merged_models_maps():
    lora = with_lora(tiny_lm()).eval()
    merged = copy.deepcopy(lora).merge_and_unload()
    assert not is_peft_wrapper(merged)
    ours, reference = maps(lora, EXACT), maps(merged, EXACT)
    assert set(ours) == {method.name for method in EXACT}
    for name, expected in reference.items():
        scale = expected.abs().max()
        assert scale > 0, name
        torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-5 * scale)
    # AttnLRP's default epsilon rule (1e-6) acts on the base layer and on the adapter branch separately: the maps
    # differ from the merged model's by the stabiliser only (measured: 1.8e-4 of the largest relevance here)
    ours, reference = maps(lora, [AttnLRP()])["attn_lrp"], maps(merged, [AttnLRP()])["attn_lrp"]
    scale = reference.abs().max()
    assert 0 < (ours - reference).abs().max() < 1e-3 * scale


def test_the_adapters_are_active():
    lm = tiny_lm()
    lora = with_lora(lm).eval()
    methods = [GradientXInput(), GradSAM()]
    base, adapted = maps(lm, methods), maps(lora, methods)
    for name in base:
        assert (base[name] - adapted[name]).abs().max() > 1e-3, name  # lora_B != 0: another function
    with lora.disable_adapter():  # the explanations follow the model's state: adapters off = the base model
        disabled = maps(lora, methods)
    for name in base:
        torch.testing.assert_close(disabled[name], base[name], rtol=1e-5, atol=1e-6)
    untrained = maps(with_lora(lm, trained=False).eval(), methods)  # lora_B = 0 at initialisation: the base model
    for name in base:
        torch.testing.assert_close(untrained[name], base[name], rtol=1e-5, atol=1e-6)


def test_the_wrapper_is_seen_through_by_structure():
    lora = with_lora(tiny_lm())
    base = lora.get_base_model()
    scorer = CompletionScorer(lora)
    assert scorer.lm is base  # shared, not copied
    assert isinstance(resolve_family(scorer), CausalLMFamily)
    with pytest.raises(UnsupportedModelError, match="CompletionScorer"):  # as for a bare causal LM
        resolve_family(lora)
    module = torch.nn.Module()
    module.model = lora
    assert default_model_getter(module) is base


def test_prompt_learning_is_refused_and_dora_refuses_lrp():
    lm = tiny_lm()
    prompt_tuned = peft.get_peft_model(
        copy.deepcopy(lm), peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    )
    with pytest.raises(UnsupportedModelError, match="prompt-learning"):
        explain(prompt_tuned, sft_batch(), [GradientXInput()], modality=modality())
    module = torch.nn.Module()
    module.model = prompt_tuned
    with pytest.raises(UnsupportedModelError, match="What to do"):
        default_model_getter(module)
    dora = resolve_family(CompletionScorer(with_lora(lm, use_dora=True)))
    reason = dora.refusal("attn_lrp", AttnLRP().requirements())
    assert reason is not None and "no LRP rule" in reason
    assert dora.refusal("gradient_x_input", GradientXInput().requirements()) is None


def test_explaining_a_training_lora_model_touches_no_grad_and_no_rng():
    lora = with_lora(tiny_lm(), dropout=0.1).train()
    sentinels = {}
    for name, parameter in lora.named_parameters():
        parameter.grad = torch.full_like(parameter, 7.0)
        sentinels[name] = parameter.grad
    state = torch.random.get_rng_state()
    maps(lora, [GradSAM(), AttnLRP(), GradientXInput(), LeGrad()])
    assert torch.equal(state, torch.random.get_rng_state())
    assert lora.training and all(module.training for module in lora.modules())
    for name, parameter in lora.named_parameters():
        assert parameter.grad is sentinels[name] and bool((parameter.grad == 7.0).all()), name


# ------------------------------------------------------------------------------------------------ monitored fit


def rows(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        keys = torch.randperm(6, generator=g)[:3] + 5
        values = torch.randint(11, VOCAB, (3,), generator=g)
        query = int(torch.randint(0, 3, (1,), generator=g))
        prompt = [BOS] + [int(t) for pair in zip(keys, values, strict=True) for t in pair] + [4, int(keys[query])]
        ids = torch.tensor(prompt + [int(values[query]), EOS])
        labels = torch.full_like(ids, -100)
        labels[len(prompt) :] = ids[len(prompt) :]
        rationale = torch.zeros_like(ids, dtype=torch.bool)
        rationale[1 + 2 * query : 3 + 2 * query] = True
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                    "rationale_mask": rationale})
    return out


def collate(batch):
    return {key: torch.stack([row[key] for row in batch]) for key in batch[0]}


class TinyLoRASFT(pl.LightningModule):
    """A tiny Llama with LoRA adapters (dropout on: the fit consumes the RNG) fine-tuned on SFT batches."""

    def __init__(self):
        super().__init__()
        self.model = with_lora(tiny_lm(), dropout=0.1, trained=False)
        self.model.train()
        self.tokenizer = make_decoder_tokenizer()

    def training_step(self, batch, batch_idx):
        return self.model(**{key: batch[key] for key in ("input_ids", "attention_mask", "labels")}).loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.model(**{key: batch[key] for key in ("input_ids", "attention_mask", "labels")}).loss)

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=1e-2)


def fit(tmp_path, monitor=None):
    torch.manual_seed(0)
    module = TinyLoRASFT()
    trainer = quiet_trainer(pl, tmp_path, monitor)
    train = torch.utils.data.DataLoader(rows(16, 0), batch_size=8, collate_fn=collate)
    val = torch.utils.data.DataLoader(rows(6, 1), batch_size=3, collate_fn=collate)
    trainer.fit(module, train, val)
    return module, torch.rand(1)


def test_a_monitored_lora_fit_trains_bit_identically_to_an_unmonitored_one(tmp_path):
    monitor = ExplanationMonitor(
        explainers=[GradSAM(), AttnLRP(), LeGrad(), GradientXInput(), Random()],
        metrics=[DeletionAUC(steps=2), Plausibility(kind="auprc")],
        num_samples=6,
        num_heatmaps=1,
        on_error="raise",
        write_files=False,
    )
    monitored, draw = fit(tmp_path / "a", monitor)
    plain, plain_draw = fit(tmp_path / "b")
    for key, value in plain.state_dict().items():
        assert torch.equal(value, monitored.state_dict()[key]), key
    trainable = 0
    for (name, p), q in zip(monitored.named_parameters(), plain.parameters(), strict=True):
        if p.requires_grad:  # the adapters: trained, with the same gradients left (None after zero_grad)
            trainable += 1
            assert "lora_" in name and ((p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)), name
        else:  # the frozen base: never given a gradient
            assert p.grad is None and q.grad is None, name
    assert trainable == 2 * 7 * 2  # lora_A and lora_B on 7 linear layers of 2 layers
    assert torch.equal(draw, plain_draw)  # the global RNG continues as without the monitor
    assert not torch.equal(plain.model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight,
                           torch.zeros(16, 4))  # the adapters did train
    logged = monitor.history[1]
    for method in ("grad_sam", "attn_lrp", "legrad", "gradient_x_input", "random"):
        for metric in ("deletion_auc", "auprc_plausibility"):
            value = logged.get(f"xai/{method}/{metric}")
            assert value is not None and math.isfinite(value), (method, metric)


def test_a_lora_sequence_classifier_is_explained_as_its_merged_model():
    """The wrapper of a classifier (PEFT's trained copy of the score head included) resolves to the decoder family."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, pad_token_id=PAD, num_labels=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        classifier = LlamaForSequenceClassification(config).eval()
        lora = peft.get_peft_model(copy.deepcopy(classifier),
                                   peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear"))
        with torch.no_grad():
            for name, parameter in lora.named_parameters():
                if "lora_B" in name or "modules_to_save" in name:
                    parameter.normal_(0.0, 0.3)
    lora.eval()
    merged = copy.deepcopy(lora).merge_and_unload()
    assert resolve_family(lora).name == "decoder"
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, PAD, PAD]])
    inputs = {"input_ids": ids, "attention_mask": (ids != PAD).long()}
    methods = [GradientXInput(), GradSAM(), LeGrad(), AttnLRP(epsilon=0.0)]
    ours = explain(lora, inputs, methods, tokenizer=make_decoder_tokenizer())
    reference = explain(merged, inputs, methods, tokenizer=make_decoder_tokenizer())
    base = explain(classifier, inputs, methods, tokenizer=make_decoder_tokenizer())
    for name, expected in reference.items():
        scale = expected.relevance.abs().max()
        torch.testing.assert_close(ours[name].relevance, expected.relevance, rtol=1e-5, atol=1e-5 * scale)
        assert (ours[name].relevance - base[name].relevance).abs().max() > 1e-3, name
