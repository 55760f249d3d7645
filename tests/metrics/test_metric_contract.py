"""Every registered metric x every model family through the metric tester (``_tester.py``), and the registry.

Class (accumulated over 2 batches) == functional == slow reference, batched == per-sample, ``state_dict`` round trip,
the ``update(explanation, context)`` contract, and 2-process DDP (gloo) == single process.
"""

import pytest
import torch
from _tester import MASK, UNK, MetricCase, MetricTester, Sample, make_setup, perturbation_case, prefix_tokens
from helpers import FAMILIES, PATCH
from reference import faithfulness as ref
from reference import relations as rel
from reference import road as road_ref

from lightning_xai.metrics import (
    DeletionAUC,
    LeaveOneOutTau,
    Plausibility,
    aopc_comprehensiveness,
    aopc_sufficiency,
    area_between_curves,
    au_mse,
    auac,
    aupc,
    deletion_auc,
    get_metric,
    insertion_auc,
    leave_one_out_tau,
    list_metrics,
    log_odds,
    map_agreement,
    plausibility,
    register_metric,
    road,
)

ROAD_FRACTIONS = (0.2, 0.5, 0.8)
#: Names ``lightning-xai explain --metrics`` accepts (``cli.METRICS`` before the registry moved here).
CLI_NAMES = ("deletion_auc", "insertion_auc", "aopc_comprehensiveness", "aopc_sufficiency", "log_odds", "road",
             "area_between_curves", "leave_one_out_tau", "aupc", "auac", "au_mse", "plausibility")
ALIASES = {"leave_one_out_tau": "taucorr_loo"}


def _curve(s: Sample, **kwargs):
    return ref.curve_reference(s.forward, s.ids, s.content, s.relevance, s.target, MASK, 3, **kwargs)


def _road_reference(s: Sample):
    prefix = prefix_tokens(s.family)
    perturbed = road_ref.road_images_reference(s.pixels.numpy(), s.relevance, PATCH, prefix, ROAD_FRACTIONS,
                                               "morf", 0.01)
    return road_ref.road_value_reference(s.model, perturbed, s.target, "prob")


def _gain_functional(batch):
    ctx = batch.context
    pair = [deletion_auc(ctx.forward, ctx.inputs, exp, ctx.modality, steps=3, reduction="none")
            for exp in (batch.explanation, ctx.reference)]
    return torch.stack(pair, dim=1)


def _gain_reference(s: Sample):
    return _curve(s), ref.curve_reference(s.forward, s.ids, s.content, s.reference, s.target, MASK, 3)


ANY_MODALITY = frozenset({"text", "vision"})
CASES = [
    perturbation_case("deletion_auc", deletion_auc, _curve, steps=3),
    perturbation_case("insertion_auc", insertion_auc, lambda s: _curve(s, insertion=True), steps=3),
    perturbation_case("aopc_comprehensiveness", aopc_comprehensiveness,
                      lambda s: ref.aopc_reference(s.forward, s.ids, s.content, s.relevance, s.target, MASK, "eraser")),
    perturbation_case("aopc_sufficiency", aopc_sufficiency,
                      lambda s: ref.aopc_reference(s.forward, s.ids, s.content, s.relevance, s.target, MASK, "eraser",
                                                   sufficiency=True)),
    perturbation_case("log_odds", log_odds,
                      lambda s: ref.log_odds_reference(s.forward, s.ids, s.content, s.relevance, s.target, MASK)),
    perturbation_case("road", road, _road_reference, frozenset({"vision"}), fractions=ROAD_FRACTIONS),
    perturbation_case("area_between_curves", area_between_curves,
                      lambda s: _curve(s, order="lerf") - _curve(s), steps=3, score="prob"),
    perturbation_case("taucorr_loo", leave_one_out_tau,
                      lambda s: ref.loo_tau_reference(s.forward, s.ids, s.content, s.relevance, s.target, MASK)),
    *(perturbation_case(name, functional, lambda s, kind=name: ref.ali_reference(
        s.forward, s.ids, s.content, s.relevance, s.target, UNK, kind, steps=3), steps=3)
      for name, functional in (("aupc", aupc), ("auac", auac), ("au_mse", au_mse))),
    MetricCase("plausibility", lambda: get_metric("plausibility", k=3),
               lambda b: plausibility(b.explanation, b.context.rationale, k=3, reduction="none"),
               lambda s: rel.token_f1_reference(s.on_content(s.relevance), s.on_content(s.rationale), 3), ANY_MODALITY),
    MetricCase("agreement", lambda: get_metric("agreement"),
               lambda b: map_agreement(b.explanation, b.context.reference, reduction="none"),
               lambda s: rel.spearman_reference(s.on_content(s.relevance), s.on_content(s.reference)), ANY_MODALITY),
    MetricCase("gain", lambda: get_metric("gain", metric=DeletionAUC(steps=3)), _gain_functional, _gain_reference),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Many tiny ops: on a shared 2-core machine one intra-op thread is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setups():
    return {family: make_setup(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def tester():
    return MetricTester()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_metric(case: MetricCase, family, setups, tester):
    value = tester.run_class_metric_test(case, setups[family])
    unsupported = {"text": {"road"}, "vision": {"taucorr_loo", "aupc", "auac", "au_mse"}}[setups[family].modality.name]
    assert (value is None) == (case.name in unsupported), (case.name, family, value)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_equal_one(setups, tester, tmp_path):
    tester.run_ddp_test(CASES, list(setups.values()), str(tmp_path / "store"))


def test_registry_covers_the_cli_and_every_case():
    names = list_metrics()
    assert set(CLI_NAMES) | {"agreement", "gain"} <= set(names)
    assert set(names) == {case.name for case in CASES} | set(ALIASES), "a registered metric has no tester case"
    for alias, name in ALIASES.items():
        assert names[alias] is names[name] is LeaveOneOutTau
        assert get_metric(alias).name == name
    with pytest.raises(ValueError, match="Unknown metric 'deletion'.*deletion_auc"):
        get_metric("deletion")


def test_registration_rules():
    register_metric(DeletionAUC)  # the same class again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_metric(LeaveOneOutTau, name="deletion_auc")
    with pytest.raises(ValueError, match="name="):
        register_metric(Plausibility)  # its name depends on kind
    assert "deletion_auc" in list_metrics() and list_metrics()["deletion_auc"] is DeletionAUC


def test_names_and_directions_follow_the_configuration():
    assert [get_metric("plausibility", kind=k).name for k in ("token_f1", "auprc")] == ["token_f1_plausibility",
                                                                                       "auprc_plausibility"]
    assert [get_metric("agreement", kind="topk", k=3).name, get_metric("agreement").name] == ["top3_agreement",
                                                                                               "rank_agreement"]
    gain = get_metric("gain", metric=DeletionAUC(order="lerf"))
    assert gain.name == "deletion_auc_gain" and gain.higher_is_better is True
    assert gain.requires == {"reference", "forward", "inputs", "modality"}
    assert get_metric("gain", metric=Plausibility()).requires == {"reference", "rationale"}
    for name, config, direction in (("deletion_auc", {}, False), ("deletion_auc", {"order": "lerf"}, True),
                                    ("insertion_auc", {}, True), ("insertion_auc", {"order": "lerf"}, False),
                                    ("road", {}, False), ("road", {"order": "lerf"}, True)):
        assert get_metric(name, **config).higher_is_better is direction, (name, config)
