"""The ``lightning-xai`` command: LightningCLI subcommands plus a one-command demo and a run summary.

Subcommands:

* ``lightning-xai fit|validate|test --config recipe.yaml [--trainer.max_epochs=3 ...]``: a
  :class:`~lightning.pytorch.cli.LightningCLI` whose YAML ``class_path`` entries pick the LightningModule and the
  LightningDataModule.
* ``lightning-xai demo [extra arguments]``: ``fit --config recipes/minilm_sentiment.yaml`` (fine-tune the bundled
  MiniLM on the bundled tweets while the explanation monitor scores its explanations every validation).

After ``fit``, ``validate`` and ``test`` the command prints where the logs are, the command that opens the
dashboard, and a table of the explanation metrics per epoch.

Example::

    $ lightning-xai demo --trainer.max_epochs=1
    $ lightning-xai fit --config recipes/minilm_sentiment.yaml --print_config

From Python (what the tests do)::

    >>> from lightning_xai.cli import main
    >>> main(["fit", "--config", "recipes/minilm_sentiment.yaml", "--trainer.fast_dev_run=1"])  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

__all__ = ["DEMO_CONFIG", "XAICLI", "demo_config_path", "main", "print_run_summary"]

#: The default recipe, at the repository root (the package is installed in editable mode).
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "minilm_sentiment.yaml"
_SUBCOMMANDS = ("fit", "validate", "test")
_DESCRIPTION = (
    "Fine-tune transformers with Lightning while monitoring the quality of their explanations. "
    "Subcommands: fit, validate, test (LightningCLI; pass --config recipe.yaml) and "
    "'demo' (= fit --config recipes/minilm_sentiment.yaml [extra arguments]), "
    "'report RUN_DIR -o report.html' (a self-contained HTML report of a monitored run)."
)


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


def _fmt(value: Any) -> str:
    if hasattr(value, "item"):  # tensors and numpy scalars
        value = value.item()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _histories(trainer: Trainer) -> list[tuple[str, Mapping[int, Mapping[str, Any]]]]:
    found = []
    for cb in trainer.callbacks:
        history = getattr(cb, "history", None)
        if isinstance(history, Mapping) and history:
            found.append((type(cb).__name__, history))
    return found


def _print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is optional: fall back to aligned plain text
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        print(title)
        for line in (header, *rows):
            print(
                "  ".join(
                    str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
                )
            )
        return
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(highlight=False).print(table)


def print_run_summary(trainer: Trainer, stage: str = "fit") -> None:
    """Print where the logs are, how to open them, and the explanation metrics of a finished run (rank zero only).

    Explanation metrics come from every callback with a non-empty ``history`` mapping (epoch ->
    ``{metric key: value}``, as kept by :class:`lightning_xai.ExplanationMonitor`): one row per epoch, one column
    per key. Without such a callback, the ``xai/`` entries of ``trainer.callback_metrics`` are printed instead.

    Args:
        trainer: The trainer after ``fit``/``validate``/``test``.
        stage: Name of the finished stage (used in the heading).
    """
    if not trainer.is_global_zero:
        return
    from lightning.pytorch.loggers import TensorBoardLogger

    print(f"\n[lightning-xai] {stage} finished.")
    loggers = [lg for lg in trainer.loggers if getattr(lg, "save_dir", None)]
    if loggers:
        print(f"  logs: {os.path.abspath(trainer.log_dir)}")
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                save_dir = shlex.quote(os.path.abspath(logger.save_dir))
                print(f"  dashboard: {_tensorboard_command()} --logdir {save_dir}")
    else:
        print("  no logger wrote files (none configured, or fast_dev_run).")

    histories = _histories(trainer)
    for name, history in histories:
        keys: list[str] = []
        for metrics in history.values():
            keys.extend(k for k in metrics if k not in keys)
        rows = [
            [str(epoch)] + [_fmt(history[epoch][k]) if k in history[epoch] else "" for k in keys]
            for epoch in sorted(history)
        ]
        _print_table(f"Explanation metrics ({name}.history)", ["epoch", *keys], rows)
    if histories:
        return
    xai = {k: v for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("xai/")}
    if xai:
        _print_table(
            "Explanation metrics (last logged values)", ["metric", "value"], [[k, _fmt(v)] for k, v in xai.items()]
        )
    else:
        print("  no explanation metrics were logged (add lightning_xai.ExplanationMonitor to trainer.callbacks).")


def _tensorboard_command() -> str:
    """``tensorboard`` when it is on PATH, else the one installed beside this interpreter (e.g. ``.venv/bin``)."""
    import shutil

    if shutil.which("tensorboard"):
        return "tensorboard"
    beside = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    return shlex.quote(beside) if os.path.exists(beside) else "tensorboard"


def _report(argv: list[str]) -> None:
    """``lightning-xai report RUN_DIR -o report.html``: a self-contained HTML report of a monitored run."""
    import argparse

    from lightning_xai.report import write_report

    parser = argparse.ArgumentParser(
        prog="lightning-xai report",
        description="Write a self-contained HTML report (metric curves, method agreement, heatmap evolution) of a "
        "run monitored by ExplanationMonitor.",
    )
    parser.add_argument("run_dir", help="the run's log directory (or its xai/ folder, or explanations.jsonl)")
    parser.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    options = parser.parse_args(argv)
    try:
        path = write_report(options.run_dir, options.output)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lightning-xai report: {err}") from err
    print(f"[lightning-xai] report written to {os.path.abspath(path)}")


class XAICLI(LightningCLI):
    """LightningCLI limited to ``fit``/``validate``/``test`` that prints :func:`print_run_summary` after each."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (always given explicitly by :func:`main`, which may rewrite ``demo``).

        Same as Lightning's, minus its warning about ``args`` given alongside ``sys.argv``: from the console script
        both are set on purpose.
        """
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Only the subcommands the recipes support (no ``predict``)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in _SUBCOMMANDS}

    def after_fit(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "fit")

    def after_validate(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "validate")

    def after_test(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "test")


def main(argv: list[str] | None = None) -> None:
    """Run the ``lightning-xai`` command.

    Args:
        argv: Command-line arguments without the program name; ``None`` reads ``sys.argv[1:]``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "report":
        _report(args[1:])
        return
    if args and args[0] == "demo":
        try:
            args = ["fit", "--config", str(demo_config_path()), *args[1:]]
        except FileNotFoundError as err:
            raise SystemExit(f"lightning-xai demo: {err}") from err
    # Tokenization runs in the main process before DataLoader workers fork; silence the tokenizers fork warning.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    XAICLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": _DESCRIPTION},
        args=args,
    )


if __name__ == "__main__":
    main()

