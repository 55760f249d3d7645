"""``lightning-xai fit|validate|test``: a LightningCLI over the recipes that prints a run summary afterwards."""

from __future__ import annotations

import inspect
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lightning_xai.callbacks.progress import LineProgress
from lightning_xai.cli.summary import installed_command, print_run_summary

#: The LightningCLI subcommands the recipes support (no ``predict``).
SUBCOMMANDS = ("fit", "validate", "test")
DESCRIPTION = (
    "Fine-tune transformers with Lightning while monitoring the quality of their explanations. "
    "Subcommands: fit, validate, test (LightningCLI; pass --config recipe.yaml) and "
    "'demo' (= fit --config recipes/minilm_sentiment.yaml [extra arguments]), "
    "'report RUN_DIR -o report.html' (a self-contained HTML report of a monitored run), "
    "'explain --ckpt CKPT --config RECIPE' (explain a checkpoint offline over a whole split; see explain --help), "
    "'recipes' (the bundled recipes; --config takes a recipe's name or a path)."
)


class XAICLI(LightningCLI):
    """LightningCLI limited to ``fit``/``validate``/``test`` that prints :func:`print_run_summary` after each."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse ``args`` (always given explicitly by ``main``, which may rewrite ``demo``).

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
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def after_fit(self) -> None:
        """Print the run summary and the commands that explain the saved checkpoint and report on the run."""
        print_run_summary(self.trainer, "fit")
        for line in next_steps(self.trainer):
            print(line)

    def after_validate(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "validate")

    def after_test(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "test")


def next_steps(trainer: Any) -> list[str]:
    """The exact ``explain`` and ``report`` commands for the run that just ended (empty when it saved neither).

    ``explain`` gets the run's saved ``config.yaml`` (the recipe with every override of this run) and the last
    checkpoint; ``report`` gets the folder holding the run's ``explanations.jsonl``.
    """
    from lightning_xai.callbacks.explanation_monitor import ExplanationMonitor

    lines = []
    checkpoint = getattr(getattr(trainer, "checkpoint_callback", None), "last_model_path", "") or getattr(
        getattr(trainer, "checkpoint_callback", None), "best_model_path", ""
    )
    log_dir = getattr(trainer, "log_dir", None)
    config = Path(log_dir) / "config.yaml" if log_dir else None
    program = installed_command("lightning-xai")
    if checkpoint and config is not None and config.is_file():
        lines.append(
            f"  explain the checkpoint over the whole validation split: {program} explain "
            f"--ckpt {shlex.quote(str(checkpoint))} --config {shlex.quote(str(config))}"
        )
    for callback in trainer.callbacks:
        if isinstance(callback, ExplanationMonitor):
            directory = callback.output_directory
            if directory is not None and (directory / "explanations.jsonl").is_file():
                lines.append(
                    f"  HTML report of this run: {program} report {shlex.quote(str(directory))} "
                    f"-o {shlex.quote(str(directory / 'report.html'))}"
                )
    return ["Next:", *lines] if lines else []


#: Top-level keys a saved config gets from the subcommand's method (``ckpt_path`` ...), not from the recipe.
_METHOD_KEYS = frozenset(
    name
    for method in (Trainer.fit, Trainer.validate, Trainer.test)
    for name in inspect.signature(method).parameters
    if name not in ("self", "model", "datamodule", "train_dataloaders", "val_dataloaders", "dataloaders")
)


def recipe_config(path: str) -> str:
    """A recipe path, or for a run's saved ``config.yaml`` its YAML without the subcommand keys (``ckpt_path``).

    LightningCLI saves the config of ``fit`` with ``ckpt_path``; the recipe parser of ``explain`` knows no
    subcommand, so those keys are dropped (jsonargparse takes the YAML text in place of a path).
    """
    try:
        content = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return path  # not ours to judge: the parser reports it
    if not isinstance(content, dict) or not _METHOD_KEYS & set(content):
        return path
    return yaml.safe_dump({k: v for k, v in content.items() if k not in _METHOD_KEYS}, sort_keys=False)


def recipe_cli(args: list[str], **kwargs: object) -> XAICLI:
    """An :class:`XAICLI` whose YAML ``class_path`` entries pick the LightningModule and the LightningDataModule.

    When output is not a terminal, the progress bar gives way to :class:`~lightning_xai.callbacks.LineProgress`.
    """
    if not sys.stdout.isatty():
        defaults: dict[str, Any] = dict(kwargs.pop("trainer_defaults", None) or {})  # type: ignore[call-overload]
        defaults.setdefault("enable_progress_bar", False)
        defaults["callbacks"] = [*defaults.get("callbacks", []), LineProgress()]
        kwargs["trainer_defaults"] = defaults
    return XAICLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        **kwargs,  # type: ignore[arg-type]
    )


def run(args: list[str]) -> None:
    """``fit``/``validate``/``test`` (and ``--help``, ``--print_config``) of a recipe."""
    # Tokenization runs in the main process before DataLoader workers fork; silence the tokenizers fork warning.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    recipe_cli(args, save_config_kwargs={"overwrite": True}, parser_kwargs={"description": DESCRIPTION})
