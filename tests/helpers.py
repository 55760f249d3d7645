"""Tiny random models, a tiny tokenizer and tiny Lightning modules shared by the tests."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from transformers import BertTokenizerFast

from lightning_xai.examples import ARCHITECTURES, tiny_classifier

TEXT_FAMILIES = ("bert", "roberta", "distilbert")
VISION_FAMILIES = ("vit", "deit", "deit_with_teacher", "beit", "dinov2", "data2vec_vision", "swin", "clip",
                   "clip_zero_shot")
#: More text encoders (their own families, or RoBERTa's for XLM-R).
MORE_ENCODERS = ("electra", "xlm_roberta", "albert", "modernbert", "deberta_v2", "mpnet")
#: Decoder LLM architectures (tiny, random), all pooled at the last real token.
DECODERS = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3", "gpt2")
#: Causal LMs explained for their completion (CompletionScorer); their inputs carry SFT labels.
CAUSAL_LMS = ("llama_lm",)
#: Models of no family (the generic fallback).
GENERIC = ("opt",)
#: The families most tests run on (one per architecture).
FAMILIES = TEXT_FAMILIES + VISION_FAMILIES[:2]
#: Every architecture make_model builds -> its registered model family (the registry loops run on all of them).
assert set(ARCHITECTURES) == set(TEXT_FAMILIES + VISION_FAMILIES + MORE_ENCODERS + DECODERS + CAUSAL_LMS + GENERIC)
REGISTERED_FAMILIES = tuple(ARCHITECTURES)
WORDS = ["good", "bad", "movie", "plot", "great", "awful", "the", "a", "was", "very", "not", "fun", "dull", "ok"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + WORDS + [f"##{w}" for w in ("s", "ing", "ed")]
IMAGE_SIZE, PATCH = 16, 4


def make_tokenizer(folder: Path | None = None) -> BertTokenizerFast:
    """A real WordPiece tokenizer over VOCAB (transformers v5 builds it from the vocab dict)."""
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True)


def make_model(family: str, num_labels: int = 2, seed: int = 0, layers: int = 2) -> torch.nn.Module:
    """A tiny random classifier of ``family`` (an architecture of ARCHITECTURES) over VOCAB, in eval mode."""
    torch.manual_seed(seed)  # drawn from the global stream, which the tests' later draws continue
    return tiny_classifier(family, num_labels=num_labels, layers=layers, seed=None, vocab_size=len(VOCAB))


def left_padded(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with their padding moved to the left (real tokens right-aligned)."""
    mask = inputs["attention_mask"].bool()
    order = torch.argsort(mask.long(), dim=1, stable=True)  # padding (0) first, then the tokens in order
    return {key: value.gather(1, order) for key, value in inputs.items()}


