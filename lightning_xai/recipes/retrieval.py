"""Key-value retrieval: a tiny causal LM fine-tuned on a synthetic task whose rationale is known.

Each example lists ``num_pairs`` key-value pairs, then asks for one key; the completion is its value::

    <s> k3=v5 k1=v2 k5=v0 k4=v4 ? k1   ->   v2 </s>

Keys are distinct within an example, values are drawn with replacement, the queried pair uniformly. The
ground-truth rationale (batch key ``rationale_mask``) is the queried pair in the prompt (``k1=v2``): the only
token that says what the value is. The query key after ``?`` says which pair to read, not the value, and is not
part of the rationale. Generation is deterministic (a seeded NumPy stream per split).

By default (``fused=True``) each pair is ONE token ``k1=v2``, so that one attention layer can find the pair from
the query key: a 2-layer model learns the task in a few epochs on a CPU. ``fused=False`` writes each pair as two
tokens ``k1 v2`` (rationale: both); retrieval then needs an induction-like composition of two layers, which the
tiny default model did not learn here (four tries, 2 layers of width 64, up to 1,500 steps, learning rates 2e-3 to
1e-2: the validation completion accuracy stayed at or below 0.47).

:class:`RetrievalDataModule` builds the batches in the standard SFT format (``labels == -100`` on the prompt) with
a word-level tokenizer over the task's vocabulary; :class:`CausalLMFineTuner` trains a Llama-style decoder built
from a config (no download) with the causal-LM loss and logs the teacher-forced completion accuracy. The recipe is
``recipes/tiny_lm_retrieval.yaml``.

Example:
    >>> example = generate_retrieval_examples(1, seed=0, num_pairs=3)[0]
    >>> " ".join(example.prompt), " ".join(example.completion)
    ('<s> k5=v5 k2=v2 k1=v4 ? k1', 'v4 </s>')
    >>> [token for token, keep in zip(example.prompt, example.rationale) if keep]
    ['k1=v4']
    >>> two = generate_retrieval_examples(1, seed=0, num_pairs=3, fused=False)[0]
    >>> " ".join(two.prompt), [token for token, keep in zip(two.prompt, two.rationale) if keep]
    ('<s> k5 v5 k2 v2 k1 v4 ? k1', ['k1', 'v4'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_xai.families.causal_lm import IGNORE_INDEX, completion_rows

__all__ = [
    "CausalLMFineTuner",
    "RetrievalDataModule",
    "RetrievalExample",
    "completion_accuracy",
    "generate_retrieval_examples",
    "retrieval_tokenizer",
    "retrieval_vocabulary",
]

#: Special tokens (ids 0..3), then the query marker.
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
QUERY = "?"


def retrieval_vocabulary(num_keys: int, num_values: int) -> list[str]:
    """``<pad> <unk> <s> </s> ? k0 .. v0 .. k0=v0 ..`` in id order (the last: one token per key-value pair).

    Example:
        >>> retrieval_vocabulary(2, 2)
        ['<pad>', '<unk>', '<s>', '</s>', '?', 'k0', 'k1', 'v0', 'v1', 'k0=v0', 'k0=v1', 'k1=v0', 'k1=v1']
    """
    keys = [f"k{i}" for i in range(num_keys)]
    values = [f"v{i}" for i in range(num_values)]
    return [*SPECIALS, QUERY, *keys, *values, *(f"{key}={value}" for key in keys for value in values)]


def retrieval_tokenizer(num_keys: int, num_values: int) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over :func:`retrieval_vocabulary` (pad 0, BOS 2, EOS 3, no mask).

    Example:
        >>> retrieval_tokenizer(2, 3)("<s> k1 v2 ? k1")["input_ids"]
        [2, 6, 9, 4, 6]
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate(retrieval_vocabulary(num_keys, num_values))}
    backend = Tokenizer(WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )



def completion_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of the samples with a completion whose every completion token is the arg-max (teacher forced).

    Row ``t`` of ``logits`` predicts ``labels[:, t + 1]`` (HF's shift); samples without completion tokens do not count.

    Example:
        >>> labels = torch.tensor([[-100, 3, 4], [-100, 3, 4]])
        >>> logits = torch.nn.functional.one_hot(torch.tensor([[3, 4, 0], [3, 1, 0]]), 5).float()
        >>> completion_accuracy(logits, labels).item()
        0.5
    """
    rows = completion_rows(labels)
    targets = torch.zeros_like(labels)
    targets[:, :-1] = labels[:, 1:]
    wrong = (logits.argmax(dim=-1) != targets) & rows
    scored = rows.any(dim=1)
    return (~wrong.any(dim=1) & scored).float().sum() / scored.float().sum().clamp_min(1)

@dataclass(frozen=True)
class RetrievalExample:
    """One example: prompt and completion tokens, and the rationale over the prompt (the queried pair)."""

    prompt: tuple[str, ...]
    completion: tuple[str, ...]
    rationale: tuple[bool, ...]


def generate_retrieval_examples(
    n: int, seed: int, num_pairs: int = 4, num_keys: int = 6, num_values: int = 6, fused: bool = True
) -> list[RetrievalExample]:
    """``n`` examples drawn from a NumPy stream seeded with ``seed`` (the same every time).

    ``fused``: each pair is one token ``k1=v2`` (its rationale: that token) instead of two tokens ``k1 v2``.
    """
    if not 1 <= num_pairs <= num_keys:
        raise ValueError(f"num_pairs must be in [1, num_keys={num_keys}], got {num_pairs}")
    rng = np.random.RandomState(seed)
    examples = []
    for _ in range(n):
        keys = rng.choice(num_keys, size=num_pairs, replace=False)
        values = rng.randint(0, num_values, size=num_pairs)
        query = int(rng.randint(0, num_pairs))
        if fused:
            pairs = [f"k{key}=v{value}" for key, value in zip(keys, values, strict=True)]
            span = (1 + query, 1 + query)
        else:
            pairs = [token for key, value in zip(keys, values, strict=True) for token in (f"k{key}", f"v{value}")]
            span = (1 + 2 * query, 2 + 2 * query)
        prompt = ("<s>", *pairs, QUERY, f"k{keys[query]}")
        rationale = tuple(span[0] <= i <= span[1] for i in range(len(prompt)))
        examples.append(RetrievalExample(prompt, (f"v{values[query]}", "</s>"), rationale))
    return examples


