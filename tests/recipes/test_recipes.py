"""Every recipe: --print_config, a fast_dev_run (tiny local stand-ins where the real model is too big), shared
settings; and `lightning-xai explain` reproducing the callback's metric values on a saved tiny checkpoint."""

import json
from pathlib import Path

import pytest
import yaml

from lightning_xai import cli

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ALL = sorted(p.stem for p in RECIPES.glob("*.yaml"))
pytestmark = pytest.mark.filterwarnings("ignore:The number of training batches", "ignore:.*log_every_n_steps.*")
TINY_VIT = [
    "--model.init_args.hidden_size=16",
    "--model.init_args.num_layers=1",
    "--model.init_args.num_heads=2",
    "--data.init_args.batch_size=16",
]


def _sandbox(tmp_path: Path) -> list[str]:
    return [f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]


def _stand_ins(name: str, tmp_path: Path, tiny_bert_dir, tiny_vit_dir, text_csvs, image_folder) -> list[str]:
    """Overrides that make a recipe run offline in seconds."""
    if name == "vit_digits":  # the recipe explains every 5th epoch: explain the only one
        return [*TINY_VIT, "--trainer.callbacks.init_args.every_n_epochs=1"]
    if name == "minilm_shortcut":  # the tiny BERT's vocabulary covers the generator's words
        return [
            f"--model.init_args.model_name_or_path={tiny_bert_dir}",
            f"--data.init_args.model_name_or_path={tiny_bert_dir}",
            "--data.init_args.train_size=16",
            "--data.init_args.val_size=8",
            "--data.init_args.batch_size=8",
        ]
    if name == "minilm_sentiment":
        return ["--data.train_size=32", "--data.val_size=16", "--data.test_size=16", "--data.batch_size=16"]
    if name == "bert_sst2":
        train, val = text_csvs
        return [
            f"--model.init_args.model_name_or_path={tiny_bert_dir}",
            "--data=lightning_xai.recipes.TextFileDataModule",
            f"--data.init_args.train_path={train}",
            f"--data.init_args.val_path={val}",
            "--data.init_args.text_column=sentence",
            f"--data.init_args.model_name_or_path={tiny_bert_dir}",
            "--data.init_args.num_workers=0",
        ]
    if name == "vit_cifar10":
        return [
            f"--model.init_args.model_name_or_path={tiny_vit_dir}",
            "--model.init_args.num_labels=2",
            "--data=lightning_xai.recipes.ImageFolderDataModule",
            f"--data.init_args.root={image_folder}",
            "--data.init_args.image_size=16",
            "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=0",
        ]
    if name == "tiny_lm_retrieval":  # already tiny and offline (a Llama from a config, generated data)
        return ["--data.init_args.train_size=32", "--data.init_args.val_size=8", "--data.init_args.batch_size=8"]
    raise AssertionError(f"no stand-in for the new recipe {name}: add one here")


def test_recipes_share_the_base_settings():
    # Each recipe is self-contained (`lightning-xai fit --config recipes/<name>.yaml` needs one file): the shared
    # "base" is this contract instead of a second --config file.
    assert set(ALL) >= {"minilm_sentiment", "minilm_shortcut", "vit_digits", "bert_sst2", "vit_cifar10"}
    for name in ALL:
        config = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        assert config["seed_everything"] == 0, name
        trainer = config["trainer"]
        assert trainer["devices"] == 1 and trainer["accelerator"] in ("cpu", "auto"), name
        logger = trainer["logger"]
        assert logger["class_path"] == "lightning.pytorch.loggers.TensorBoardLogger", name
        assert logger["init_args"] == {"save_dir": "runs", "name": name}, name
        (monitor,) = [c for c in trainer["callbacks"] if c["class_path"] == "lightning_xai.ExplanationMonitor"]
        others = {c["class_path"] for c in trainer["callbacks"]} - {"lightning_xai.ExplanationMonitor"}
        assert others <= {"lightning.pytorch.callbacks.ModelCheckpoint", "lightning_xai.ConceptMonitor"}, name
        # the methods, as class paths or registered names: Grad-SAM first, a Random baseline among them
        explainers = [e if isinstance(e, str) else e["class_path"].rsplit(".", 1)[1] for e in
                      monitor["init_args"]["explainers"]]
        assert explainers[0] in ("GradSAM", "grad_sam") and {"Random", "random"} & set(explainers), name
        assert config["model"]["class_path"].startswith("lightning_xai.recipes."), name


