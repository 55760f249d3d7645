"""``lightning-xai explain``: explain a trained checkpoint offline over a whole split, with the engine directly.

The recipe's model and data module are built from its YAML, the checkpoint's weights are loaded into the model,
the split's samples form the probe set, and :func:`~lightning_xai.run.explain_probe_set` explains and scores them
(its ``on_chunk`` drives the progress bar): the values are those the training-time
:class:`~lightning_xai.ExplanationMonitor` logs for the same samples and weights, written as the same files.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from typing import Any

import torch

from lightning_xai._runtime import ErrorPolicy, preserved_rng
from lightning_xai.adapters import as_adapted, default_batch_adapter, default_model_getter
from lightning_xai.callbacks.explanation_monitor import ExplanationMonitor
from lightning_xai.cli.summary import print_explanation_tables, tensorboard_command
from lightning_xai.completion_tokens import DEFAULT_MAX_TOKENS, DEFAULT_SAMPLES, add_completion_tokens
from lightning_xai.explainers import Explainer, Random, get_explainer
from lightning_xai.families import ModelFamily, explainable_model, resolve_family
from lightning_xai.keys import LogKeys
from lightning_xai.metrics import get_metric, list_metrics
from lightning_xai.probe import ProbeSet, forward_parameters
from lightning_xai.run import explain_probe_set, runnable, validate_methods
from lightning_xai.scoring import Scoreboard


def parser() -> argparse.ArgumentParser:
    """The ``explain`` subcommand's arguments."""
    explain = argparse.ArgumentParser(
        prog="lightning-xai explain",
        description="Explain a trained checkpoint offline over a whole dataset split, with the recipe's model and "
        "data module and the recipe monitor's explainers and metrics: writes the same files as during training "
        "(explanations.jsonl, PNG/HTML heatmaps, TensorBoard events) and prints a method x metric table. "
        "Arguments it does not know (e.g. --data.init_args.batch_size=8) are passed to the recipe as LightningCLI "
        "overrides.",
    )
    explain.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt) of the recipe's model")
    explain.add_argument(
        "--config", required=True, action="append", help="the recipe YAML (repeat to layer several files)"
    )
    explain.add_argument(
        "--explainers", nargs="+", default=None, metavar="NAME",
        help="explainer names (lightning_xai.explainers.list_explainers()); default: the recipe monitor's, "
        "else grad_sam random",
    )
    explain.add_argument(
        "--metrics", nargs="+", default=None, metavar="NAME",
        help=f"metric names ({', '.join(list_metrics())}); default: the recipe monitor's, else deletion_auc",
    )
    explain.add_argument("--split", choices=("val", "test"), default="val", help="split to explain (default: val)")
    explain.add_argument("--limit", type=int, default=None, help="explain only the first N samples of the split")
    explain.add_argument("--out", default="runs/explain", help="output directory (default: runs/explain)")
    explain.add_argument("--batch_size", type=int, default=32, help="samples per explanation pass (default: 32)")
    explain.add_argument("--num_heatmaps", type=int, default=8, help="samples that get heatmaps (default: 8)")
    explain.add_argument(
        "--target", default=None, help="class to explain: predicted, label or an index (default: the recipe's)"
    )
    explain.add_argument("--accelerator", default=None, help="cpu, gpu/cuda or auto (default: the recipe's)")
    return explain


