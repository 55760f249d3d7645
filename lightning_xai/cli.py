"""The ``lightning-xai`` command: LightningCLI subcommands plus a one-command demo and a run summary.

Subcommands:

* ``lightning-xai fit|validate|test --config recipe.yaml [--trainer.max_epochs=3 ...]``: a
  :class:`~lightning.pytorch.cli.LightningCLI` whose YAML ``class_path`` entries pick the LightningModule and the
  LightningDataModule.
* ``lightning-xai demo [extra arguments]``: ``fit --config recipes/minilm_sentiment.yaml`` (fine-tune the bundled
  MiniLM on the bundled tweets while the explanation monitor scores its explanations every validation).
* ``lightning-xai explain --ckpt CKPT --config RECIPE [--explainers grad_sam random] [--metrics deletion_auc]
  [--split val|test] [--limit N] [--out DIR] [recipe overrides ...]``: explain a trained checkpoint offline over a
  whole split with the same :class:`~lightning_xai.ExplanationMonitor` the recipes use (so the same files and the
  same metric values for the same samples), with a progress bar and a method x metric table at the end.
* ``lightning-xai report RUN_DIR -o report.html``: a self-contained HTML report of a monitored run.

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
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

__all__ = [
    "DEMO_CONFIG",
    "METRICS",
    "XAICLI",
    "demo_config_path",
    "explain_checkpoint",
    "get_metric",
    "main",
    "print_run_summary",
]

#: The default recipe, at the repository root (the package is installed in editable mode).
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "minilm_sentiment.yaml"
_SUBCOMMANDS = ("fit", "validate", "test")
_DESCRIPTION = (
    "Fine-tune transformers with Lightning while monitoring the quality of their explanations. "
    "Subcommands: fit, validate, test (LightningCLI; pass --config recipe.yaml) and "
    "'demo' (= fit --config recipes/minilm_sentiment.yaml [extra arguments]), "
    "'report RUN_DIR -o report.html' (a self-contained HTML report of a monitored run), "
    "'explain --ckpt CKPT --config RECIPE' (explain a checkpoint offline over a whole split; see explain --help)."
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
    ``{metric key: value}``, as kept by :class:`lightning_xai.ExplanationMonitor`): one row per key, one column
    per epoch. Without such a callback, the ``xai/`` entries of ``trainer.callback_metrics`` are printed instead.

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
        # one row per metric, one column per epoch: keys are long and many, epochs are few
        epochs = sorted(history)
        rows = [[k] + [_fmt(history[e][k]) if k in history[e] else "" for e in epochs] for k in keys]
        _print_table(f"Explanation metrics ({name}.history)", ["metric", *[f"epoch {e}" for e in epochs]], rows)
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


#: Metric names accepted by ``lightning-xai explain --metrics`` -> class names in :mod:`lightning_xai.metrics`
#: (those missing from the installed version are left out by :func:`get_metric`).
METRICS: dict[str, str] = {
    "deletion_auc": "DeletionAUC",
    "insertion_auc": "InsertionAUC",
    "aopc_comprehensiveness": "AOPCComprehensiveness",
    "aopc_sufficiency": "AOPCSufficiency",
    "log_odds": "LogOdds",
    "road": "ROAD",
    "area_between_curves": "AreaBetweenCurves",
    "leave_one_out_tau": "LeaveOneOutTau",
    "aupc": "AUPC",
    "auac": "AUAC",
    "au_mse": "AUMSE",
    "plausibility": "Plausibility",
}


def _available_metrics() -> dict[str, type]:
    import lightning_xai.metrics as metrics_module

    return {name: getattr(metrics_module, cls) for name, cls in METRICS.items() if hasattr(metrics_module, cls)}


def get_metric(name: str, **kwargs: Any) -> Any:
    """Instantiate a metric of :mod:`lightning_xai.metrics` by its ``explain --metrics`` name.

    Raises:
        ValueError: For an unknown name (the message lists the known ones).

    Example:
        >>> type(get_metric("deletion_auc")).__name__
        'DeletionAUC'
    """
    available = _available_metrics()
    if name not in available:
        raise ValueError(f"Unknown metric {name!r}. Known metrics: {', '.join(sorted(available))}")
    return available[name](**kwargs)


def _method_metric_table(scalars: Mapping[str, Any], prefix: str) -> tuple[list[str], list[list[str]]]:
    """``{prefix}method/metric -> value`` as a method x metric table (header, rows)."""
    methods: list[str] = []
    metrics: list[str] = []
    cells: dict[tuple[str, str], Any] = {}
    for key, value in scalars.items():
        if not key.startswith(prefix):
            continue
        method, _, metric = key[len(prefix) :].partition("/")
        if not metric:
            continue
        methods += [method] if method not in methods else []
        metrics += [metric] if metric not in metrics else []
        cells[(method, metric)] = value
    rows = [[m] + [_fmt(cells[(m, k)]) if (m, k) in cells else "" for k in metrics] for m in methods]
    return ["method", *metrics], rows


def _explain_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lightning-xai explain",
        description="Explain a trained checkpoint offline over a whole dataset split, with the recipe's model and "
        "data module and an ExplanationMonitor: writes the same files as during training (explanations.jsonl, "
        "PNG/HTML heatmaps, TensorBoard events) and prints a method x metric table. Arguments it does not know "
        "(e.g. --data.init_args.batch_size=8) are passed to the recipe as LightningCLI overrides.",
    )
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt) of the recipe's model")
    parser.add_argument(
        "--config", required=True, action="append", help="the recipe YAML (repeat to layer several files)"
    )
    parser.add_argument(
        "--explainers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="explainer names (lightning_xai.explainers.list_explainers()); default: the recipe monitor's, "
        "else grad_sam random",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"metric names ({', '.join(METRICS)}); default: the recipe monitor's, else deletion_auc",
    )
    parser.add_argument("--split", choices=("val", "test"), default="val", help="split to explain (default: val)")
    parser.add_argument("--limit", type=int, default=None, help="explain only the first N samples of the split")
    parser.add_argument("--out", default="runs/explain", help="output directory (default: runs/explain)")
    parser.add_argument("--batch_size", type=int, default=32, help="samples per explanation pass (default: 32)")
    parser.add_argument("--num_heatmaps", type=int, default=8, help="samples that get heatmaps (default: 8)")
    parser.add_argument(
        "--target", default=None, help="class to explain: predicted, label or an index (default: the recipe's)"
    )
    parser.add_argument("--accelerator", default=None, help="Lightning accelerator (default: the recipe's)")
    return parser


def _recipe_objects(configs: Sequence[str], overrides: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """Instantiate the recipe's model, data module and trainer (nothing runs) -> (model, datamodule, monitor, cfg)."""
    args: list[str] = []
    for config in configs:
        args += ["--config", config]
    # No logger or checkpoint callback for the recipe's own trainer: it is only read, never run.
    args += [*overrides, "--trainer.logger=false", "--trainer.enable_checkpointing=false"]
    cli = XAICLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        run=False,
        args=args,
    )
    from lightning_xai import ExplanationMonitor

    monitor = next((cb for cb in cli.trainer.callbacks if isinstance(cb, ExplanationMonitor)), None)
    return cli.model, cli.datamodule, monitor, cli.config


