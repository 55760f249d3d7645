"""A causal LM's per-completion-token maps on the monitor's dashboards, and the bad inputs of an SFT run.

The monitor explains the first ``completion_token_samples`` heatmap samples once per completion token and logs one
matrix per method (TensorBoard, W&B) and the raw maps (files sink). Checked here against an explicit reference (the
gradient of each completion token's log-probability, dotted with the input embeddings, on a deep copy of the LM),
against ``explain_completion_tokens`` on the same samples, and for the options and the bad inputs: a probe set
without completion tokens, a completion longer than the cap, a tokenizer without pad token.
"""

import copy
import json
import math
import warnings

import pytest
import torch
from helpers import make_decoder_tokenizer, make_text_module_class, quiet_trainer, text_loaders
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_causal_lm import BOS, EOS, PAD, TinySFT, loaders, modality, pl, retrieval_rows, tiny_lm

from lightning_xai import ExplanationMonitor
from lightning_xai.completion_tokens import explain_completion_token_samples
from lightning_xai.explainers import GradientXInput, GradSAM, Random, RawAttention
from lightning_xai.explanation_pass import explain_completion_tokens
from lightning_xai.families import CompletionScorer, resolve_family
from lightning_xai.keys import heatmap_path
from lightning_xai.metrics import DeletionAUC
from lightning_xai.probe import ProbeData
from lightning_xai.records import ProbeSample
from lightning_xai.sinks.files import JSONL_NAME

VIEW = "completion_tokens"


def monitored_fit(tmp_path, monitor, logger=False, val=None, epochs=1, module=None):
    torch.manual_seed(0)
    module = module or TinySFT()
    train, default_val = loaders()
    trainer = quiet_trainer(pl, tmp_path, monitor, max_epochs=epochs, logger=logger)
    trainer.fit(module, train, val or default_val)
    return module, torch.rand(1)


def records(root):
    return [json.loads(line) for line in (root / JSONL_NAME).read_text().splitlines()]


def probe_of(rows):
    """A collated probe set of equal-length SFT rows (ids, mask, SFT labels), without class labels or rationale."""
    keys = ("input_ids", "attention_mask", "labels")
    return ProbeData({key: torch.stack([row[key] for row in rows]) for key in keys}, None, None)


def reference_token_gradient_x_input(lm, ids, position):
    """d log p(ids[position] | ids[:position]) / d embeddings, dotted with the embeddings (one row, no padding)."""
    model = copy.deepcopy(lm).eval()
    embeddings = model.get_input_embeddings()(ids[None]).detach().requires_grad_()
    logits = model(inputs_embeds=embeddings).logits[0]
    log_prob = logits[position - 1].double().log_softmax(-1)[int(ids[position])]
    (gradient,) = torch.autograd.grad(log_prob, embeddings)
    return (gradient * embeddings).sum(-1)[0].detach()