@pytest.mark.parametrize("name", ALL)
def test_print_config(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", str(RECIPES / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    source = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    assert config["model"]["class_path"] == source["model"]["class_path"]
    assert config["data"]["init_args"].items() >= source["data"]["init_args"].items()


# test_cli.py runs minilm_sentiment; test_lora_sft.py runs lora_sft (its stand-in is a tiny Llama folder + rows)
@pytest.mark.parametrize("name", [n for n in ALL if n not in ("minilm_sentiment", "lora_sft")])
def test_fast_dev_run(name, tmp_path, monkeypatch, capsys, tiny_bert_dir, tiny_vit_dir, text_csvs, image_folder):
    monkeypatch.chdir(tmp_path)
    overrides = _stand_ins(name, tmp_path, tiny_bert_dir, tiny_vit_dir, text_csvs, image_folder)
    cli.main(
        ["fit", "--config", str(RECIPES / f"{name}.yaml"), "--trainer.fast_dev_run=1", *overrides, *_sandbox(tmp_path)]
    )
    out = capsys.readouterr().out
    assert "fit finished" in out
    assert "Explanation metrics" in out  # the monitor ran on the validation batch


def _scalars(jsonl: Path) -> dict:
    return json.loads(jsonl.read_text().splitlines()[-1])["scalars"]


def test_explain_reproduces_the_callback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = str(RECIPES / "vit_digits.yaml")
    cli.main(
        [
            "fit",
            "--config",
            recipe,
            *TINY_VIT,
            *_sandbox(tmp_path),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks.init_args.every_n_epochs=1",
        ]
    )
    run = tmp_path / "runs" / "vit_digits" / "version_0"
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    trained = _scalars(run / "xai" / "explanations.jsonl")
    # On the 1-layer stand-in, Grad-SAM (query axis) puts everything on the [CLS] row: its patch maps are all zero,
    # so they are counted as degenerate and not scored (no deletion AUC, gain or agreement for grad_sam).
    assert {"xai/random/deletion_auc", "xai/grad_sam/degenerate_samples"} <= set(trained)
    assert trained["xai/grad_sam/degenerate_samples"] == 32 and "xai/grad_sam/deletion_auc" not in trained
    capsys.readouterr()

    out = tmp_path / "offline"
    cli.main(
        [
            "explain",
            "--ckpt",
            str(ckpt),
            "--config",
            recipe,
            "--limit",
            "32",
            "--out",
            str(out),
            "--num_heatmaps",
            "1",
            *TINY_VIT,
        ]
    )
    printed = capsys.readouterr()
    offline = _scalars(out / "xai" / "explanations.jsonl")
    assert offline.keys() == trained.keys()
    for key, value in trained.items():
        assert offline[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert "method" in printed.out and "grad_sam" in printed.out and "deletion_auc" in printed.out
    assert f"{trained['xai/random/deletion_auc']:.4f}" in printed.out and "degenerate_samples" in printed.out
    assert "Explaining" in printed.err  # the progress bar
    assert list((out / "xai").glob("epoch_*/grad_sam/sample_00.png"))
    assert list(out.glob("events.out.tfevents.*"))

    # chosen by name, on the test split
    cli.main(
        [
            "explain",
            "--ckpt",
            str(ckpt),
            "--config",
            recipe,
            "--explainers",
            "raw_attention",
            "--metrics",
            "deletion_auc",
            "insertion_auc",
            "--split",
            "test",
            "--limit",
            "8",
            "--out",
            str(tmp_path / "t"),
            *TINY_VIT,
        ]
    )
    assert set(_scalars(tmp_path / "t" / "xai" / "explanations.jsonl")) == {
        "xai/raw_attention/deletion_auc",
        "xai/raw_attention/insertion_auc",
    }


def test_explain_errors(tmp_path):
    recipe = str(RECIPES / "vit_digits.yaml")
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["explain", "--ckpt", str(tmp_path / "missing.ckpt"), "--config", recipe])
    with pytest.raises(ValueError, match="Registered metrics: .*deletion_auc"):
        cli.get_metric("nope")