def explain_checkpoint(
    ckpt: str,
    configs: Sequence[str],
    overrides: Sequence[str] = (),
    explainers: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    split: str = "val",
    limit: int | None = None,
    out: str = "runs/explain",
    batch_size: int = 32,
    num_heatmaps: int = 8,
    target: str | int | None = None,
    accelerator: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Explain ``ckpt`` over a split of the recipe's data with an :class:`~lightning_xai.ExplanationMonitor`.

    The recipe's model and data module are built from ``configs`` (+ LightningCLI ``overrides``), the checkpoint's
    weights are loaded by ``trainer.validate(..., ckpt_path=ckpt)``, and a monitor whose probe set covers the split
    (or its first ``limit`` samples) explains it: the values are those the training-time callback logs for the
    same samples and weights, and the files (``<out>/xai/explanations.jsonl``, heatmaps, TensorBoard events under
    ``<out>``) are the same kind.

    Args:
        ckpt: Checkpoint path.
        configs: Recipe YAML file(s).
        overrides: Extra LightningCLI arguments (``--data.init_args.batch_size=8``, ...).
        explainers: Registered explainer names; ``None``: the recipe monitor's explainers (else GradSAM + Random).
        metrics: Metric names (:data:`METRICS`); ``None``: the recipe monitor's metrics (else DeletionAUC).
        split: ``"val"`` or ``"test"``.
        limit: Explain only the first ``limit`` samples.
        out: Output directory.
        batch_size: Samples per explanation pass.
        num_heatmaps: Samples that get heatmaps.
        target: ``"predicted"``, ``"label"`` or a class index; ``None``: the recipe monitor's (else predicted).
        accelerator: Lightning accelerator; ``None``: the recipe's.
        progress: Show progress bars.

    Returns:
        ``{"xai/<method>/<metric>": value}``.
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_xai.explainers import Random, get_explainer

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    model, datamodule, recipe_monitor, config = _recipe_objects(configs, overrides)
    if explainers is not None:
        chosen = [get_explainer(name) for name in explainers]
    elif recipe_monitor is not None:
        # Fresh copies: a Random explainer restarts its own seeded stream, as at the callback's first epoch.
        chosen = [type(e)(seed=e.seed) if isinstance(e, Random) else e for e in recipe_monitor.explainers]
    else:
        chosen = [get_explainer("grad_sam"), get_explainer("random")]
    if metrics is not None:
        scorers = [get_metric(name) for name in metrics]
    elif recipe_monitor is not None:
        scorers = [m.clone() for m in recipe_monitor.metrics]
    else:
        scorers = [get_metric("deletion_auc")]
    if target is None:
        target = recipe_monitor.target if recipe_monitor is not None else "predicted"
    elif isinstance(target, str) and target.lstrip("-").isdigit():
        target = int(target)

    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    total = len(loader.dataset)  # type: ignore[arg-type]
    if total == 0:
        raise ValueError(f"the {split} split of this recipe is empty")
    count = total if limit is None else min(limit, total)
    if split == "test":  # the monitor reads validation batches: validate on the test loader
        datamodule.val_dataloader = datamodule.test_dataloader  # type: ignore[method-assign]
    loader_batch = loader.batch_size or 1
    monitor = _offline_monitor_class()(
        explainers=chosen,
        metrics=scorers,
        num_samples=count,
        target=target,
        num_heatmaps=min(num_heatmaps, count),
        batch_size=batch_size,
        on_error="warn",
        files_dir=os.path.join(out, "xai"),
        show_progress=progress,
    )
    trainer = Trainer(
        accelerator=accelerator or config["trainer"].get("accelerator") or "auto",
        devices=1,
        logger=TensorBoardLogger(save_dir=out, name="", version=""),
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        limit_val_batches=math.ceil(count / loader_batch),
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        # Only the weights matter here: the training run's callbacks are deliberately not restored.
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    scalars = monitor.offline_scalars
    if trainer.is_global_zero:
        header, rows = _method_metric_table(scalars, monitor.log_prefix)
        print(f"\n[lightning-xai] explained {count} {split} samples with {os.path.basename(ckpt)}")
        _print_table("Explanation metrics (method x metric)", header, rows)
        print(f"  files: {os.path.abspath(os.path.join(out, 'xai'))}")
        print(f"  dashboard: {_tensorboard_command()} --logdir {shlex.quote(os.path.abspath(out))}")
    return scalars


def _offline_monitor_class() -> type:
    from lightning_xai import ExplanationMonitor

    class OfflineMonitor(ExplanationMonitor):
        """The callback with a progress bar over its explanation passes and no history inherited from a checkpoint."""

        def __init__(self, *args: Any, show_progress: bool = True, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.show_progress = show_progress
            self.offline_scalars: dict[str, float] = {}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            """Ignore the training run's history stored in the checkpoint: this run starts its own."""

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            """Explain the probe set with a progress bar over the explanation passes."""
            import lightning_xai.callbacks.explanation_monitor as monitor_module

            # The bar counts the monitor's calls of `explain` (one per pass of `batch_size` probe samples) by wrapping
            # the module's reference for the duration of this hook; without that name there is simply no bar.
            original = getattr(monitor_module, "explain", None)
            bar = None
            if self.show_progress and trainer.is_global_zero and original is not None:
                from tqdm.auto import tqdm

                bar = tqdm(total=math.ceil(self._probe_count / self.batch_size), desc="Explaining", unit="batch")

                def counted(*args: Any, **kwargs: Any) -> Any:
                    try:
                        return original(*args, **kwargs)
                    finally:
                        bar.update(1)

                monitor_module.explain = counted
            try:
                super().on_validation_epoch_end(trainer, pl_module)
            finally:
                if bar is not None:
                    monitor_module.explain = original
                    bar.close()
            if self.history:  # this run's only entry (nothing is inherited from the checkpoint)
                self.offline_scalars = dict(self.history[max(self.history)])

    return OfflineMonitor


def _explain(argv: list[str]) -> None:
    """``lightning-xai explain --ckpt CKPT --config RECIPE ...`` (see :func:`explain_checkpoint`)."""
    options, overrides = _explain_parser().parse_known_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        explain_checkpoint(
            options.ckpt,
            options.config,
            overrides,
            explainers=options.explainers,
            metrics=options.metrics,
            split=options.split,
            limit=options.limit,
            out=options.out,
            batch_size=options.batch_size,
            num_heatmaps=options.num_heatmaps,
            target=options.target,
            accelerator=options.accelerator,
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lightning-xai explain: {err}") from err


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
    if args and args[0] == "explain":
        _explain(args[1:])
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
