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

#: The default recipe, at the repository root (the package is installed in editable mode).
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "recipes" / "minilm_sentiment.yaml"


def demo_config_path() -> Path:
    """Return the path of the default recipe ``recipes/minilm_sentiment.yaml``.

    Raises:
        FileNotFoundError: If the recipe is not next to the package (e.g. a non-editable install).
    """
    if not DEMO_CONFIG.is_file():
        raise FileNotFoundError(
            f"The demo recipe {DEMO_CONFIG} was not found. 'lightning-xai demo' needs the repository checkout "
            "(pip install -e .); otherwise run 'lightning-xai fit --config <your recipe.yaml>'."
        )
    return DEMO_CONFIG


def _demo(args: list[str]) -> None:
    """``demo [extra arguments]`` = ``fit --config <the default recipe> [extra arguments]``."""
    try:
        config = demo_config_path()
    except FileNotFoundError as err:
        raise SystemExit(f"lightning-xai demo: {err}") from err
    train.run(["fit", "--config", str(config), *args])


#: Subcommands handled outside LightningCLI; everything else (fit, validate, test, --help) goes to it.
_SUBCOMMANDS: dict[str, Callable[[list[str]], None]] = {"demo": _demo, "explain": explain.run, "report": report.run}


def main(argv: list[str] | None = None) -> None:
    """Run the ``lightning-xai`` command.

    Args:
        argv: Command-line arguments without the program name; ``None`` reads ``sys.argv[1:]``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    handler = _SUBCOMMANDS.get(args[0]) if args else None
    if handler is not None:
        handler(args[1:])
    else:
        train.run(args)
