"""The ``lightning-xai`` command: LightningCLI subcommands, a one-command demo, offline explain, a static report.

Subcommands (``main`` dispatches each to its module):

* ``lightning-xai fit|validate|test --config recipe.yaml [--trainer.max_epochs=3 ...]``
  (:mod:`lightning_xai.cli.train`): a :class:`~lightning.pytorch.cli.LightningCLI` whose YAML ``class_path``
  entries pick the LightningModule and the LightningDataModule; prints where the logs are, the command that opens
  the dashboard and a table of the explanation metrics per epoch (:mod:`lightning_xai.cli.summary`).
* ``lightning-xai demo [extra arguments]``: ``fit --config recipes/minilm_sentiment.yaml`` (fine-tune the bundled
  MiniLM on the bundled tweets while the explanation monitor scores its explanations every validation).
* ``lightning-xai explain --ckpt CKPT --config RECIPE [--explainers grad_sam random] [--metrics deletion_auc]
  [--split val|test] [--limit N] [--out DIR] [recipe overrides ...]`` (:mod:`lightning_xai.cli.explain`): explain a
  trained checkpoint offline over a whole split with the engine the monitor uses (the same files, the same metric
  values for the same samples), with a progress bar and a method x metric table at the end.
* ``lightning-xai report RUN_DIR -o report.html`` (:mod:`lightning_xai.cli.report`): a self-contained HTML report.
* ``lightning-xai recipes``: the bundled recipes, one line each; ``--config NAME`` runs one by name.

Example::

    $ lightning-xai demo --trainer.max_epochs=1
    $ lightning-xai fit --config recipes/minilm_sentiment.yaml --print_config

From Python (what the tests do)::

    >>> from lightning_xai.cli import main
    >>> main(["fit", "--config", "recipes/minilm_sentiment.yaml", "--trainer.fast_dev_run=1"])  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from lightning_xai.cli import explain, report, train
from lightning_xai.cli.explain import explain_checkpoint
from lightning_xai.cli.summary import print_run_summary
from lightning_xai.cli.train import XAICLI
from lightning_xai.metrics import get_metric, list_metrics
from lightning_xai.recipes.bundled import list_recipes, recipe_path

__all__ = [
    "DEMO_CONFIG",
    "XAICLI",
    "demo_config_path",
    "explain_checkpoint",
    "get_metric",
    "list_metrics",
    "main",
    "print_run_summary",
]

#: The default recipe, bundled with the package (the repository's ``recipes/minilm_sentiment.yaml``).
DEMO_CONFIG = recipe_path("minilm_sentiment")


def demo_config_path() -> Path:
    """Return the path of the default recipe ``minilm_sentiment.yaml`` (bundled with the package).

    Raises:
        FileNotFoundError: If the recipe file is missing (a broken installation).
    """
    if not DEMO_CONFIG.is_file():
        raise FileNotFoundError(
            f"The demo recipe {DEMO_CONFIG} was not found: reinstall lightning-xai; or run "
            "'lightning-xai fit --config <your recipe.yaml>'."
        )
    return DEMO_CONFIG


def resolve_configs(args: list[str]) -> list[str]:
    """``--config NAME`` (or ``--config=NAME``) that is not a file becomes the bundled recipe of that name.

    Example:
        >>> resolve_configs(["fit", "--config", "vit_digits", "--trainer.max_epochs=1"])[2].endswith("vit_digits.yaml")
        True
    """
    resolved = []
    for i, arg in enumerate(args):
        value, prefix = None, ""
        if arg.startswith("--config="):
            value, prefix = arg.split("=", 1)[1], "--config="
        elif i > 0 and args[i - 1] == "--config":
            value = arg
        if value is not None and not Path(value).exists():
            try:
                value = str(recipe_path(value))
            except FileNotFoundError as err:
                raise SystemExit(f"lightning-xai: {err}") from err
            arg = prefix + value
        resolved.append(arg)
    return resolved


def _recipes(args: list[str]) -> None:
    """``recipes``: the bundled recipes, one line each."""
    for name, description in list_recipes().items():
        print(f"{name:<18} {description}")
    print("\nRun one with: lightning-xai fit --config <name>   (--print_config shows every setting)")


def _demo(args: list[str]) -> None:
    """``demo [extra arguments]`` = ``fit --config <the default recipe> [extra arguments]``."""
    try:
        config = demo_config_path()
    except FileNotFoundError as err:
        raise SystemExit(f"lightning-xai demo: {err}") from err
    train.run(["fit", "--config", str(config), *args])


#: Subcommands handled outside LightningCLI; everything else (fit, validate, test, --help) goes to it.
_SUBCOMMANDS: dict[str, Callable[[list[str]], None]] = {
    "demo": _demo,
    "explain": explain.run,
    "report": report.run,
    "recipes": _recipes,
}


def main(argv: list[str] | None = None) -> None:
    """Run the ``lightning-xai`` command.

    Args:
        argv: Command-line arguments without the program name; ``None`` reads ``sys.argv[1:]``.
    """
    args = resolve_configs(list(sys.argv[1:] if argv is None else argv))
    handler = _SUBCOMMANDS.get(args[0]) if args else None
    if handler is not None:
        handler(args[1:])
    else:
        train.run(args)
