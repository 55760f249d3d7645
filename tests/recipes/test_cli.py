"""The lightning-xai CLI: fit/validate/test through LightningCLI, demo, --print_config and the run summary."""

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lightning_xai import cli

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "minilm_sentiment.yaml"
# Short runs with few batches: silence Lightning's hint about log_every_n_steps.
pytestmark = pytest.mark.filterwarnings("ignore:The number of training batches")
SEED_METHODS = ["grad_sam", "legrad", "cp_lrp", "attn_lrp", "attention_shapley", "random"]
TINY_DATA = ["--data.train_size=32", "--data.val_size=16", "--data.test_size=16", "--data.batch_size=16"]


def LOG_DIR(tmp_path: Path) -> Path:  # noqa: N802 (reads as the constant it is, per test)
    return tmp_path / "runs" / "minilm_sentiment" / "version_0"


def _no_callbacks_recipe(tmp_path: Path) -> Path:
    """The real recipe minus the explanation monitor (so these tests do not depend on it)."""
    config = yaml.safe_load(RECIPE.read_text())
    config["trainer"].pop("callbacks", None)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sandbox(tmp_path: Path) -> list[str]:
    # Nothing may be written into the repository.
    return [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]


def test_recipe_defaults_are_the_documented_ones():
    config = yaml.safe_load(RECIPE.read_text())
    assert config["seed_everything"] == 0
    trainer = config["trainer"]
    assert trainer["max_epochs"] == 2 and trainer["accelerator"] == "cpu" and trainer["devices"] == 1
    assert trainer["logger"]["class_path"] == "lightning.pytorch.loggers.TensorBoardLogger"
    assert "num_sanity_val_steps" not in trainer
    assert [c["class_path"] for c in trainer["callbacks"]] == [
        "lightning.pytorch.callbacks.ModelCheckpoint", "lightning_xai.ExplanationMonitor"
    ]
    assert trainer["callbacks"][0]["init_args"] == {"save_last": True, "save_top_k": 0, "save_weights_only": True}
    monitor = trainer["callbacks"][1]["init_args"]
    assert monitor["explainers"] == SEED_METHODS
    assert config["model"]["class_path"] == "lightning_xai.recipes.TextClassifier"
    assert config["data"]["class_path"] == "lightning_xai.recipes.SentimentDataModule"