def test_the_monitor_logs_per_completion_token_matrices_and_their_raw_maps(tmp_path):
    monitor = ExplanationMonitor(
        explainers=[GradientXInput(), RawAttention(), Random()], metrics=[DeletionAUC(steps=2)], num_samples=6,
        num_heatmaps=3, completion_token_samples=2, files_dir=str(tmp_path / "xai"), on_error="raise",
    )
    logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0)
    module, draw = monitored_fit(tmp_path, monitor, logger)
    plain, plain_draw = monitored_fit(tmp_path / "plain", None)
    for key, value in plain.state_dict().items():  # the extra passes changed nothing about training
        assert torch.equal(value, module.state_dict()[key]), key
    assert torch.equal(draw, plain_draw)

    record = records(tmp_path / "xai")[-1]
    samples = {sample["index"]: sample for sample in record["samples"]}
    assert sorted(samples) == [0, 1, 2] and "completion_tokens" not in samples[2]  # the first 2 heatmap samples
    rows = retrieval_rows(6, 1)
    lm = module.model
    tokenizer = module.tokenizer
    for index in (0, 1):
        view = samples[index]["completion_tokens"]
        ids = rows[index]["input_ids"]
        completion = (rows[index]["labels"] != -100).nonzero()[:, 0].tolist()
        assert view["total"] == len(completion) == 2
        assert view["tokens"] == tokenizer.convert_ids_to_tokens(ids[completion].tolist())  # rows: v, </s>
        assert sorted(view["maps"]) == ["gradient_x_input", "raw_attention"]  # Random draws no matrix
        content = ~torch.isin(ids, torch.tensor([PAD, BOS, EOS])) & (rows[index]["labels"] == -100)
        assert samples[index]["tokens"] == tokenizer.convert_ids_to_tokens(ids[content].tolist())  # columns
        for c, position in enumerate(completion):  # gradient x input of each token, against the explicit gradient
            expected = reference_token_gradient_x_input(lm, ids, position)[content]
            torch.testing.assert_close(torch.tensor(view["maps"]["gradient_x_input"][c]), expected.float(),
                                       rtol=1e-4, atol=1e-6)
        # every method's rows equal explain_completion_tokens on the same sample
        batch = {key: rows[index][key][None] for key in ("input_ids", "attention_mask", "labels")}
        direct = explain_completion_tokens(lm, batch, [GradientXInput(), RawAttention()], modality=modality())
        for name, maps in direct.items():
            torch.testing.assert_close(torch.tensor(view["maps"][name]), maps.relevance[0, :2][:, content])
        for method in ("gradient_x_input", "raw_attention"):
            assert heatmap_path(tmp_path / "xai", 0, method, index, view=VIEW).is_file()
            assert (tmp_path / "xai" / "evolution" / method / VIEW / f"sample_{index:02d}.png").is_file()

    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    images = {tag for tag in events.Tags()["images"] if f"/{VIEW}/" in tag}
    assert images == {f"xai/{m}/{VIEW}/sample_{i:02d}" for m in ("gradient_x_input", "raw_attention") for i in (0, 1)}
    assert not any(VIEW in key for key in monitor.history[0])  # nothing skipped, nothing truncated


def test_per_completion_token_maps_do_not_depend_on_the_pass_size():
    """Each completion token is its own row: one pass per token or all at once give the same maps."""
    lm = tiny_lm()
    scorer = CompletionScorer(lm)
    family = resolve_family(scorer)
    rows = retrieval_rows(3, 1)
    probe = probe_of(rows)
    samples = [ProbeSample(i, None, None, None, "completion") for i in (0, 2)]
    methods = [GradSAM(), GradientXInput()]
    kwargs = dict(family=family, modality=modality(), policy=None)
    one = explain_completion_token_samples(scorer, probe, samples, methods, batch_size=1, **kwargs)
    all_at_once = explain_completion_token_samples(scorer, probe, samples, methods, batch_size=32, **kwargs)
    cut = explain_completion_token_samples(scorer, probe, samples, methods, max_tokens=1, **kwargs)
    assert sorted(one.views) == [0, 2] and one.truncated == 0 and cut.truncated == 2
    for index in (0, 2):
        for name in ("grad_sam", "gradient_x_input"):
            torch.testing.assert_close(torch.tensor(one.views[index].maps[name]),
                                       torch.tensor(all_at_once.views[index].maps[name]), rtol=1e-5, atol=1e-7)
            assert (cut.views[index].maps[name] == one.views[index].maps[name][:1]).all()  # the first token's row
        assert cut.views[index].tokens == one.views[index].tokens[:1] and cut.views[index].total == 2


