r"""LoRA supervised fine-tuning of a hub causal LM on an instruction data set, with the explanation monitor on.

:class:`LoRASFTModule` loads any ``*ForCausalLM`` with ``from_pretrained`` and wraps it with PEFT LoRA adapters
(``pip install lightning-xai[peft]``); only the adapters train. The monitor explains the base model with the
adapters active (:mod:`lightning_xai.families.peft_models`). :class:`InstructionDataModule` turns instruction rows
(``instruction`` / optional ``input`` / ``output`` columns, as in Alpaca-style data sets) into standard SFT batches:
the prompt (through the tokenizer's chat template when it has one) with labels ``-100``, the response and the EOS
token as the completion. The recipe is ``recipes/lora_sft.yaml`` (needs a network and a GPU to run for real).

Example:
    >>> rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue."}]
    >>> prompt_text(rows[0], "instruction", "input", tokenizer=None)
    '### Instruction:\nName a colour.\n\n### Response:\n'
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_xai.families.causal_lm import IGNORE_INDEX
from lightning_xai.recipes._optim import SCHEDULES, adamw_with_schedule
from lightning_xai.recipes.retrieval import completion_accuracy

__all__ = ["InstructionDataModule", "LoRASFTModule", "encode_sft_example", "prompt_text"]

#: Prompt layout for tokenizers without a chat template (the Alpaca layout).
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
PLAIN_TEMPLATE_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
#: Model inputs of an SFT batch (other keys are not passed to the model).
MODEL_KEYS = ("input_ids", "attention_mask", "labels")


def prompt_text(row: dict[str, Any], instruction_column: str, input_column: str | None, tokenizer: Any) -> str:
    """The prompt of one row: the tokenizer's chat template (one user turn, generation prompt) or the plain layout.

    Args:
        row: one data set row.
        instruction_column: the column holding the instruction.
        input_column: an optional column holding extra input (appended to the instruction when non-empty).
        tokenizer: the model's tokenizer; ``None`` or one without ``chat_template`` uses :data:`PLAIN_TEMPLATE`.
    """
    instruction = str(row[instruction_column]).strip()
    extra = str(row.get(input_column) or "").strip() if input_column else ""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "user", "content": content}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    if extra:
        return PLAIN_TEMPLATE_WITH_INPUT.format(instruction=instruction, input=extra)
    return PLAIN_TEMPLATE.format(instruction=instruction)


def encode_sft_example(
    prompt: str, response: str, tokenizer: Any, max_length: int, add_special_tokens: bool = True
) -> dict[str, Tensor] | None:
    """``input_ids``, ``attention_mask``, ``labels`` (-100 on the prompt) of one example, or None if nothing is left.

    The completion is the response's tokens plus EOS. Longer than ``max_length``: the completion keeps at most half
    of ``max_length`` (cut at its end), the prompt the rest (cut at its START, keeping the text nearest the answer).

    Args:
        prompt: the prompt text.
        response: the response text.
        tokenizer: the model's tokenizer.
        max_length: tokens kept.
        add_special_tokens: let the tokenizer add its special tokens (BOS) to the prompt; False for a prompt from a
            chat template, which writes them itself.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    completion = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        completion.append(int(tokenizer.eos_token_id))
    if len(prompt_ids) + len(completion) > max_length:
        completion = completion[: max(1, max_length // 2)] if len(completion) > max_length // 2 else completion
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(completion)) :]
    if not prompt_ids or not completion:
        return None
    ids = torch.tensor(prompt_ids + completion)
    labels = ids.clone()
    labels[: len(prompt_ids)] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


