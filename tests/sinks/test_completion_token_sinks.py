"""A causal LM's per-completion-token matrices in every sink: W&B images, files (PNG + raw JSON), the HTML report."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lightning_xai.keys import heatmap_path
from lightning_xai.records import CompletionTokens
from lightning_xai.report import build_report
from lightning_xai.sinks import EpochReport, FilesSink, ProbeSample, WandbSink
from lightning_xai.sinks.files import JSONL_NAME
from lightning_xai.viz.render import render_heatmaps


def causal_lm_report(epoch: int = 0) -> EpochReport:
    view = CompletionTokens(["v2", "</s>"], total=3, maps={"attn_lrp": np.array([[0.1, 2.5, 0.0], [0.3, 0.0, -0.2]])})
    sample = ProbeSample(0, None, "completion", 0.9, "completion", tokens=["k1=v2", "k3=v0", "k1"],
                         maps={"attn_lrp": np.array([0.2, 1.0, 0.1])}, signed={"attn_lrp": True},
                         completion_tokens=view)
    plain = ProbeSample(1, None, "completion", 0.8, "completion", tokens=["k2=v1", "k2"],
                        maps={"attn_lrp": np.array([0.5, 0.1])}, signed={"attn_lrp": True})
    return EpochReport(epoch=epoch, step=10 * epoch, scalars={"xai/attn_lrp/completion_tokens_truncated": 1.0},
                       higher_is_better={}, samples=[sample, plain],
                       heatmaps=render_heatmaps([sample, plain], epoch=epoch))


def test_wandb_logs_each_matrix_as_an_image_under_its_own_key():
    wandb = pytest.importorskip("wandb")
    logged = {}
    logger = SimpleNamespace(experiment=SimpleNamespace(define_metric=lambda *a, **k: None),
                             log_metrics=lambda payload, step: logged.update(payload))
    WandbSink(logger).log_epoch(causal_lm_report())
    matrices = sorted(key for key in logged if "/completion_tokens/" in key)
    assert matrices == ["xai/attn_lrp/completion_tokens/sample_00"]
    assert isinstance(logged[matrices[0]], wandb.Image)
    assert "xai/attn_lrp/heatmap/sample_00" in logged and "xai/attn_lrp/tokens/sample_00" in logged  # the map's own


def test_the_files_keep_the_raw_maps_and_the_report_shows_the_matrices(tmp_path):
    sink = FilesSink(tmp_path)
    for epoch in (0, 1):
        sink.log_epoch(causal_lm_report(epoch))
    lines = [json.loads(line) for line in (tmp_path / JSONL_NAME).read_text().splitlines()]
    first, second = lines[-1]["samples"]
    assert first["completion_tokens"] == {"tokens": ["v2", "</s>"], "total": 3,
                                          "maps": {"attn_lrp": [[0.1, 2.5, 0.0], [0.3, 0.0, -0.2]]}}  # raw values
    assert "completion_tokens" not in second
    for epoch in (0, 1):
        assert heatmap_path(tmp_path, epoch, "attn_lrp", 0, view="completion_tokens").is_file()
        assert heatmap_path(tmp_path, epoch, "attn_lrp", 0).is_file()  # the sample's map, where it always was
    assert not heatmap_path(tmp_path, 0, "attn_lrp", 1, view="completion_tokens").exists()
    assert (tmp_path / "evolution" / "attn_lrp" / "completion_tokens" / "sample_00.png").is_file()
    page = build_report(tmp_path)
    assert page.count('alt="attn_lrp per completion token" src="data:image/png;base64,') == 2  # one per epoch
    assert "completion_tokens_truncated" in page  # the health count is charted