class RetrievalDataModule(LightningDataModule):
    """SFT batches of the retrieval task (``input_ids``, ``attention_mask``, ``labels``, ``rationale_mask``).

    ``labels`` are -100 on the prompt; every example has the same length (no padding).

    Args:
        num_pairs: Key-value pairs per prompt.
        num_keys: Distinct keys (``num_pairs <= num_keys``).
        num_values: Distinct values.
        train_size: Training examples (drawn with ``seed``).
        val_size: Validation examples (drawn with ``seed + 1``).
        batch_size: Batch size of both loaders.
        seed: Seed of the generator and of the training shuffle.
        fused: One token per pair (``k1=v2``, the default) or two (``k1 v2``); see the module docstring.

    Attributes:
        tokenizer: The task's word-level tokenizer (the monitor reads it).
    """

    def __init__(
        self,
        num_pairs: int = 4,
        num_keys: int = 6,
        num_values: int = 6,
        train_size: int = 1024,
        val_size: int = 64,
        batch_size: int = 32,
        seed: int = 0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if min(train_size, val_size, batch_size) < 1:
            raise ValueError("train_size, val_size and batch_size must be >= 1")
        self.num_pairs, self.num_keys, self.num_values = num_pairs, num_keys, num_values
        self.train_size, self.val_size, self.batch_size, self.seed = train_size, val_size, batch_size, seed
        self.fused = fused
        self.tokenizer = retrieval_tokenizer(num_keys, num_values)
        self._splits: dict[str, list[dict[str, Tensor]]] = {}

    @property
    def vocab_size(self) -> int:
        """Tokens in the task's vocabulary."""
        return len(retrieval_vocabulary(self.num_keys, self.num_values))

    def _encode(self, example: RetrievalExample) -> dict[str, Tensor]:
        ids = torch.tensor(self.tokenizer.convert_tokens_to_ids([*example.prompt, *example.completion]))
        labels = ids.clone()
        labels[: len(example.prompt)] = IGNORE_INDEX
        rationale = torch.zeros_like(ids, dtype=torch.bool)
        rationale[: len(example.prompt)] = torch.tensor(example.rationale)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "rationale_mask": rationale}

    def setup(self, stage: str | None = None) -> None:
        """Generate and encode both splits (once)."""
        if self._splits:
            return
        for split, size, seed in (("train", self.train_size, self.seed), ("val", self.val_size, self.seed + 1)):
            examples = generate_retrieval_examples(
                size, seed, self.num_pairs, self.num_keys, self.num_values, self.fused
            )
            self._splits[split] = [self._encode(example) for example in examples]

    @staticmethod
    def collate(rows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Stack rows of one length."""
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}

    def train_dataloader(self) -> DataLoader:
        """Shuffled with a generator seeded with ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._splits["train"],
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=self.collate,
        )

    def val_dataloader(self) -> DataLoader:
        """In order (the monitor's probe set is its first samples)."""
        return DataLoader(self._splits["val"], batch_size=self.batch_size, collate_fn=self.collate)


class CausalLMFineTuner(LightningModule):
    """A Llama-style decoder built from a config (random init, no download), fine-tuned with the causal-LM loss.

    Batches are SFT batches (``input_ids``, ``attention_mask``, ``labels`` with -100 on the prompt); other keys are
    not passed to the model. Logs ``train_loss``, ``val_loss`` and ``val_completion_accuracy``: the fraction of
    validation samples whose every completion token is the arg-max of the teacher-forced logits.

    Args:
        vocab_size: Size of the token vocabulary (at least the data module's tokenizer's).
        hidden_size: Model width.
        num_layers: Decoder layers.
        num_heads: Attention heads (``num_key_value_heads`` = half of them: grouped-query attention).
        intermediate_size: Width of the gated MLP.
        learning_rate: AdamW learning rate (constant).
        weight_decay: AdamW weight decay.
        seed: Seed of the weight initialisation (a private stream: the global RNG is left as it was).

    Attributes:
        model: The ``LlamaForCausalLM`` (what the explanation monitor finds and explains).
    """

    def __init__(
        self,
        vocab_size: int = 53,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        intermediate_size: int = 128,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from transformers import LlamaConfig, LlamaForCausalLM  # deferred: heavy import

        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            intermediate_size=intermediate_size,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            tie_word_embeddings=False,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = LlamaForCausalLM(config)
        self.model.train()

    def setup(self, stage: str) -> None:
        """Refuse a data module whose tokenizer has more tokens than the model's vocabulary."""
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is not None and len(tokenizer) > self.hparams.vocab_size:
            raise ValueError(
                f"The data's tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                f"{self.hparams.vocab_size}: set model.init_args.vocab_size >= {len(tokenizer)}."
            )

    def _forward(self, batch: dict[str, Tensor]) -> Any:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Causal-LM loss on the completion tokens."""
        loss = self._forward(batch).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss and teacher-forced completion accuracy."""
        out = self._forward(batch)
        self.log("val_loss", out.loss, prog_bar=True)
        self.log("val_completion_accuracy", completion_accuracy(out.logits, batch["labels"]), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW at a constant learning rate."""
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