class InstructionDataModule(LightningDataModule):
    """SFT batches from instruction data: a hub data set (needs ``datasets`` and a network) or local files.

    Rows hold an instruction, an optional input and the response. Validation is ``val_split`` when the data set has
    it, else the last ``val_size`` rows of a seeded shuffle of the training split (the training rows exclude them).
    Batches are right-padded: ``input_ids`` with the pad token, ``attention_mask`` 0 and ``labels`` -100 there. A
    tokenizer without a pad token pads with its EOS token (the attention mask and labels hide the padding).

    Args:
        model_name_or_path: The tokenizer (hub name or local folder; use the model's).
        dataset_name: A ``datasets.load_dataset`` name (e.g. ``"yahma/alpaca-cleaned"``); ignored when
            ``train_path`` is given.
        dataset_config: Its configuration name.
        train_path: A local ``.jsonl``/``.json``/``.csv``/``.parquet`` file of training rows (offline).
        val_path: A local file of validation rows (else carved out of the training rows).
        instruction_column: Column of the instruction.
        input_column: Column of the optional extra input (``None``: none).
        response_column: Column of the response (the completion).
        train_split: Training split of the hub data set.
        val_split: Validation split of the hub data set, if it has one.
        max_train_samples: Keep at most this many training rows (after the shuffle).
        val_size: Validation rows (carved out, or the first ones of ``val_split``/``val_path``).
        max_length: Tokens per example (see :func:`encode_sft_example`).
        batch_size: Batch size of both loaders.
        seed: Seed of the shuffle and of the training loader.
        num_workers: DataLoader workers.

    Attributes:
        tokenizer: The tokenizer (the monitor reads it to render tokens).
    """

    def __init__(
        self,
        model_name_or_path: str,
        dataset_name: str | None = "yahma/alpaca-cleaned",
        dataset_config: str | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        instruction_column: str = "instruction",
        input_column: str | None = "input",
        response_column: str = "output",
        train_split: str = "train",
        val_split: str | None = None,
        max_train_samples: int | None = None,
        val_size: int = 64,
        max_length: int = 512,
        batch_size: int = 8,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if min(val_size, max_length, batch_size) < 1:
            raise ValueError("val_size, max_length and batch_size must be >= 1")
        if dataset_name is None and train_path is None:
            raise ValueError("give dataset_name (a hub data set) or train_path (a local file)")
        self.save_hyperparameters()
        from transformers import AutoTokenizer  # deferred: heavy import

        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"the tokenizer of {model_name_or_path} has neither a pad nor an EOS token")
            warnings.warn(
                f"The tokenizer of {model_name_or_path} has no pad token: padding with its EOS token "
                f"{self.tokenizer.eos_token!r} (padding is hidden by the attention mask and labels -100).",
                stacklevel=2,
            )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._splits: dict[str, list[dict[str, Tensor]]] = {}

    def _rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(training rows, validation rows), before encoding."""
        from lightning_xai.recipes.data import read_records
        from lightning_xai.recipes.data.splits import load_hf_dataset

        hp = self.hparams
        val: list[dict[str, Any]] | None = None
        if hp.train_path is not None:
            train = read_records(hp.train_path)
            val = read_records(hp.val_path) if hp.val_path is not None else None
        else:
            data = load_hf_dataset(hp.dataset_name, hp.dataset_config)
            train = list(data[hp.train_split])
            val = list(data[hp.val_split]) if hp.val_split is not None else None
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(hp.seed)).tolist()
        train = [train[i] for i in order]
        if val is None:
            if len(train) <= hp.val_size:
                raise ValueError(f"{len(train)} rows cannot give {hp.val_size} validation rows and training rows")
            train, val = train[: -hp.val_size], train[-hp.val_size :]
        if hp.max_train_samples is not None:
            train = train[: hp.max_train_samples]
        return train, val[: hp.val_size]

    def _encode(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Tensor]]:
        hp = self.hparams
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        encoded = []
        for row in rows:
            prompt = prompt_text(row, hp.instruction_column, hp.input_column, self.tokenizer)
            example = encode_sft_example(
                prompt, str(row[hp.response_column]), self.tokenizer, hp.max_length, add_special_tokens=not chat
            )
            if example is not None:
                encoded.append(example)
        return encoded

    def setup(self, stage: str | None = None) -> None:
        """Load, split and tokenize (once)."""
        if self._splits:
            return
        train, val = self._rows()
        self._splits = {"train": self._encode(train), "val": self._encode(val)}

    def collate(self, rows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Right-pad to the longest row (pad id, attention mask 0, labels -100)."""
        width = max(row["input_ids"].shape[0] for row in rows)
        fill = {"input_ids": int(self.tokenizer.pad_token_id), "attention_mask": 0, "labels": IGNORE_INDEX}
        return {
            key: torch.stack([torch.nn.functional.pad(row[key], (0, width - row[key].shape[0]), value=value)
                              for row in rows])
            for key, value in fill.items()
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled with a generator seeded with ``seed``."""
        return DataLoader(
            self._splits["train"],
            batch_size=self.hparams.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.hparams.seed),
            collate_fn=self.collate,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """In order (the monitor's probe set is its first samples)."""
        return DataLoader(
            self._splits["val"],
            batch_size=self.hparams.batch_size,
            collate_fn=self.collate,
            num_workers=self.hparams.num_workers,
        )


class LoRASFTModule(LightningModule):
    """A hub causal LM with PEFT LoRA adapters, fine-tuned with the causal-LM loss on SFT batches.

    Only the adapters train (the base weights are frozen by PEFT). Logs ``train_loss``, ``val_loss`` and
    ``val_completion_accuracy`` (the fraction of validation samples whose every completion token is the arg-max of
    the teacher-forced logits).

    Args:
        model_name_or_path: ``AutoModelForCausalLM.from_pretrained`` source (hub name or local folder).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the adapters' input while training.
        target_modules: Modules that get adapters (``"all-linear"``: every linear layer but the output head).
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of the steps in linear warmup.
        schedule: ``"linear"``, ``"cosine"`` or ``"constant"`` after the warmup.
        dtype: Weights' dtype (``"bfloat16"``, ``"float16"``, ``"float32"``, or ``None``/``"auto"``: the
            checkpoint's).
        attn_implementation: ``"sdpa"`` or ``"eager"`` (explainers that need attention probabilities switch to
            eager for their own pass).
        gradient_checkpointing: Recompute activations in the backward (less memory).
        seed: Seed of the adapters' initialisation (a private stream: the global RNG is left as it was).

    Attributes:
        model: The ``PeftModel`` (the monitor explains its base model, adapters active).
    """

    def __init__(
        self,
        model_name_or_path: str,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        target_modules: list[str] | str = "all-linear",
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        schedule: str = "cosine",
        dtype: str | None = "bfloat16",
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.save_hyperparameters()
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise ImportError("LoRA fine-tuning needs PEFT: pip install 'lightning-xai[peft]'") from err
        from transformers import AutoModelForCausalLM  # deferred: heavy import

        kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
        if dtype not in (None, "auto"):
            kwargs["dtype"] = getattr(torch, dtype)
        base = AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)
        if gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=target_modules,
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = get_peft_model(base, config)
        # from_pretrained returns eval mode and Lightning (>= 2.5) no longer calls .train(): adapters' dropout on
        self.model.train()

    def _forward(self, batch: dict[str, Tensor]) -> Any:
        return self.model(**{key: batch[key] for key in MODEL_KEYS})

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Causal-LM loss on the completion tokens."""
        loss = self._forward(batch).loss
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss and teacher-forced completion accuracy."""
        out = self._forward(batch)
        size = batch["labels"].shape[0]
        self.log("val_loss", out.loss, prog_bar=True, batch_size=size)
        accuracy = completion_accuracy(out.logits, batch["labels"])
        self.log("val_completion_accuracy", accuracy, prog_bar=True, batch_size=size)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the adapters with warmup and decay (per step)."""
        hp = self.hparams
        return adamw_with_schedule(
            self.model,
            hp.learning_rate,
            hp.weight_decay,
            hp.warmup_ratio,
            self.trainer.estimated_stepping_batches,
            hp.schedule,
        )
