"""Text: word-piece tokens; special tokens from the tokenizer; removal = replacement by a token id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from lightning_xai.errors import LightningXAIError
from lightning_xai.modalities.base import Modality
from lightning_xai.types import ModelInputs

if TYPE_CHECKING:
    from lightning_xai.types import Explanation

#: How a removed text token is taken out of the input: replaced by ``replacement_id`` (``"replace"``) or by a named
#: token (``"mask"``, ``"unk"``, ``"pad"``); hidden through the attention mask (``"attention"``); deleted and the row
#: shifted left (``"delete"``); deleted, the remaining content decoded to text and re-tokenised (``"retokenize"``,
#: exactly what ferret does; needs the tokenizer); or its input embedding set to zero (``"zero_embedding"``, AttnLRP;
#: needs an :class:`~lightning_xai.metrics.EmbeddingForward`).
TextRemoval = Literal["replace", "mask", "unk", "pad", "attention", "delete", "retokenize", "zero_embedding"]
TEXT_REMOVALS = ("replace", "mask", "unk", "pad", "attention", "delete", "retokenize", "zero_embedding")

_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


class TextModality(Modality):
    """Token ids with an attention mask (right or left padding).

    Args:
        special_ids: ids never ranked or perturbed (``[CLS]``, ``[SEP]``, ``<s>``, ``</s>``, ``[PAD]`` ...).
        pad_id: id used to pad when collating batches of different widths.
        replacement_id: id that replaces a removed token (the tokenizer's mask token by default); None when the
            tokenizer has no such token (decoders): ``removal="replace"`` is then refused.
        tokenizer: optional HF tokenizer, used to turn ids into strings for heatmaps.
        removal: how :meth:`remove` takes tokens out (see ``TextRemoval``); ``"replace"`` (default) uses
            ``replacement_id``.
        token_ids: ids of the named tokens ``{"mask": .., "unk": .., "pad": ..}`` for ``removal="mask"/"unk"/"pad"``
            (filled from the tokenizer by :meth:`from_tokenizer`).

    Example:
        >>> import torch
        >>> text = TextModality(special_ids=[101, 102, 0], pad_id=0, replacement_id=103)
        >>> inputs = {"input_ids": torch.tensor([[101, 7, 8, 102, 0]]),
        ...           "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}
        >>> valid, special = text.token_masks(inputs, 5)
        >>> (valid & ~special).int().tolist()
        [[0, 1, 1, 0, 0]]
        >>> text.remove(inputs, torch.tensor([[False, True, False, False, False]]))["input_ids"].tolist()
        [[101, 103, 8, 102, 0]]
    """

    name = "text"

    def __init__(
        self,
        special_ids: Iterable[int],
        pad_id: int,
        replacement_id: int | None,
        tokenizer: Any | None = None,
        removal: TextRemoval = "replace",
        token_ids: dict[str, int] | None = None,
    ) -> None:
        self.special_ids = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=torch.long)
        self.pad_id = int(pad_id)
        self.replacement_id = None if replacement_id is None else int(replacement_id)
        self.tokenizer = tokenizer
        self.token_ids = {"pad": self.pad_id, **(token_ids or {})}
        if removal not in TEXT_REMOVALS:
            raise ValueError(f"removal must be one of {TEXT_REMOVALS}, got {removal!r}")
        if removal == "replace" and self.replacement_id is None:
            raise LightningXAIError(
                "removal='replace' needs a replacement token, and this tokenizer has no mask token: use "
                "removal='attention' (hide removed tokens through the attention mask; the default for decoders), "
                "'delete', or a named token the tokenizer has ('unk', 'pad'). The monitor and every perturbation "
                "metric take removal=..."
            )
        if removal in ("mask", "unk", "pad") and removal not in self.token_ids:
            raise LightningXAIError(f"removal={removal!r} needs the id of the {removal} token: pass token_ids=")
        if removal == "retokenize" and tokenizer is None:
            raise LightningXAIError(
                "removal='retokenize' decodes and re-tokenises the text, so it needs the tokenizer: build the "
                "modality with TextModality.from_tokenizer(tokenizer), or use removal='delete' (no re-tokenising)."
            )
        self.removal = removal

    def variant(self, removal: str) -> TextModality:
        """A copy that removes tokens with ``removal`` (one of ``TextRemoval``)."""
        return TextModality(
            self.special_ids.tolist(), self.pad_id, self.replacement_id, self.tokenizer, removal,  # type: ignore[arg-type]
            self.token_ids,
        )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        replacement: Literal["mask", "unk", "pad"] = "mask",
        removal: TextRemoval = "replace",
    ) -> TextModality:
        """Build from a HF tokenizer.

        Args:
            tokenizer: the model's tokenizer (special tokens, named tokens, strings for heatmaps).
            replacement: the token that replaces removed tokens for ``removal="replace"``.
            removal: how removed tokens are taken out by default (see ``TextRemoval``); a removal that needs a
                token the tokenizer lacks is refused with what to use instead.
        """
        replacement_id = getattr(tokenizer, f"{replacement}_token_id", None)
        if replacement_id is None and removal == "replace":
            raise LightningXAIError(
                f"The tokenizer {type(tokenizer).__name__} has no {replacement} token, which removal='replace' uses "
                "to remove tokens. Pass removal='attention' (hide them through the attention mask) or 'delete' to "
                "the monitor or the metric, or name another replacement token ('unk', 'pad')."
            )
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = replacement_id if replacement_id is not None else tokenizer.eos_token_id
        named = {
            name: int(getattr(tokenizer, f"{name}_token_id"))
            for name in ("mask", "unk", "pad")
            if getattr(tokenizer, f"{name}_token_id", None) is not None
        }
        return cls(tokenizer.all_special_ids, pad_id if pad_id is not None else 0, replacement_id, tokenizer,
                   removal=removal, token_ids=named)

    def _valid(self, inputs: ModelInputs) -> Tensor:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        return torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()

    def token_masks(self, inputs: ModelInputs, num_tokens: int) -> tuple[Tensor, Tensor]:
        """Valid = attention mask; special = special ids or padding."""
        ids = inputs["input_ids"]
        if ids.shape[1] != num_tokens:
            raise LightningXAIError(f"Expected {num_tokens} tokens per row, the batch has {ids.shape[1]}.")
        valid = self._valid(inputs)
        special = torch.isin(ids, self.special_ids.to(ids.device)) | ~valid
        return valid, special

    def remove(self, inputs: ModelInputs, removed: Tensor) -> ModelInputs:
        """Take removed tokens out according to ``self.removal`` (default: replace by ``replacement_id``).

        ``"zero_embedding"`` leaves the ids untouched (the forward zeroes the embeddings, see
        :class:`~lightning_xai.metrics.EmbeddingForward`).
        """
        perturbed = dict(inputs)
        ids = inputs["input_ids"]
        if self.removal in ("replace", "mask", "unk", "pad"):
            value = self.replacement_id if self.removal == "replace" else self.token_ids[self.removal]
            perturbed["input_ids"] = ids.masked_fill(removed, value)
        elif self.removal == "attention":
            mask = inputs.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask
            perturbed["attention_mask"] = mask.masked_fill(removed, 0)
        elif self.removal == "delete":
            keep = self._valid(inputs) & ~removed
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept tokens first, in order
            kept_sorted = keep.gather(1, order)
            width = ids.shape[1]
            for key, value in inputs.items():
                if value.dim() == 2 and value.shape[1] == width:
                    pad_value = self.pad_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
                    perturbed[key] = value.gather(1, order).masked_fill(~kept_sorted, pad_value)
            if "attention_mask" in inputs:
                perturbed["attention_mask"] = kept_sorted.to(inputs["attention_mask"].dtype)
            elif not bool(kept_sorted.all()):
                perturbed["attention_mask"] = kept_sorted.long()
        elif self.removal == "retokenize":
            perturbed = self._retokenize(inputs, removed)
        return perturbed

    def _retokenize(self, inputs: ModelInputs, removed: Tensor) -> ModelInputs:
        """Ferret's perturbation: decode the kept content tokens to text and tokenise that text again.

        Special tokens and padding are dropped before decoding and added back by the tokenizer, as ferret does
        (``tokenizer.decode(ids[1:-1])`` then ``tokenizer(text)``); pairs of sequences are not supported.
        """
        ids = inputs["input_ids"]
        width = ids.shape[1]
        per_token = {key for key, value in inputs.items() if value.dim() == 2 and value.shape[1] == width}
        unknown = per_token - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise LightningXAIError(f"removal='retokenize' cannot rebuild the per-token inputs {sorted(unknown)}; "
                                    "use removal='delete' instead.")
        if "token_type_ids" in inputs and bool((inputs["token_type_ids"] != 0).any()):
            raise LightningXAIError("removal='retokenize' supports single sequences only (token_type_ids != 0); "
                                    "use removal='delete' for sentence pairs.")
        valid, special = self.token_masks(inputs, width)
        kept = (valid & ~special & ~removed).cpu()
        rows = ids.cpu()
        texts = [
            self.tokenizer.decode(row[keep].tolist(), skip_special_tokens=False)
            for row, keep in zip(rows, kept, strict=True)
        ]
        encoded = self.tokenizer(texts, padding="longest", truncation=True, return_tensors="pt")
        perturbed = {key: value for key, value in inputs.items() if key not in per_token}
        perturbed["input_ids"] = encoded["input_ids"].to(device=ids.device, dtype=ids.dtype)
        mask_dtype = inputs["attention_mask"].dtype if "attention_mask" in inputs else torch.long
        perturbed["attention_mask"] = encoded["attention_mask"].to(device=ids.device, dtype=mask_dtype)
        if "token_type_ids" in inputs:
            token_type = inputs["token_type_ids"].dtype
            perturbed["token_type_ids"] = torch.zeros_like(perturbed["input_ids"], dtype=token_type)
        return perturbed

    def removed_lengths(self, inputs: ModelInputs, removed: Tensor) -> Tensor:
        """:meth:`lengths` after :meth:`remove` (shorter only for ``removal="delete"``/``"retokenize"``)."""
        if self.removal == "retokenize":  # only the tokenizer knows
            return self.lengths(self._retokenize(inputs, removed)).to(removed.device)
        lengths = self.lengths(inputs)
        if self.removal == "delete":
            lengths = lengths - (removed & self._valid(inputs)).sum(dim=1)
        return lengths

    def collate(self, parts: Sequence[ModelInputs]) -> ModelInputs:
        """Right-pad every part to the widest one, then concatenate.

        Padding is marked by the attention mask, never by the pad id alone: parts of different widths without an
        ``attention_mask`` get one of ones first (padded with 0), so the model never attends to the padding and the
        padding never becomes a content token (a pad id may be a real token: a Llama tokenizer's EOS).

        Example:
            >>> import torch
            >>> text = TextModality(special_ids=[0], pad_id=0, replacement_id=3)
            >>> batch = text.collate([{"input_ids": torch.tensor([[5, 6, 7]])}, {"input_ids": torch.tensor([[8]])}])
            >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
            ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
        """
        width = max(part["input_ids"].shape[1] for part in parts)
        if any(part["input_ids"].shape[1] != width for part in parts):
            parts = [
                part if "attention_mask" in part
                else {**part, "attention_mask": torch.ones_like(part["input_ids"], dtype=torch.long)}
                for part in parts
            ]
        out: ModelInputs = {}
        for key in parts[0]:
            pad_value = self.pad_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
            padded = [
                torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=pad_value)
                if p[key].dim() == 2
                else p[key]
                for p in parts
            ]
            out[key] = torch.cat(padded)
        return out

    def num_tokens(self, inputs: ModelInputs) -> int:
        """The padded width of the batch."""
        return int(inputs["input_ids"].shape[1])

    def sample_view(self, inputs: ModelInputs, row: int, maps: Mapping[str, Explanation]) -> dict[str, Any]:
        """The content tokens of row ``row`` (special tokens and padding removed) and each method's scores on them."""
        content = next(iter(maps.values())).content_mask[row]
        return {
            "tokens": self.tokens(inputs["input_ids"][row][content].cpu()),
            "maps": {n: e.relevance[row][e.content_mask[row]].cpu().numpy() for n, e in maps.items()},
        }

    def lengths(self, inputs: ModelInputs) -> Tensor:
        """Index of the last real token + 1 (so left padding is never cut)."""
        valid = self._valid(inputs)
        positions = torch.arange(1, valid.shape[1] + 1, device=valid.device)
        return (valid * positions).amax(dim=1)

    def trim(self, inputs: ModelInputs, length: int) -> ModelInputs:
        """Keep the first ``length`` positions of every per-token tensor."""
        width = inputs["input_ids"].shape[1]
        return {k: v[:, :length] if v.dim() == 2 and v.shape[1] == width else v for k, v in inputs.items()}

    def tokens(self, ids: Tensor) -> list[str]:
        """Token strings of one row of ids (needs the tokenizer)."""
        if self.tokenizer is None:
            return [str(int(i)) for i in ids]
        return list(self.tokenizer.convert_ids_to_tokens([int(i) for i in ids]))