def _recipe_objects(configs: Sequence[str], overrides: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """Instantiate the recipe's model, data module and monitor (nothing runs) -> (model, datamodule, monitor, cfg)."""
    from lightning_xai.cli.train import recipe_cli, recipe_config

    args: list[str] = []
    for config in configs:
        args += ["--config", recipe_config(config)]  # a run's saved config.yaml works as well as the recipe
    # No logger for the recipe's own trainer: it is only read, never run (a recipe's ModelCheckpoint stays idle).
    args += [*overrides, "--trainer.logger=false"]
    cli = recipe_cli(args, save_config_callback=None, run=False)
    monitor = next((cb for cb in cli.trainer.callbacks if isinstance(cb, ExplanationMonitor)), None)
    return cli.model, cli.datamodule, monitor, cli.config


def _device(accelerator: str | None) -> torch.device:
    """``cpu``, ``gpu``/``cuda`` or ``auto`` (CUDA when available) as a torch device."""
    if accelerator in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator in ("gpu", "cuda"):
        return torch.device("cuda")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise ValueError(f"accelerator must be cpu, gpu, cuda or auto, got {accelerator!r}")


def _load_weights(model: Any, ckpt: str) -> None:
    """The checkpoint's weights into the LightningModule, through its own ``on_load_checkpoint`` hook."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    if "state_dict" not in checkpoint:
        raise ValueError(f"{ckpt} is not a Lightning checkpoint (no state_dict)")
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])


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
    """Explain ``ckpt`` over a split of the recipe's data, with the engine the monitor uses.

    Args:
        ckpt: Checkpoint path.
        configs: Recipe YAML file(s).
        overrides: Extra LightningCLI arguments (``--data.init_args.batch_size=8``, ...).
        explainers: Registered explainer names; ``None``: the recipe monitor's explainers (else GradSAM + Random).
        metrics: Registered metric names; ``None``: the recipe monitor's metrics (else DeletionAUC).
        split: ``"val"`` or ``"test"``.
        limit: Explain only the first ``limit`` samples.
        out: Output directory: ``<out>/xai`` (files, as the monitor writes them) and TensorBoard events in ``<out>``.
        batch_size: Samples per explanation pass.
        num_heatmaps: Samples that get heatmaps.
        target: ``"predicted"``, ``"label"`` or a class index; ``None``: the recipe monitor's (else predicted).
        accelerator: ``cpu``, ``gpu``/``cuda`` or ``auto``; ``None``: the recipe's.
        progress: Show a progress bar over the explanation passes.

    Returns:
        ``{"xai/<method>/<metric>": value}`` and the other logged keys (gains, agreement).
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    module, datamodule, recipe_monitor, config = _recipe_objects(configs, overrides)
    chosen, scorers = _methods(recipe_monitor, explainers, metrics)
    if target is None:
        target = recipe_monitor.target if recipe_monitor is not None else "predicted"
    elif isinstance(target, str) and target.lstrip("-").isdigit():
        target = int(target)
    _load_weights(module, ckpt)
    device = _device(accelerator or config["trainer"].get("accelerator"))
    module.to(device)

    # a causal LM is explained through its CompletionScorer, as the callback does
    model = explainable_model((getattr(recipe_monitor, "model_getter", None) or default_model_getter)(module))
    family = resolve_family(model)
    tokenizer = getattr(recipe_monitor, "tokenizer", None) or getattr(datamodule, "tokenizer", None)
    tokenizer = tokenizer if tokenizer is not None else getattr(module, "tokenizer", None)
    modality = family.build_modality(tokenizer, getattr(recipe_monitor, "removal", None))
    policy = ErrorPolicy("warn", owner="lightning-xai explain")
    chosen, scorers = runnable(family, modality, chosen, scorers, policy)

    probe = _probe(datamodule, split, limit, getattr(recipe_monitor, "batch_adapter", None), forward_parameters(model),
                   family)
    keys = LogKeys(getattr(recipe_monitor, "log_prefix", "xai/"))
    random = next((e.name for e in chosen if isinstance(e, Random)), None)
    scoreboard = Scoreboard([e.name for e in chosen], scorers, keys, policy, random)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=probe.count, desc="Explaining", unit="sample")
    try:
        with preserved_rng(device):
            data = probe.collate(modality)
            result = explain_probe_set(
                model, data, chosen, scoreboard, family=family, modality=modality, device=device,
                target=target, batch_size=batch_size, num_heatmaps=min(num_heatmaps, probe.count), policy=policy,
                on_chunk=None if bar is None else bar.update,
            )
            add_completion_tokens(  # causal LMs: the recipe monitor's per-completion-token view, as the callback's
                result, model, data, chosen, family=family, modality=modality, keys=keys, device=device,
                num_samples=getattr(recipe_monitor, "completion_token_samples", DEFAULT_SAMPLES),
                max_tokens=getattr(recipe_monitor, "completion_token_limit", DEFAULT_MAX_TOKENS),
                batch_size=batch_size, policy=policy,
            )
    finally:
        if bar is not None:
            bar.close()
    scalars = {key: float(value) for key, value in result.values.items() if not torch.isnan(value)}
    _write(out, result, scalars, keys, policy)
    print(f"\n[lightning-xai] explained {probe.count} {split} samples with {os.path.basename(ckpt)}")
    print_explanation_tables(scalars, keys.prefix, directions=_directions(result.higher_is_better, keys))
    print(f"  files: {os.path.abspath(os.path.join(out, 'xai'))}")
    print(f"  dashboard: {tensorboard_command()} --logdir {shlex.quote(os.path.abspath(out))}")
    return scalars