def test_fit_fast_dev_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "fit",
            "--config",
            str(_no_callbacks_recipe(tmp_path)),
            "--trainer.fast_dev_run=1",
            *TINY_DATA,
            *_sandbox(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "fit finished" in out
    assert "no explanation metrics were logged" in out


def test_fit_then_summary_points_at_tensorboard(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "fit",
            "--config",
            str(_no_callbacks_recipe(tmp_path)),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *TINY_DATA,
            *_sandbox(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    log_dir = tmp_path / "runs" / "minilm_sentiment" / "version_0"
    assert list(log_dir.glob("events.out.tfevents.*"))
    assert (log_dir / "config.yaml").is_file()
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in out
    assert f"logs: {log_dir}" in out


def test_print_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", str(_no_callbacks_recipe(tmp_path)), "--data.train_size=99", "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["init_args"]["train_size"] == 99
    assert config["model"]["init_args"]["learning_rate"] == pytest.approx(1e-4)


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "demo"):
        assert name in out
    assert "predict" not in out


def test_demo_without_recipe_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "DEMO_CONFIG", tmp_path / "missing.yaml")
    with pytest.raises(SystemExit, match="demo recipe .*missing.yaml was not found"):
        cli.main(["demo"])


def test_demo_points_at_the_recipe():
    assert cli.demo_config_path() == RECIPE


def test_summary_table_from_callback_history(capsys):
    monitor = SimpleNamespace(
        history={
            0: {"xai/grad_sam/deletion_auc": 0.25, "xai/random/deletion_auc": 0.5},
            1: {"xai/grad_sam/deletion_auc": 0.125},
        }
    )
    trainer = SimpleNamespace(
        is_global_zero=True, loggers=[], log_dir=None, callbacks=[object(), monitor], callback_metrics={}
    )
    cli.print_run_summary(trainer, "fit")
    out = capsys.readouterr().out
    assert "Explanation metrics at epoch 1 (the last of 2 validations)" in out
    # each key's latest value: grad_sam's of epoch 1, random's of epoch 0
    assert _row(out, "grad_sam") == ["0.1250"] and _row(out, "random (baseline)") == ["0.5000"]
    assert "deletion_auc (lower is better)" in out


def test_summary_falls_back_to_callback_metrics(capsys):
    import torch

    trainer = SimpleNamespace(
        is_global_zero=True,
        loggers=[],
        log_dir=None,
        callbacks=[],
        callback_metrics={"xai/grad_sam/deletion_auc": torch.tensor(0.75), "val/acc": 0.5},
    )
    cli.print_run_summary(trainer, "validate")
    out = capsys.readouterr().out
    assert _row(out, "grad_sam") == ["0.7500"] and "val/acc" not in out


def _row(out: str, name: str) -> list[str]:
    """The cells after ``name`` in the table row that starts with it."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").strip("│ ").split("│")]
        if cells and cells[0] == name:
            return cells[1:]
    raise AssertionError(f"no row {name!r} in:\n{out}")


#: Six methods (names as long as the registry's), the baseline and four metrics, as the monitor logs them.
SIX = ["grad_sam", "attention_shapley", "integrated_gradients", "gradient_x_input", "raw_attention", "attn_lrp"]
FOUR = ["deletion_auc", "insertion_auc", "aopc_comprehensiveness", "aopc_sufficiency"]


def _six_method_scalars() -> dict[str, float]:
    scalars = {}
    methods = [*SIX, "random"]
    for i, method in enumerate(methods):
        for j, metric in enumerate(FOUR):
            scalars[f"xai/{method}/{metric}"] = -0.5 + 0.1 * i + 0.01 * j
            if method != "random":
                scalars[f"xai/{method}/{metric}_gain_vs_random"] = -12.5 + i
        scalars[f"xai/{method}/stability"] = 0.5
        scalars[f"xai/{method}/degenerate_samples"] = float(i == 2)
        scalars[f"xai/{method}/skipped_samples"] = 0.0
    for i, first in enumerate(methods):
        for second in methods[i + 1 :]:
            scalars[f"xai/agreement/{first}_vs_{second}"] = -0.25
    return scalars


def _check_fits_80_columns(out: str) -> None:
    lines = out.splitlines()
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in out  # nothing truncated, headers included
    tables = out.split("Gain over random")[0]
    assert _row(tables, "method")[:4] == ["del↓", "ins↑", "comp↑", "suff↓"]  # short names with directions
    for method in SIX:
        assert len(_row(tables, method)) >= 4
    assert len(_row(tables, "random (baseline)")) >= 4
    names = [line.split("│")[1].strip() for line in tables.splitlines() if line.startswith("│")]
    assert "(1/2)" not in tables  # four metrics and stability fit side by side
    assert names == [*SIX, "random (baseline)"]  # agreement is not a method row
    legend = " ".join(line.strip() for line in tables.splitlines() if not line.startswith(("┃", "│", "┏", "┡", "└")))
    for short, metric, direction in (("del↓", "deletion_auc", "lower"), ("ins↑", "insertion_auc", "higher"),
                                     ("comp↑", "aopc_comprehensiveness", "higher"),
                                     ("suff↓", "aopc_sufficiency", "lower")):
        assert f"{short} {metric} ({direction} is better)" in legend
    # counts are a line under the table, naming only the methods where they are not zero
    assert "degenerate_samples (all-zero or one-hot maps, not scored): integrated_gradients 1" in legend
    assert "skipped_samples" not in legend
    # gains: one row per method, no baseline row
    gains = out.split("Gain over random")[1].split("Agreement between methods")[0]
    assert _row(gains, "grad_sam") == ["-12.5000"] * 4 and "random" not in gains.split("\n", 1)[1]
    # agreement: its own table, pairs as rows
    agreement = out.split("Agreement between methods")[1]
    assert _row(agreement, "grad_sam vs attention_shapley") == ["-0.2500"]
    assert sum(" vs " in line for line in agreement.splitlines()) == 21


def test_tables_of_six_methods_fit_80_columns(capsys, monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "80")
    from lightning_xai.cli.summary import print_explanation_tables

    print_explanation_tables(_six_method_scalars(), "xai/")
    _check_fits_80_columns(capsys.readouterr().out)


def test_fit_summary_of_six_methods_fits_80_columns(capsys, monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "80")
    scalars = _six_method_scalars()
    monitor = SimpleNamespace(history={0: scalars, 1: scalars})
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], log_dir=None, callbacks=[monitor], callback_metrics={})
    cli.print_run_summary(trainer, "fit")
    _check_fits_80_columns(capsys.readouterr().out)


def test_tables_too_wide_for_the_terminal_are_split_not_cut(capsys, monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "60")
    from lightning_xai.cli.summary import print_explanation_tables

    print_explanation_tables(_six_method_scalars(), "xai/")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 60 and "…" not in out
    assert "(1/2)" in out and "(2/2)" in out
    cells = _row(out.split("(2/2)")[1], "grad_sam")
    assert cells and all(c for c in cells)


def test_plain_text_tables_without_rich(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_rich(name, *args, **kwargs):
        if name.startswith("rich"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rich)
    monkeypatch.setenv("COLUMNS", "80")
    from lightning_xai.cli.summary import print_explanation_tables

    print_explanation_tables(_six_method_scalars(), "xai/")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "random (baseline)" in out and "grad_sam vs random" in out


def test_summary_only_on_rank_zero(capsys):
    cli.print_run_summary(SimpleNamespace(is_global_zero=False), "fit")
    assert capsys.readouterr().out == ""


def test_demo_monitors_every_seed_method_and_prints_the_next_commands(tmp_path, capsys, monkeypatch):
    """The demo recipe: every seed method x every metric logged, progress lines (capsys is not a terminal), a last
    checkpoint, and closing lines whose ``explain`` command runs as printed (the run's saved config included)."""
    monkeypatch.chdir(tmp_path)
    # Not fast_dev_run (it saves no checkpoint and logs nothing): one short epoch, a probe set of 4 tweets.
    cli.main(
        [
            "demo",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_model_summary=false",
            "--data.train_size=8",
            "--data.val_size=4",
            "--data.test_size=4",
            "--data.batch_size=4",
            "--data.max_length=24",
            *_sandbox(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "fit finished" in out
    record = [json.loads(line) for line in (LOG_DIR(tmp_path) / "xai" / "explanations.jsonl").read_text().splitlines()]
    scalars = record[0]["scalars"]
    for method in SEED_METHODS:
        for metric in ("deletion_auc", "aopc_comprehensiveness", "aopc_sufficiency"):
            assert f"xai/{method}/{metric}" in scalars, (method, metric)
    assert "epoch 1/1 · validated in" in out and "epoch 1/1 · explanations: best deletion_auc" in out
    checkpoint = LOG_DIR(tmp_path) / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    explain_line = next(line for line in out.splitlines() if " explain --ckpt " in line)
    report_line = next(line for line in out.splitlines() if " report " in line)
    assert str(checkpoint.relative_to(tmp_path)) in explain_line and "config.yaml" in explain_line
    assert "xai -o" in report_line

    explain_args = shlex.split(explain_line.split(": ", 1)[1])[1:]  # as printed, minus the program
    cli.main([*explain_args, "--limit", "4", "--batch_size", "4", "--num_heatmaps", "0", "--out", "explained"])
    explained = (tmp_path / "explained" / "xai" / "explanations.jsonl").read_text().splitlines()
    assert set(json.loads(explained[0])["scalars"]) >= {f"xai/{method}/deletion_auc" for method in SEED_METHODS}


def test_text_classifier_module():
    import torch

    from lightning_xai.recipes import TextClassifier

    module = TextClassifier(learning_rate=1e-3, warmup_ratio=0.5)
    assert module.model.training  # from_pretrained leaves eval mode; fine-tuning needs dropout on
    logits = module(
        input_ids=torch.tensor([[101, 7592, 102], [101, 102, 0]]), attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]])
    )
    assert logits.shape == (2, 3)

    module._trainer = SimpleNamespace(
        estimated_stepping_batches=10, datamodule=SimpleNamespace(label_names=["a", "b", "c"])
    )
    module.setup("fit")
    assert module.label_names == ["a", "b", "c"] and module.model.config.id2label == {0: "a", 1: "b", 2: "c"}

    config = module.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all("LayerNorm" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"])
    assert config["lr_scheduler"]["interval"] == "step"
    scheduler = config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        config["optimizer"].step()
        scheduler.step()
    assert lrs[0] < lrs[4] < lrs[5] == pytest.approx(1e-3) and lrs[9] < lrs[6]


def test_every_health_count_is_a_line_under_the_table_not_a_score_column():
    """A causal LM's completion-token counts, like the skipped and degenerate counts, are never a metric column."""
    from lightning_xai.cli.summary import count_lines, method_metric_table
    from lightning_xai.keys import HEALTH_COUNTS

    scalars = {"xai/attn_lrp/deletion_auc": 0.3, "xai/random/deletion_auc": 0.5}
    scalars |= {f"xai/attn_lrp/{suffix}": 2.0 for suffix in HEALTH_COUNTS}
    _, _, columns = method_metric_table(scalars, "xai/")
    assert [column.metric for column in columns] == ["deletion_auc"]
    lines = count_lines(scalars, "xai/")
    assert len(lines) == len(HEALTH_COUNTS) and all(line.endswith(": attn_lrp 2") for line in lines)
    assert any(line.startswith("completion_tokens_truncated (") for line in lines)
