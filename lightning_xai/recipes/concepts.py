"""Image concept sets that a recipe can write in YAML: synthetic stroke concepts built from scikit-learn's digits.

:class:`~lightning_xai.ConceptMonitor` takes image concepts as tensors ``[n, C, H, W]`` in the model's input
space, which a YAML file cannot hold. It also takes any :class:`~lightning_xai.callbacks.concept_monitor.ConceptSource`
(an object with ``concept_sets()`` and ``negative_set()``), and :class:`DigitConcepts` is one that jsonargparse /
LightningCLI can instantiate from ``class_path`` / ``init_args``::

    - class_path: lightning_xai.ConceptMonitor
      init_args:
        concepts:
          class_path: lightning_xai.recipes.DigitConcepts
          init_args: {image_size: 16, concepts: [thick, inverted]}

Example:
    >>> source = DigitConcepts(image_size=16, per_concept=5, num_negatives=8)
    >>> {name: tuple(images.shape) for name, images in source.concept_sets().items()}
    {'thick': (5, 3, 16, 16), 'inverted': (5, 3, 16, 16)}
    >>> tuple(source.negative_set().shape)
    (8, 3, 16, 16)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_xai.callbacks.concept_monitor import ConceptSet
from lightning_xai.recipes.data.images import preprocess_images
from lightning_xai.recipes.data.splits import stratified_split

__all__ = ["DIGIT_CONCEPTS", "DigitConcepts"]

#: The concepts :class:`DigitConcepts` can build, each from plain digits in ``[0, 1]`` at the model's image size.
DIGIT_CONCEPTS: dict[str, str] = {
    "thick": "strokes dilated by a 3x3 max filter",
    "inverted": "colours inverted (1 - image)",
    "plain": "the digits unchanged",
}


def _thick(images: Tensor) -> Tensor:
    return torch.nn.functional.max_pool2d(images, kernel_size=3, stride=1, padding=1)


def _inverted(images: Tensor) -> Tensor:
    return 1.0 - images


def _plain(images: Tensor) -> Tensor:
    return images


_TRANSFORMS = {"thick": _thick, "inverted": _inverted, "plain": _plain}


class DigitConcepts:
    """Deterministic image concept sets from the held-out test split of scikit-learn's digits.

    The images are the test split of :class:`~lightning_xai.recipes.DigitsDataModule` with the same
    ``val_fraction``, ``test_fraction`` and ``seed`` (so no concept image is trained on or probed), scaled to
    ``[0, 1]``, resized to ``image_size`` (3 channels). Concept ``i`` of ``concepts`` takes the next
    ``per_concept`` of them and transforms them (``DIGIT_CONCEPTS``: ``"thick"``: strokes dilated by a 3x3 max
    filter at ``image_size``; ``"inverted"``: ``1 - image``; ``"plain"``: unchanged); the negatives are the next
    ``num_negatives`` unchanged. Everything is then normalised with ``(x - mean) / std`` like the data module's
    inputs. No randomness beyond the data module's seeded split: the same arguments give the same tensors.

    Args:
        image_size: Side of the images; keep equal to the model's and the data module's ``image_size``.
        concepts: The concepts to build, names from ``DIGIT_CONCEPTS``, each once.
        per_concept: Images per concept (at least 2).
        num_negatives: Plain digits as the negative set (0: none, the monitor then fits relative CAVs against
            the other concepts, or uses its own ``negatives``).
        val_fraction: As the data module's.
        test_fraction: As the data module's; the test split must hold ``len(concepts) * per_concept +
            num_negatives`` images (179 with the defaults).
        seed: As the data module's (the split's seed).
        mean: Per-channel normalisation mean, as the data module's.
        std: Per-channel normalisation std, as the data module's.

    Raises:
        ValueError: For an unknown or repeated concept, fewer than 2 images per concept, a negative set of one
            image, or more images than the test split holds.

    Example:
        >>> source = DigitConcepts(image_size=16, concepts=["inverted"], per_concept=3, num_negatives=3)
        >>> plain, inverted = source.negative_set(), source.concept_sets()["inverted"]
        >>> bool(torch.allclose(plain.amin(), torch.tensor(-1.0))), bool(inverted.amax() == 1.0)
        (True, True)
        >>> DigitConcepts(concepts=["stripes"])
        Traceback (most recent call last):
        ...
        ValueError: unknown digit concept 'stripes': choose from ['thick', 'inverted', 'plain']
    """

    def __init__(
        self,
        image_size: int = 16,
        concepts: Sequence[str] = ("thick", "inverted"),
        per_concept: int = 40,
        num_negatives: int = 99,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        seed: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        names = [concepts] if isinstance(concepts, str) else list(concepts)
        if not names:
            raise ValueError("concepts is empty: name at least one of " + str(list(DIGIT_CONCEPTS)))
        for name in names:
            if name not in DIGIT_CONCEPTS:
                raise ValueError(f"unknown digit concept {name!r}: choose from {list(DIGIT_CONCEPTS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"concepts {names} name a concept twice")
        for arg, value, minimum in (("image_size", image_size, 1), ("per_concept", per_concept, 2),
                                    ("num_negatives", num_negatives, 0)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{arg} must be an integer >= {minimum}; got {value!r}")
        if num_negatives == 1:
            raise ValueError("num_negatives=1: a negative set needs at least 2 images (or 0 for none)")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError("mean and std need one value per RGB channel, std > 0")
        self.image_size = image_size
        self.concepts = names
        self.per_concept = per_concept
        self.num_negatives = num_negatives
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.mean = list(mean)
        self.std = list(std)
        needed = len(names) * per_concept + num_negatives
        available = len(self._test_images())
        if needed > available:
            raise ValueError(
                f"{len(names)} concepts x {per_concept} images + {num_negatives} negatives = {needed} images, but "
                f"the digits' test split (test_fraction={test_fraction}) holds {available}: ask for fewer"
            )

    def _test_images(self) -> Tensor:
        """The test split's digits in ``[0, 1]`` at ``image_size``, 3 channels, in split order."""
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("DigitConcepts needs scikit-learn: pip install scikit-learn") from err
        digits = load_digits()
        _val, test, _train = stratified_split(
            digits.target.tolist(), [self.val_fraction, self.test_fraction], self.seed
        )
        images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None][torch.as_tensor(test)]
        return preprocess_images(images, self.image_size, mean=[0.0] * 3, std=[1.0] * 3).clamp(0.0, 1.0)

    def _normalise(self, images: Tensor) -> Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images - mean) / std

    def concept_sets(self) -> Mapping[str, ConceptSet]:  # the ConceptSource protocol's exact signature
        """``{concept: images [per_concept, 3, image_size, image_size]}``, normalised like the model's inputs."""
        images = self._test_images()
        return {
            name: self._normalise(_TRANSFORMS[name](images[i * self.per_concept : (i + 1) * self.per_concept]))
            for i, name in enumerate(self.concepts)
        }

    def negative_set(self) -> ConceptSet | None:
        """``num_negatives`` plain digits after the concepts' images (normalised), or None when 0."""
        if self.num_negatives == 0:
            return None
        start = len(self.concepts) * self.per_concept
        return self._normalise(self._test_images()[start : start + self.num_negatives])

    def __repr__(self) -> str:
        return (
            f"DigitConcepts(image_size={self.image_size}, concepts={self.concepts}, per_concept={self.per_concept}, "
            f"num_negatives={self.num_negatives})"
        )
