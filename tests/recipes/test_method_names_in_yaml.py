"""A recipe may name methods by their registered names, mixed with class_path entries."""

from jsonargparse import ArgumentParser

from lightning_xai import ExplanationMonitor
from lightning_xai.explainers import LeGrad
from lightning_xai.metrics import DeletionAUC


def test_yaml_names_and_class_paths_mix():
    parser = ArgumentParser()
    parser.add_class_arguments(ExplanationMonitor, "monitor")
    config = parser.parse_string(
        "monitor:\n"
        "  explainers: [grad_sam, {class_path: lightning_xai.explainers.LeGrad}]\n"
        "  metrics: [deletion_auc]\n"
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    monitor = instantiate(config).monitor
    assert [explainer.name for explainer in monitor.explainers] == ["grad_sam", "legrad"]
    assert isinstance(monitor.explainers[1], LeGrad)
    assert isinstance(monitor.metrics[0], DeletionAUC)
