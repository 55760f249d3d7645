"""The monitor's ``token_budget`` counts rows x tokens for a streamed pass, rows x tokens^2 otherwise (issue 13).

A pass on the model's sdpa attention (``GradSAM(attention="sdpa")``, no method needing the maps) never forms a
``T x T`` map, so its chunks are bounded by rows x T; a method whose own pass may form the maps (LRP on the eager
attention) keeps rows x T^2, LRP on sdpa (also its default "auto" on a model configured with sdpa) does not.
"""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "families"))
from test_causal_lm import fit, retrieval_rows  # noqa: E402

from lightning_xai import ExplanationMonitor  # noqa: E402
from lightning_xai.explainers import AttnLRP, GradientXInput, GradSAM  # noqa: E402
from lightning_xai.metrics import DeletionAUC  # noqa: E402

WIDTH = retrieval_rows(1, 1)[0]["input_ids"].numel()  # every probe row has this many tokens


class Recording(GradSAM):
    """Grad-SAM that records the rows of every chunk it explains."""

    def __init__(self, seen: list[int], **kwargs):
        super().__init__(**kwargs)
        self.seen = seen

    def explain(self, forward):
        self.seen.append(forward.valid_mask.shape[0])
        return super().explain(forward)


def chunks(tmp_path, attention: str, token_budget: int, others=()):
    seen: list[int] = []
    monitor = ExplanationMonitor(
        explainers=[Recording(seen, attention=attention), *others],
        metrics=[DeletionAUC(steps=2)],
        num_samples=6,
        num_heatmaps=0,
        batch_size=8,
        token_budget=token_budget,
        on_error="raise",
        write_files=False,
    )
    fit(tmp_path, monitor)
    return seen[: len(seen) // 2], monitor.history[1]  # the first of the two epochs' chunks


@pytest.mark.parametrize(
    ("attention", "others", "expected"),
    [
        ("sdpa", (), [6]),  # rows x T: 2 * T^2 // T = 2 T rows, capped by the 6 probe samples
        ("sdpa", (GradientXInput(),), [6]),  # reads the streamed pass's input embeddings: still rows x T
        ("eager", (), [2, 2, 2]),  # the recorded T x T maps: 2 rows per chunk
        ("sdpa", (AttnLRP(attention="eager"),), [2, 2, 2]),  # LRP's own pass on the eager attention: rows x T^2
        ("sdpa", (AttnLRP(attention="sdpa"),), [6]),  # its own pass on sdpa forms no map either: rows x T
        ("sdpa", (AttnLRP(),), [6]),  # "auto" on a model configured with sdpa: the same
    ],
)
def test_the_token_budget_counts_rows_x_tokens_for_a_streamed_pass(tmp_path, attention, others, expected):
    seen, _ = chunks(tmp_path, attention, 2 * WIDTH * WIDTH, others)
    assert seen == expected


def test_larger_streamed_chunks_log_the_same_values(tmp_path):
    """One chunk of 6 rows (rows x T) and six chunks of 1 row (a budget of one row) log the same scores."""
    seen, large = chunks(tmp_path / "a", "sdpa", 2 * WIDTH * WIDTH)
    single, small = chunks(tmp_path / "b", "sdpa", WIDTH)
    assert seen == [6] and single == [1] * 6
    value = large["xai/grad_sam/deletion_auc"]
    assert math.isfinite(value) and value == pytest.approx(small["xai/grad_sam/deletion_auc"], abs=1e-6)
