"""The installed package runs its own recipes: build the wheel, install it in a fresh venv, run the demo."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_installed_wheel_lists_and_runs_its_bundled_recipes_from_an_empty_folder(tmp_path):
    source = tmp_path / "source"  # build from a copy: an in-tree build would write into the checkout
    for name in ("lightning_xai", "recipes"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("lightning_xai-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # the dependencies already installed here, without this checkout's editable lightning_xai (.pth files of an
    # added path are not run, so its editable finder stays off)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run = tmp_path / "empty"
    run.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    where = subprocess.run([str(python), "-c", "import lightning_xai; print(lightning_xai.__file__)"], cwd=run,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout
    cli = str(venv / "bin" / "lightning-xai")
    listed = subprocess.run([cli, "recipes"], cwd=run, env=env, capture_output=True, text=True, check=True).stdout
    assert "minilm_sentiment" in listed and "vit_digits" in listed
    tiny = ["--data.init_args.train_size=32", "--data.init_args.val_size=16", "--data.init_args.batch_size=4"]
    demo = subprocess.run([cli, "demo", "--trainer.fast_dev_run=1", *tiny], cwd=run, env=env, capture_output=True,
                          text=True)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "fit finished" in demo.stdout
    # the demo monitors every seed method (its summary table has one row per method; the log is not a terminal,
    # so a plain line per monitored validation is printed too)
    for method in ("grad_sam", "legrad", "cp_lrp", "attn_lrp", "attention_shapley", "random"):
        assert f"{method}" in demo.stdout, method
    assert "explanations: best deletion_auc" in demo.stdout
    by_name = subprocess.run([cli, "fit", "--config", "vit_digits", "--print_config"], cwd=run, env=env,
                             capture_output=True, text=True)
    assert by_name.returncode == 0 and "DigitsDataModule" in by_name.stdout, by_name.stderr[-2000:]
