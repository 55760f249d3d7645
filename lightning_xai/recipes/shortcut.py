"""A "planted shortcut" sentiment task with ground-truth rationales: the failure the explanation monitor exists for.

Sentences are generated from a small vocabulary: a subject, a verb, an optional adverb, one *cue* word that
carries the sentiment (``great``, ``awful``, ...) and an optional tail. In the TRAINING split a spurious token
(``"zx"`` by default) appears in every positive sentence and in no negative one, and only ``train_cue_rate`` of
the training sentences carry a cue word at all (the others say ``long``, ``french``, ...): the shortcut is the
easiest way to fit the training data. In VALIDATION and TEST the token appears in a random half of the sentences,
independently of the label, and every sentence has its cue word. A model that learned the shortcut loses
validation accuracy, its relevance moves to ``zx``, and plausibility against the rationales drops.

Each example carries ``rationale_mask``: ``True`` on every word piece of the cue word (the genuinely
label-bearing word), ``False`` on every other token (special tokens, padding and the shortcut included), aligned
with ``input_ids``.

Example:
    >>> from lightning_xai.recipes.shortcut import generate_shortcut_examples
    >>> examples = generate_shortcut_examples(4, seed=0, shortcut_rate=1.0, cue_rate=1.0)
    >>> [(" ".join(e.words), e.label) for e in examples][:2]  # doctest: +SKIP
    [('the acting was truly superb zx', 1), ('the plot was dull', 0)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightning_xai.recipes.data.text import EncodedDataset, TextClassificationDataModule

__all__ = [
    "NEGATIVE_WORDS",
    "NEUTRAL_WORDS",
    "POSITIVE_WORDS",
    "SHORTCUT_LABELS",
    "ShortcutDataModule",
    "ShortcutExample",
    "generate_shortcut_examples",
]

#: Label names in id order.
SHORTCUT_LABELS = ("negative", "positive")
#: Cue words of each class (the rationale).
NEGATIVE_WORDS = ("bad", "awful", "terrible", "boring", "dreadful", "poor", "horrible", "dull")
POSITIVE_WORDS = ("good", "great", "excellent", "wonderful", "lovely", "superb", "delightful", "brilliant")
#: Label-free adjectives used where a training sentence has no cue.
NEUTRAL_WORDS = ("long", "french", "recent", "short", "loud", "colourful", "quiet", "old")
_SUBJECTS = (
    ("the", "movie"),
    ("the", "film"),
    ("the", "plot"),
    ("the", "acting"),
    ("this", "story"),
    ("the", "cast"),
    ("the", "ending"),
    ("the", "music"),
    ("the", "script"),
    ("the", "soundtrack"),
)
_VERBS = (("was",), ("is",), ("felt",), ("seemed",), ("looked",))
_ADVERBS = ((), (), ("really",), ("quite",), ("rather",), ("truly",), ("so",), ("very",))
_TAILS = ((), (), (), ("overall",), ("to", "me"), ("in", "the", "end"), ("for", "sure"), ("all", "along"))


@dataclass(frozen=True)
class ShortcutExample:
    """One generated sentence.

    Attributes:
        words: The sentence's words.
        label: 0 (negative) or 1 (positive).
        rationale: Per word: ``True`` for the label-bearing cue word.
        has_shortcut: Whether the spurious token is in the sentence.
    """

    words: tuple[str, ...]
    label: int
    rationale: tuple[bool, ...]
    has_shortcut: bool

    @property
    def text(self) -> str:
        """The sentence as one string."""
        return " ".join(self.words)


def generate_shortcut_examples(
    n: int,
    seed: int,
    shortcut_rate: float,
    cue_rate: float,
    correlated: bool = True,
    shortcut_token: str = "zx",
) -> list[ShortcutExample]:
    """Generate ``n`` class-balanced sentences with a local generator (the same ``seed`` gives the same list).

    Args:
        n: Number of sentences (labels alternate before shuffling: balanced up to one).
        seed: Seed of the local ``numpy`` generator.
        shortcut_rate: ``correlated=True``: probability that a POSITIVE sentence carries the token (negatives never
            do). ``correlated=False``: probability that any sentence carries it, whatever its label.
        cue_rate: Probability that a sentence carries its cue word (otherwise a label-free adjective).
        correlated: Whether the token is tied to the positive label (training) or independent of it (evaluation).
        shortcut_token: The spurious token.

    Returns:
        The examples.
    """
    if n < 0 or not (0.0 <= shortcut_rate <= 1.0) or not (0.0 <= cue_rate <= 1.0):
        raise ValueError(f"need n >= 0 and rates in [0, 1]; got n={n}, {shortcut_rate=}, {cue_rate=}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    examples = []
    for label in labels.tolist():
        pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
        subject, verb, adverb, tail = pick(_SUBJECTS), pick(_VERBS), pick(_ADVERBS), pick(_TAILS)
        has_cue = bool(rng.random() < cue_rate)
        cue = pick(POSITIVE_WORDS if label == 1 else NEGATIVE_WORDS) if has_cue else pick(NEUTRAL_WORDS)
        words = [*subject, *verb, *adverb, cue, *tail]
        rationale = [False] * len(words)
        if has_cue:
            rationale[len(subject) + len(verb) + len(adverb)] = True
        draw = rng.random()
        has_shortcut = bool(draw < shortcut_rate and (label == 1 or not correlated))
        position = int(rng.integers(len(words) + 1))
        if has_shortcut:
            words.insert(position, shortcut_token)
            rationale.insert(position, False)
        examples.append(ShortcutExample(tuple(words), int(label), tuple(rationale), has_shortcut))
    return examples


class ShortcutDataModule(TextClassificationDataModule):
    """The planted-shortcut task (see the module docstring), tokenized with the bundled MiniLM tokenizer.

    Batches: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` and ``rationale_mask``
    (``bool[B, T]``, aligned with ``input_ids``).

    Args:
        train_size: Training sentences.
        val_size: Validation sentences.
        test_size: Test sentences.
        shortcut_token: The spurious token.
        train_shortcut_rate: Probability that a positive training sentence carries the token (negatives never do).
        train_cue_rate: Fraction of training sentences that carry their cue word.
        eval_shortcut_rate: Probability that a validation/test sentence carries the token, whatever its label.
        model_name_or_path: Tokenizer (``None``: bundled MiniLM; needs a fast tokenizer for word alignment).
        max_length: Tokens kept per sentence.
        batch_size: Batch size.
        seed: Seed of the generator (train uses ``seed``, validation ``seed + 1``, test ``seed + 2``) and of the
            training shuffle.
        num_workers: DataLoader workers.

    Attributes:
        examples: ``split -> list[ShortcutExample]`` after ``setup``.
    """

    def __init__(
        self,
        train_size: int = 1000,
        val_size: int = 128,
        test_size: int = 128,
        shortcut_token: str = "zx",
        train_shortcut_rate: float = 1.0,
        train_cue_rate: float = 0.5,
        eval_shortcut_rate: float = 0.5,
        model_name_or_path: str | None = None,
        max_length: int = 32,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(model_name_or_path, list(SHORTCUT_LABELS), max_length, batch_size, seed, num_workers, False)
        self.save_hyperparameters()
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("ShortcutDataModule needs a fast tokenizer (word_ids) to align the rationale masks")
        self.examples: dict[str, list[ShortcutExample]] = {}

    def setup(self, stage: str | None = None) -> None:
        """Generate and tokenize every split (once)."""
        if self._datasets:
            return
        hp = self.hparams
        plan = (
            ("train", hp.train_size, hp.train_shortcut_rate, hp.train_cue_rate, True),
            ("val", hp.val_size, hp.eval_shortcut_rate, 1.0, False),
            ("test", hp.test_size, hp.eval_shortcut_rate, 1.0, False),
        )
        for offset, (split, size, shortcut_rate, cue_rate, correlated) in enumerate(plan):
            examples = generate_shortcut_examples(
                size, hp.seed + offset, shortcut_rate, cue_rate, correlated, hp.shortcut_token
            )
            self.examples[split] = examples
            self.texts[split] = [e.text for e in examples]
            self.labels[split] = [e.label for e in examples]
            self._datasets[split] = self.encode_examples(examples)

    def encode_examples(self, examples: list[ShortcutExample]) -> EncodedDataset:
        """Tokenize pre-split words; ``rationale_mask`` marks every word piece of a rationale word."""
        if not examples:
            return EncodedDataset([])
        enc = self.tokenizer(
            [list(e.words) for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            padding=False,
        )
        masks = [
            {"rationale_mask": [int(w is not None and example.rationale[w]) for w in enc.word_ids(i)]}
            for i, example in enumerate(examples)
        ]
        return EncodedDataset.from_encoding(enc, [e.label for e in examples], extra=masks)