def test_models_other_than_causal_lms_log_no_per_completion_token_view(tmp_path, tokenizer):
    module = make_text_module_class(pl)(tokenizer)
    train, val = text_loaders()
    monitor = ExplanationMonitor(explainers=[GradSAM()], metrics=[DeletionAUC(steps=2)], num_samples=4,
                                 num_heatmaps=2, completion_token_samples=2, files_dir=str(tmp_path / "xai"))
    trainer = quiet_trainer(pl, tmp_path, monitor, max_epochs=1)
    trainer.fit(module, train, val)
    record = records(tmp_path / "xai")[-1]
    assert record["samples"] and not any("completion_tokens" in sample for sample in record["samples"])
    assert not list((tmp_path / "xai").rglob(VIEW))
    assert not any(VIEW in key for key in monitor.history[0])


@pytest.mark.parametrize(("argument", "value"), [("completion_token_samples", -1), ("completion_token_limit", 0),
                                                 ("completion_token_samples", True), ("completion_token_limit", 2.0)])
def test_the_options_are_checked_at_construction(argument, value):
    with pytest.raises(ValueError, match=argument):
        ExplanationMonitor(**{argument: value})


def test_zero_samples_disables_the_per_completion_token_view(tmp_path):
    monitor = ExplanationMonitor(explainers=[GradientXInput()], metrics=[DeletionAUC(steps=2)], num_samples=6,
                                 num_heatmaps=2, completion_token_samples=0, files_dir=str(tmp_path / "xai"))
    monitored_fit(tmp_path, monitor)
    assert not any("completion_tokens" in sample for sample in records(tmp_path / "xai")[-1]["samples"])
    assert not list((tmp_path / "xai").rglob(VIEW))


# ------------------------------------------------------------------------------------------------ bad input


