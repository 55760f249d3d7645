"""``lightning-xai fit|validate|test``: a LightningCLI over the recipes that prints a run summary afterwards."""

from __future__ import annotations

import os

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from lightning_xai.cli.summary import print_run_summary

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
        """Print the run summary."""
        print_run_summary(self.trainer, "fit")

    def after_validate(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "validate")

    def after_test(self) -> None:
        """Print the run summary."""
        print_run_summary(self.trainer, "test")


def recipe_cli(args: list[str], **kwargs: object) -> XAICLI:
    """An :class:`XAICLI` whose YAML ``class_path`` entries pick the LightningModule and the LightningDataModule."""
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