def make_text_inputs(batch: int = 4, seq: int = 9, seed: int = 0, pad_last: int = 3) -> dict[str, torch.Tensor]:
    """[CLS] w w ... [SEP] [PAD]...; rows get decreasing lengths so padding is exercised."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIALS), len(VOCAB), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(batch):
        length = seq - (row % (pad_last + 1))
        ids[row, 0] = 2
        ids[row, length - 1] = 3
        ids[row, length:] = 0
        mask[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def make_image_inputs(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)}


def make_decoder_tokenizer():
    """A real WordLevel tokenizer over VOCAB as decoders have them: <s>/</s>/<unk>/<pad> but NO mask token."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {("<pad>" if w == "[PAD]" else "<unk>" if w == "[UNK]" else "<s>" if w == "[CLS]" else "</s>" if
              w == "[SEP]" else w): i for i, w in enumerate(VOCAB) if w != "[MASK]"}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def make_inputs(family: str, batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    if family in CAUSAL_LMS:
        return with_completion(make_text_inputs(batch, seed=seed))
    return make_image_inputs(batch, seed) if family in VISION_FAMILIES else make_text_inputs(batch, seed=seed)


def with_completion(inputs: dict[str, torch.Tensor], length: int = 2) -> dict[str, torch.Tensor]:
    """SFT labels for text inputs: the last ``length`` real tokens of each row are the completion, -100 elsewhere."""
    mask = inputs["attention_mask"].bool()
    from_end = mask.long().flip(1).cumsum(1).flip(1)  # real tokens from this one to the end of the row
    completion = mask & (from_end <= length)
    return {**inputs, "labels": inputs["input_ids"].masked_fill(~completion, -100)}


def text_modality():
    from lightning_xai.modalities import TextModality

    return TextModality(special_ids=[0, 2, 3, 4, 1], pad_id=0, replacement_id=4)


def modality_for(family: str):
    from lightning_xai.families.causal_lm import CompletionTextModality
    from lightning_xai.modalities import VisionModality

    if family in CAUSAL_LMS:  # the completion tokens are special: the maps rank the prompt
        return CompletionTextModality(special_ids=[0, 2, 3, 4, 1], pad_id=0, replacement_id=4)
    return VisionModality(PATCH) if family in VISION_FAMILIES else text_modality()


def model_snapshot(model: torch.nn.Module) -> dict:
    """Everything an explanation pass must leave untouched."""
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "attn": model.config._attn_implementation,
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
        "forward": {name: m.forward for name, m in model.named_modules()},
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert before["attn"] == after["attn"]
    assert before["modes"] == after["modes"]
    assert before["hooks"] == after["hooks"]
    for name, fwd in before["forward"].items():
        assert after["forward"][name] == fwd, f"forward of {name!r} was replaced"
    for k, v in before["params"].items():
        assert torch.equal(v, after["params"][k]), k
    for k, g in before["grads"].items():
        other = after["grads"][k]
        assert (g is None and other is None) or (g is not None and other is not None and torch.equal(g, other)), k


# ----------------------------------------------------------------------------------------- Lightning modules


def lightning_package(name: str):
    """`lightning.pytorch` or `pytorch_lightning` as a module."""
    return importlib.import_module(name)


def quiet_trainer(pl, tmp_path: Path, monitor=None, *, max_epochs: int = 2, logger=False, **options):
    """The tests' CPU Trainer: no progress bar, summary, checkpoint or sanity validation; ``monitor`` its only
    callback (none when None); ``options`` go to ``pl.Trainer`` (``precision=...``)."""
    return pl.Trainer(
        max_epochs=max_epochs,
        logger=logger,
        callbacks=[monitor] if monitor else [],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=0,
        **options,
    )


def make_text_module_class(pl):
    class TinyTextModule(pl.LightningModule):
        """A tiny BERT classifier; the label is 1 iff the word 'good' occurs."""

        def __init__(self, tokenizer, family: str = "bert", lr: float = 5e-3, seed: int = 0):
            super().__init__()
            self.model = make_model(family, seed=seed)
            self.model.train()
            self.tokenizer = tokenizer
            self.lr = lr

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

        def training_step(self, batch, batch_idx):
            logits = self(batch["input_ids"], batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            logits = self(batch["input_ids"], batch["attention_mask"])
            self.log("val_loss", torch.nn.functional.cross_entropy(logits, batch["labels"]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    return TinyTextModule


def make_vision_module_class(pl):
    class TinyVisionModule(pl.LightningModule):
        def __init__(self, family: str = "vit", lr: float = 5e-3, seed: int = 0):
            super().__init__()
            self.model = make_model(family, seed=seed)
            self.model.train()
            self.lr = lr

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.model(pixel_values=x).logits, y)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.model(pixel_values=x).logits, y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    return TinyVisionModule


def text_dataset(n: int = 24, seq: int = 10, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    good = VOCAB.index("good")
    for i in range(n):
        length = int(torch.randint(4, seq + 1, (1,), generator=g))
        ids = torch.randint(VOCAB.index("bad"), len(VOCAB), (length,), generator=g)
        label = i % 2
        if label:
            ids[int(torch.randint(1, length - 1, (1,), generator=g))] = good
        ids[0], ids[-1] = 2, 3
        rows.append({"input_ids": ids, "labels": torch.tensor(label)})
    return rows


def collate_text(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = r["input_ids"]
        mask[i, : len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([r["labels"] for r in rows])}


def text_loaders(batch_size: int = 8, n_train: int = 32, n_val: int = 16):
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(0)
    train = DataLoader(text_dataset(n_train, seed=1), batch_size=batch_size, shuffle=True, collate_fn=collate_text,
                       generator=g)
    val = DataLoader(text_dataset(n_val, seed=2), batch_size=batch_size, collate_fn=collate_text)
    return train, val


def image_loaders(batch_size: int = 8, n_train: int = 32, n_val: int = 16):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    y = (x[:, 0, :8, :8].mean(dim=(1, 2)) > 0).long()
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size)
    return train, val


def run_record(root: Path) -> Path:
    """The one explanation record (explanations.jsonl) a run without a versioned logger wrote below ``root``."""
    (record,) = Path(root).rglob("explanations.jsonl")
    return record