def test_a_probe_set_without_any_completion_token_is_skipped_and_training_goes_on(tmp_path):
    """Every validation sample has every label -100: warned with what to do, all counted, nothing drawn."""
    monitor = ExplanationMonitor(explainers=[GradientXInput(), RawAttention()], metrics=[DeletionAUC(steps=2)],
                                 num_samples=6, num_heatmaps=2, files_dir=str(tmp_path / "xai"))
    empty = torch.utils.data.DataLoader(retrieval_rows(6, 1, empty=tuple(range(6))), batch_size=3,
                                        collate_fn=lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitored_fit(tmp_path, monitor, val=empty, epochs=2)
    messages = [str(w.message) for w in caught]
    assert any("6 probe sample(s)" in m and "no completion tokens" in m and "What to do" in m for m in messages)
    assert sorted(monitor.history) == [0, 1]  # training and validation went on
    for epoch in (0, 1):
        logged = monitor.history[epoch]
        assert logged["xai/gradient_x_input/skipped_samples"] == logged["xai/raw_attention/skipped_samples"] == 6.0
        assert not any(math.isfinite(value) for key, value in logged.items() if key.endswith("deletion_auc"))
    assert all(record["samples"] == [] for record in records(tmp_path / "xai"))  # no heatmap of nothing


def test_a_completion_longer_than_the_cap_is_cut_warned_and_counted(tmp_path):
    monitor = ExplanationMonitor(explainers=[GradientXInput(), Random()], metrics=[DeletionAUC(steps=2)],
                                 num_samples=6, num_heatmaps=2, completion_token_samples=2, completion_token_limit=1,
                                 files_dir=str(tmp_path / "xai"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitored_fit(tmp_path, monitor)
    messages = [str(w.message) for w in caught if "completion_token_limit=1" in str(w.message)]
    assert len(messages) == 1 and "What to do" in messages[0], messages
    assert monitor.history[0]["xai/gradient_x_input/completion_tokens_truncated"] == 2.0
    assert "xai/random/completion_tokens_truncated" not in monitor.history[0]  # Random has no such view
    assert math.isfinite(monitor.history[0]["xai/gradient_x_input/deletion_auc"])  # scores use the whole completion
    for sample in records(tmp_path / "xai")[-1]["samples"]:
        view = sample["completion_tokens"]
        assert view["total"] == 2 and len(view["tokens"]) == 1 and len(view["maps"]["gradient_x_input"]) == 1


def pad_less_tokenizer(eos: bool):
    """The decoder tokenizer without its pad token (as Llama's), with or without its EOS token."""
    tokenizer = make_decoder_tokenizer()
    tokenizer.pad_token = None
    if not eos:
        tokenizer.eos_token = None
    assert tokenizer.pad_token_id is None
    return tokenizer


def ragged_loader():
    """Validation batches of two widths WITHOUT attention mask, as a collator may give them: the probe set pads."""
    rows = retrieval_rows(6, 1)
    for row in rows[3:]:  # the second batch: one prompt token more ("?" twice)
        for key, extra in (("input_ids", 4), ("labels", -100), ("rationale_mask", False)):
            row[key] = torch.cat([row[key][:1], torch.tensor([extra], dtype=row[key].dtype), row[key][1:]])

    def collate(rows):
        return {key: torch.stack([row[key] for row in rows]) for key in ("input_ids", "labels", "rationale_mask")}

    return torch.utils.data.DataLoader(rows, batch_size=3, collate_fn=collate)


class PadLessSFT(TinySFT):
    def __init__(self, eos: bool):
        super().__init__()
        self.tokenizer = pad_less_tokenizer(eos)

    def validation_step(self, batch, batch_idx):
        self.model(input_ids=batch["input_ids"], labels=batch["labels"])


@pytest.mark.parametrize("eos", [True, False])
def test_a_tokenizer_without_pad_token_and_ragged_batches_without_attention_mask(tmp_path, eos):
    """The probe set pads with the tokenizer's EOS (else id 0, here an ordinary token) and marks the padding in the
    attention mask (added: the batches have none), so no padding reaches a map: each sample's maps equal its maps
    explained alone."""
    monitor = ExplanationMonitor(explainers=[GradientXInput()], metrics=[DeletionAUC(steps=2)], num_samples=6,
                                 num_heatmaps=6, completion_token_samples=6, files_dir=str(tmp_path / "xai"),
                                 on_error="raise")
    module, _ = monitored_fit(tmp_path, monitor, val=ragged_loader(), module=PadLessSFT(eos))
    assert monitor._modality.pad_id == (EOS if eos else 0)
    assert (PAD in monitor._modality.special_ids.tolist()) is False
    assert math.isfinite(monitor.history[0]["xai/gradient_x_input/deletion_auc"])
    assert not any("skipped" in key for key in monitor.history[0])
    samples = records(tmp_path / "xai")[-1]["samples"]
    assert len(samples) == 6
    for sample, row in zip(samples, [batch for loader in [ragged_loader()] for b in loader for batch in
                                      ({k: v[i] for k, v in b.items()} for i in range(3))], strict=True):
        assert len(sample["tokens"]) == int((row["labels"] == -100).sum()) - 1  # the prompt without <s>: no padding
        alone = explain_completion_tokens(module.model, {"input_ids": row["input_ids"][None],
                                                         "labels": row["labels"][None]},
                                          [GradientXInput()], modality=modality())["gradient_x_input"]
        content = alone.content_mask[0]
        torch.testing.assert_close(torch.tensor(sample["completion_tokens"]["maps"]["gradient_x_input"]),
                                   alone.relevance[0, :2][:, content], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ failures


class FailsPerToken(GradientXInput):
    """Gradient x input that fails in the per-completion-token passes only (rows with one completion token)."""

    name = "fails_per_token"

    def explain(self, forward):
        if bool(((forward.inputs["labels"][:, 1:] != -100).sum(dim=1) == 1).all()):
            raise RuntimeError("cannot explain one token")
        return super().explain(forward)


def test_a_method_failing_on_the_per_token_passes_is_warned_counted_and_training_goes_on(tmp_path):
    monitor = ExplanationMonitor(explainers=[GradientXInput(), FailsPerToken()], metrics=[DeletionAUC(steps=2)],
                                 num_samples=6, num_heatmaps=2, files_dir=str(tmp_path / "xai"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitored_fit(tmp_path, monitor, epochs=2)
    messages = [str(w.message) for w in caught if "cannot explain one token" in str(w.message)]
    assert len(messages) == 1 and "per-completion-token maps of 'fails_per_token'" in messages[0], messages
    for epoch in (0, 1):
        logged = monitor.history[epoch]
        assert logged["xai/fails_per_token/completion_tokens_skipped"] == 2.0  # both heatmap samples
        assert "xai/gradient_x_input/completion_tokens_skipped" not in logged
        assert math.isfinite(logged["xai/fails_per_token/deletion_auc"])  # its completion maps are scored
    for sample in records(tmp_path / "xai")[-1]["samples"]:
        assert sorted(sample["completion_tokens"]["maps"]) == ["gradient_x_input"]
    strict = ExplanationMonitor(explainers=[FailsPerToken()], metrics=[DeletionAUC(steps=2)], num_samples=6,
                                write_files=False, on_error="raise")
    with pytest.raises(Exception, match="cannot explain one token"):
        monitored_fit(tmp_path / "strict", strict)


class OutOfMemoryAbove(GradientXInput):
    """Gradient x input that runs out of memory on passes of more than ``rows`` rows."""

    def __init__(self, rows: int):
        super().__init__()
        self.rows = rows

    def explain(self, forward):
        if forward.inputs["input_ids"].shape[0] > self.rows:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().explain(forward)


def test_out_of_memory_halves_the_per_token_passes_and_at_one_row_is_counted():
    scorer = CompletionScorer(tiny_lm())
    rows = retrieval_rows(3, 1)
    probe = probe_of(rows)
    samples = [ProbeSample(i, None, None, None, "completion") for i in range(3)]
    kwargs = dict(family=resolve_family(scorer), modality=modality())
    reference = explain_completion_token_samples(scorer, probe, samples, [GradientXInput()], **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        halved = explain_completion_token_samples(scorer, probe, samples, [OutOfMemoryAbove(1)], **kwargs)
    assert any("out of memory" in str(w.message) and "retrying with passes of" in str(w.message) for w in caught)
    for index in range(3):
        assert (halved.views[index].maps["gradient_x_input"] == reference.views[index].maps["gradient_x_input"]).all()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        lost = explain_completion_token_samples(scorer, probe, samples, [OutOfMemoryAbove(0)], **kwargs)
    assert lost.views == {} and lost.skipped == {"gradient_x_input": 3}


def test_per_completion_token_passes_are_sized_by_what_the_model_s_pass_keeps(monkeypatch):
    """Gradient x input streams on an sdpa LM (rows x tokens), Grad-SAM records T x T maps (rows x tokens^2)."""
    import lightning_xai.completion_tokens as completion_tokens

    lm = tiny_lm()
    lm.set_attn_implementation("sdpa")
    scorer = CompletionScorer(lm)
    family = resolve_family(scorer)
    rows = retrieval_rows(2, 1)
    probe = probe_of(rows)
    samples = [ProbeSample(i, None, None, None, "completion") for i in (0, 1)]
    width = int(probe.inputs["attention_mask"].sum(1).max())
    sizes = []
    explain = completion_tokens.explain_completion_tokens

    def recorded(*args, rows_per_pass, **kwargs):
        sizes.append(rows_per_pass)
        return explain(*args, rows_per_pass=rows_per_pass, **kwargs)

    monkeypatch.setattr(completion_tokens, "explain_completion_tokens", recorded)
    budget = 4 * width  # four rows of tokens, fewer than one row of tokens^2 (width > 4)
    for methods in ([GradientXInput()], [GradSAM()]):
        explain_completion_token_samples(scorer, probe, samples, methods, family=family, modality=modality(),
                                         policy=None, batch_size=32, token_budget=budget)
    assert sizes == [4, 1]