def _directions(higher_is_better: dict[str, bool], keys: LogKeys) -> dict[str, bool]:
    """Metric name -> higher is better, from the run's per-key directions (a LeRF deletion is higher-better)."""
    found = {}
    for key, higher in higher_is_better.items():
        parsed = keys.parse(key)
        if parsed is not None and parsed.kind == "score":
            found[parsed.metric] = bool(higher)
    return found


def _methods(
    recipe_monitor: Any, explainers: Sequence[str] | None, metrics: Sequence[str] | None
) -> tuple[list[Explainer], list[Any]]:
    """Explainers and metrics by name, else the recipe monitor's (fresh copies), else Grad-SAM + Random, deletion."""
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
    return validate_methods(chosen, scorers)


def _probe(
    datamodule: Any, split: str, limit: int | None, adapter: Any, input_keys: set[str] | None,
    family: ModelFamily | None = None,
) -> ProbeSet:
    """The first ``limit`` samples of the split (all of it by default) as a probe set.

    Each batch is adapted as ``family`` takes it (a causal LM's labels become an input), as the callback does.
    """
    datamodule.prepare_data()
    datamodule.setup("validate" if split == "val" else "test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    total = len(loader.dataset)  # type: ignore[arg-type]
    if total == 0:
        raise ValueError(f"the {split} split of this recipe is empty")
    probe = ProbeSet(total if limit is None else min(limit, total), input_keys)
    for batch in loader:
        adapted = as_adapted(adapter(batch)) if adapter else default_batch_adapter(batch)
        probe.add(adapted if family is None else family.adapt_batch(adapted))
        if probe.full:
            break
    probe.close()
    return probe


def _write(out: str, result: Any, scalars: dict[str, float], keys: LogKeys, policy: ErrorPolicy) -> None:
    """The monitor's files under ``<out>/xai`` and TensorBoard events (scalars, heatmaps) in ``<out>``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_xai.sinks import FilesSink, TensorBoardSink, publish

    logger = TensorBoardLogger(save_dir=out, name="", version="")
    logger.log_metrics(scalars, step=0)
    publish([TensorBoardSink(logger), FilesSink(os.path.join(out, "xai"))], result, scalars, epoch=0, step=0,
            keys=keys, policy=policy)
    logger.finalize("success")


def run(argv: list[str]) -> None:
    """``lightning-xai explain --ckpt CKPT --config RECIPE ...`` (see :func:`explain_checkpoint`)."""
    options, overrides = parser().parse_known_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        explain_checkpoint(
            options.ckpt, options.config, overrides, explainers=options.explainers, metrics=options.metrics,
            split=options.split, limit=options.limit, out=options.out, batch_size=options.batch_size,
            num_heatmaps=options.num_heatmaps, target=options.target, accelerator=options.accelerator,
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lightning-xai explain: {err}") from err
