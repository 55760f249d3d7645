"""Issue 13: FSDP2 (``fully_shard``) on CPU, 2 gloo processes, each with its own uneven probe shard.

The engine gathers the sharded parameters once per call on every rank (``gathered_parameters``), so the passes run no
collective. Checked against single-process runs on all samples (the same seeds, unsharded): the reduced scalars
within 1e-5, through the raw engine (a classifier, a causal-LM completion with a row to skip, an empty rank, a rank
running out of memory) and through Lightning's ``ModelParallelStrategy``; the collectives each rank issues (one
all-gather per sharded group, no reduce-scatter, the same counts on both ranks whatever their shard); no parameter
``.grad`` written or changed; training with gradient accumulation bit-identical with and without explanations
between micro-batches and after optimizer steps. Processes are forked (the parent's imports are reused) and every
process group has a short timeout, so a mismatch fails the test instead of hanging it.
"""

from __future__ import annotations

import collections
import datetime
import math
import os
import socket
from contextlib import contextmanager

import pytest
import torch
import torch.distributed as dist
from helpers import (
    collate_text,
    lightning_package,
    make_decoder_tokenizer,
    make_text_inputs,
    make_text_module_class,
    modality_for,
    text_dataset,
    with_completion,
)

from lightning_xai.errors import LightningXAIError

try:
    from torch.distributed.fsdp import fully_shard
except ImportError:  # torch without distributed support
    fully_shard = None

pytestmark = pytest.mark.skipif(
    not dist.is_available() or fully_shard is None or not dist.is_gloo_available()
    or "fork" not in torch.multiprocessing.get_all_start_methods(),
    reason="needs torch.distributed with gloo, FSDP2 (torch.distributed.fsdp.fully_shard) and forked processes",
)

WORLD = 2
TIMEOUT = datetime.timedelta(seconds=60)  # a collective mismatch raises after this instead of hanging
#: case -> (architecture, rows of rank 0, rows of rank 1) of 7 probe samples; uneven on purpose
CASES = {
    "classifier": ("llama", slice(0, 5), slice(5, 7)),
    "causal_lm": ("llama_lm", slice(0, 4), slice(4, 7)),
    "empty_rank": ("llama", slice(0, 3), slice(3, 3)),  # rank 1 holds no probe sample at all
    "oom_on_one_rank": ("llama", slice(0, 5), slice(5, 7)),  # rank 1's first chunk runs out of memory: halved, retried
}
COLLECTIVES = ("all_gather_single", "reduce_scatter_single", "all_gather_into_tensor", "reduce_scatter_tensor",
               "all_reduce", "all_gather", "broadcast")


def _model(architecture: str) -> torch.nn.Module:
    from lightning_xai.examples import tiny_classifier

    return tiny_classifier(architecture, layers=2, seed=1)


def _sharded(model: torch.nn.Module) -> torch.nn.Module:
    """``fully_shard`` on every decoder layer, then on the model (FSDP2's usual wrapping); a CompletionScorer's LM."""
    inner = getattr(model, "lm", model)
    for layer in inner.model.layers:
        fully_shard(layer)
    fully_shard(inner)
    return model


def _data(architecture: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    inputs = make_text_inputs(batch=7, seq=9, seed=3)
    if architecture == "llama_lm":
        inputs = with_completion(inputs)  # the completion of each SFT row is explained
        inputs["labels"][5] = -100  # but row 5 (rank 1's) has none: skipped there, on that rank alone
    return inputs, torch.arange(7) % 2


def _explain(model, architecture: str, rows: slice, distributed: bool,
             names=("grad_sam", "gradient_x_input", "attn_lrp")):
    """The engine on probe rows ``rows``: Grad-SAM and gradient x input (the shared pass's backward), AttnLRP (its
    own forward and backward)."""
    from lightning_xai._runtime import ErrorPolicy
    from lightning_xai.explainers import resolve_explainers
    from lightning_xai.families import resolve_family
    from lightning_xai.keys import LogKeys
    from lightning_xai.metrics import DeletionAUC
    from lightning_xai.probe import ProbeData
    from lightning_xai.run import explain_probe_set
    from lightning_xai.scoring import Scoreboard

    explainers = resolve_explainers(list(names))
    inputs, labels = _data(architecture)
    count = rows.stop - rows.start
    probe = ProbeData({k: v[rows] for k, v in inputs.items()}, labels[rows], None) if count else ProbeData({}, None,
                                                                                                          None)
    policy = ErrorPolicy("raise")
    board = Scoreboard([e.name for e in explainers], [DeletionAUC(steps=3)], LogKeys(), policy)
    family = resolve_family(model)
    result = explain_probe_set(model, probe, explainers, board, family=family,
                               modality=modality_for("causal_lm" if architecture == "llama_lm" else "decoder"),
                               batch_size=2, policy=policy, distributed=distributed)
    return {key: float(value) for key, value in result.values.items()}


def _completion_views(model, rows: slice, distributed: bool) -> dict[str, list]:
    """The monitor's per-completion-token maps of the causal LM's first 2 heatmap samples on probe rows ``rows``.

    As in the monitor, only rank 0 keeps heatmap samples, and every rank calls ``add_completion_tokens``."""
    from lightning_xai._runtime import ErrorPolicy
    from lightning_xai.completion_tokens import add_completion_tokens
    from lightning_xai.explainers import resolve_explainers
    from lightning_xai.families import resolve_family
    from lightning_xai.keys import LogKeys
    from lightning_xai.probe import ProbeData
    from lightning_xai.run import explain_probe_set
    from lightning_xai.scoring import Scoreboard

    explainers = resolve_explainers(["grad_sam", "attn_lrp"])
    inputs, labels = _data("llama_lm")
    probe = ProbeData({k: v[rows] for k, v in inputs.items()}, labels[rows], None)
    policy, family, modality = ErrorPolicy("raise"), resolve_family(model), modality_for("causal_lm")
    board = Scoreboard([e.name for e in explainers], [], LogKeys(), policy)
    keep = not distributed or dist.get_rank() == 0
    result = explain_probe_set(model, probe, explainers, board, family=family, modality=modality, num_heatmaps=2,
                               keep_samples=keep, policy=policy, distributed=distributed)
    add_completion_tokens(result, model, probe, explainers, family=family, modality=modality, keys=LogKeys(),
                          num_samples=2, policy=policy)
    return {e.name: [sample.completion_tokens.maps[e.name] for sample in result.samples] for e in explainers}


@contextmanager
def _counted():
    """Count the collectives issued through ``torch.distributed`` (FSDP2's, torchmetrics', the engine's)."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    for name, function in originals.items():
        setattr(dist, name, counting(name, function))
    try:
        yield counts
    finally:
        for name, function in originals.items():
            setattr(dist, name, function)


def _fsdp_state(model) -> list[tuple]:
    """Every FSDP2 group's switches and whether it is sharded (what the engine must give back)."""
    from lightning_xai._distributed import GROUP_FIELDS, _param_groups, fsdp2_modules

    return [tuple(getattr(group, name) for name in GROUP_FIELDS) + (group.is_unsharded,)
            for module in fsdp2_modules(model) for group in _param_groups(module)]


def _full(tensors) -> dict[str, torch.Tensor]:
    """Full (gathered) copies of parameters or optimizer states: a collective for DTensors, on every rank."""
    return {name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone() for name, t in tensors}


def _train(rank: int) -> dict:
    """Three AdamW steps of two twin FSDP2 models, two micro-batches each (gradient accumulation), on this rank's
    rows; one twin is explained in the middle of each accumulation and after each step (before ``zero_grad``)."""
    twins = {"monitored": _sharded(_model("llama").train()), "plain": _sharded(_model("llama").train())}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-2) for name, model in twins.items()}
    inputs, labels = _data("llama")
    rows = [slice(rank * 3, rank * 3 + 2), slice(rank * 3 + 2, rank * 3 + 3)]  # each rank trains on its own rows
    grads_unchanged, collectives = [], []

    def explained(model) -> None:
        grads = _full((n, p.grad) for n, p in model.named_parameters() if p.grad is not None)
        with _counted() as counts:
            _explain(model, "llama", CASES["classifier"][1 + rank], distributed=True)
        collectives.append(dict(counts))
        after = _full((n, p.grad) for n, p in model.named_parameters() if p.grad is not None)
        grads_unchanged.append(grads.keys() == after.keys() and all(torch.equal(grads[n], after[n]) for n in grads))

    for _ in range(3):
        for name, model in twins.items():
            for micro, part in enumerate(rows):
                model.set_requires_gradient_sync(micro == len(rows) - 1)  # FSDP2's no_sync: reduce at the last
                loss = torch.nn.functional.cross_entropy(model(**{k: v[part] for k, v in inputs.items()}).logits,
                                                         labels[part])
                loss.backward()
                model.set_requires_gradient_sync(True)  # restored after the step, as Lightning's no_sync context does
                if name == "monitored" and micro == 0:  # unreduced gradients are held: none may be reduced now
                    explained(model)
            optimizers[name].step()
            if name == "monitored":  # between the step and zero_grad, as a validation runs in Lightning
                explained(model)
            optimizers[name].zero_grad(set_to_none=True)
    states = {name: _full((f"{n}.{key}", value) for n, p in model.named_parameters()
                          for key, value in optimizers[name].state[p].items() if torch.is_tensor(value))
              for name, model in twins.items()}
    return {"params": {name: _full(model.named_parameters()) for name, model in twins.items()},
            "optimizer": states, "grads_unchanged": grads_unchanged, "collectives": collectives}


@contextmanager
def _out_of_memory_once(active: bool, message: str = "CPU out of memory (simulated on this rank)"):
    """When ``active``, the engine's first explanation pass on this rank fails (by default: out of memory)."""
    import lightning_xai.run as engine

    original, failed = engine.explain, []

    def flaky(*args, **kwargs):
        if not failed:
            failed.append(kwargs["labels"].shape[0] if kwargs.get("labels") is not None else -1)
            raise RuntimeError(message)
        return original(*args, **kwargs)

    if active:
        engine.explain = flaky
    try:
        yield failed
    finally:
        engine.explain = original


def _warm_up(model, architecture: str) -> None:
    """A plain forward on every rank, as validation runs before the monitor (FSDP2 then picks its root)."""
    inputs, _ = _data(architecture)
    with torch.no_grad():
        model(**{k: v[:2] for k, v in inputs.items()})


def _monitor_on(model) -> str | None:
    """The monitor's validation end on ``model`` (a stand-in trainer): its reason when it disabled itself."""
    import warnings
    from types import SimpleNamespace

    from lightning_xai import ExplanationMonitor

    trainer = SimpleNamespace(strategy=None, loggers=[], is_global_zero=dist.get_rank() == 0, log_dir=None,
                              default_root_dir="/nonexistent", datamodule=None, sanity_checking=False,
                              current_epoch=0, world_size=WORLD)
    monitor = ExplanationMonitor(model_getter=lambda module: model, tokenizer=make_decoder_tokenizer(),
                                 write_files=False)
    monitor.setup(trainer, SimpleNamespace(), "validate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor.on_validation_epoch_end(trainer, SimpleNamespace())
    return monitor._disabled_reason


def _engine_worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD, timeout=TIMEOUT)
    try:
        results: dict = {}
        for case, (architecture, *shards) in CASES.items():
            model = _sharded(_model(architecture))
            fresh = case == "empty_rank"  # its first forward is the engine's: FSDP2's lazy init happens inside
            if not fresh:
                _warm_up(model, architecture)
            before = _fsdp_state(model)
            flaky = case == "oom_on_one_rank" and rank == 1
            # inside inference mode, as Lightning's trainer.validate() calls the monitor
            with _counted() as counts, torch.inference_mode(not fresh), _out_of_memory_once(flaky) as failed:
                values = _explain(model, architecture, shards[rank], distributed=True)
            if fresh:  # the switches a plain first forward would have left, every group sharded again
                twin = _sharded(_model(architecture))
                _warm_up(twin, architecture)
                before = [state[:-1] + (False,) for state in _fsdp_state(twin)]
            results[case] = {
                "values": values, "collectives": dict(counts),
                "sharded_on_entry": sum(not state[-1] for state in before),
                "state_restored": _fsdp_state(model) == before,
                "grads": [n for n, p in model.named_parameters() if p.grad is not None], "out_of_memory": failed,
            }
        try:  # rank 1 configured differently: every rank must raise, none may wait for the others
            _explain(_sharded(_model("llama")), "llama", CASES["classifier"][1 + rank], distributed=True,
                     names=("grad_sam",) if rank == 0 else ("raw_attention",))
            results["mismatch"] = None
        except LightningXAIError as error:
            results["mismatch"] = str(error)
        try:  # rank 1 fails for good (on_error="raise"): rank 0 must raise at the reduction, not wait there
            with _out_of_memory_once(rank == 1, "a bug on rank 1"):
                _explain(_sharded(_model("llama")), "llama", CASES["classifier"][1 + rank], distributed=True)
            results["one_rank_failed"] = None
        except LightningXAIError as error:
            results["one_rank_failed"] = str(error)
        model = _sharded(_model("llama"))
        with torch.inference_mode():  # FSDP2 allocates the gathered parameters at its first forward: here
            _warm_up(model, "llama")
        try:
            _explain(model, "llama", CASES["classifier"][1 + rank], distributed=True)
            results["inference_tensors"] = None
        except LightningXAIError as error:
            results["inference_tensors"] = str(error)
        results["monitor_disabled"] = _monitor_on(model)
        # per-completion-token maps after the engine: rank 0 alone runs passes, the other rank must not be waited for
        lm = _sharded(_model("llama_lm"))
        _warm_up(lm, "llama_lm")
        before = _fsdp_state(lm)
        with _counted() as counts:
            views = _completion_views(lm, CASES["causal_lm"][1 + rank], distributed=True)
        results["completion_tokens"] = {"views": views, "collectives": dict(counts),
                                        "state_restored": _fsdp_state(lm) == before}
        results["training"] = _train(rank)
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _fork(worker, *args) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(worker, args=args, nprocs=WORLD, start_method="fork", join=True)


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    """One launch of both ranks for every engine check (a launch costs seconds)."""
    folder = tmp_path_factory.mktemp("fsdp2")
    _fork(_engine_worker, f"file://{folder}/store", str(folder))
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_fsdp2_two_process_equality(engine_runs, case):
    """Reduced scalars of 2 FSDP2 ranks with uneven shards (one empty) equal one unsharded process on all rows."""
    architecture, first, second = CASES[case]
    single = _explain(_model(architecture), architecture, slice(first.start, second.stop), distributed=False)
    # 3 methods' deletion AUCs and 3 agreements; the causal LM's row without completion adds each method's skipped
    # count (per process) and degenerate count (reduced: its map is all zero)
    assert len(single) == 6 + (6 if case == "causal_lm" else 0)
    skipped = {key for key in single if key.endswith("skipped_samples")}  # each process's own count
    assert bool(skipped) == (case == "causal_lm")
    for key in skipped:
        assert sum(run[case]["values"].get(key, 0.0) for run in engine_runs) == single[key] == 1
    for rank in range(WORLD):
        values = {k: v for k, v in engine_runs[rank][case]["values"].items() if k not in skipped}
        assert set(values) >= set(single) - skipped  # under distributed every metric is computed: NaN if not updated
        assert all(math.isnan(values[key]) for key in set(values) - set(single))
        for key, value in single.items():
            if key not in skipped:
                assert values[key] == pytest.approx(value, abs=1e-5), (rank, key)


@pytest.mark.parametrize("case", list(CASES))
def test_fsdp2_passes_run_no_collective_and_leave_no_grad(engine_runs, case):
    """One all-gather per sharded group and no reduce-scatter, the same sequence on both ranks, the model restored."""
    first, second = (run[case] for run in engine_runs)
    assert first["collectives"] == second["collectives"]  # whatever each rank's shard held
    # each group sharded on entry gathered once (2 layers, and the root too when no forward came before)
    assert first["collectives"]["all_gather_single"] == first["sharded_on_entry"] == (3 if case == "empty_rank" else 2)
    assert not any("reduce_scatter" in name for name in first["collectives"])
    assert first["collectives"]["all_reduce"] == 2  # the agreement on methods and model, every rank ok to reduce
    for run in (first, second):
        assert run["grads"] == [] and run["state_restored"]
    assert second["out_of_memory"] == ([2] if case == "oom_on_one_rank" else [])  # a chunk of 2, halved locally


def test_fsdp2_per_completion_token_maps_of_rank_0_equal_one_process(engine_runs):
    """Only rank 0 has heatmap samples: its per-token passes run on parameters every rank gathered, no collective."""
    single = _completion_views(_model("llama_lm"), slice(0, 7), distributed=False)
    first, second = (run["completion_tokens"] for run in engine_runs)
    assert first["collectives"] == second["collectives"]  # the same collectives on both ranks: nobody waits
    assert all(maps == [] for maps in second["views"].values())  # rank 1 keeps no heatmap sample
    for name, maps in single.items():
        assert len(maps) == len(first["views"][name]) == 2
        for got, expected in zip(first["views"][name], maps, strict=True):
            assert got.shape == expected.shape and abs(got - expected).max() < 1e-5, name
    assert first["state_restored"] and second["state_restored"]  # switches back, every group sharded again


def test_fsdp2_ranks_configured_differently_raise_instead_of_hanging(engine_runs):
    for run in engine_runs:
        assert run["mismatch"] is not None and "disagree on the explained methods" in run["mismatch"]


def test_an_error_on_one_rank_is_raised_on_every_rank_instead_of_hanging(engine_runs):
    assert "a bug on rank 1" in engine_runs[1]["one_rank_failed"]
    assert "another process failed" in engine_runs[0]["one_rank_failed"]


def test_fsdp2_training_is_bit_identical_with_and_without_explanations(engine_runs):
    for run in engine_runs:
        training = run["training"]
        assert all(training["grads_unchanged"]) and len(training["grads_unchanged"]) == 6
        for counts in training["collectives"]:  # every group is resharded after a training backward: 3 gathers
            assert counts.get("all_gather_single") == 3 and "reduce_scatter_single" not in counts
        for kind in ("params", "optimizer"):
            monitored, plain = training[kind]["monitored"], training[kind]["plain"]
            assert monitored.keys() == plain.keys() and monitored
            for name in plain:
                assert torch.equal(monitored[name], plain[name]), (kind, name)


def test_fsdp2_parameters_first_gathered_under_inference_mode_are_refused_with_the_fix(engine_runs):
    """FSDP2 then holds them in inference tensors, which no explanation can differentiate through."""
    for run in engine_runs:
        message = run["inference_tensors"]
        assert message is not None and "inference_mode" in message and "Trainer(inference_mode=False)" in message
        assert run["monitor_disabled"] == message  # the monitor disables itself on every rank (on_error="warn")


# ------------------------------------------------------------------------------- Lightning ModelParallelStrategy

ROWS = text_dataset(12, seed=5)
SHARDS = {0: ROWS[:8], 1: ROWS[8:10]}  # uneven probe shards; rank 1 in batches of 1 (FSDP2 needs as many batches)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _module(pl, seed: int = 0):
    Base = make_text_module_class(pl)

    class Sharded(Base):
        def configure_model(self):
            if type(self.trainer.strategy).__name__ == "ModelParallelStrategy":
                mesh = self.device_mesh["data_parallel"]
                for layer in self.model.model.layers:
                    fully_shard(layer, mesh=mesh)
                fully_shard(self.model, mesh=mesh)

        def val_dataloader(self):
            from torch.utils.data import DataLoader

            if self.trainer.world_size == 1:
                return DataLoader(SHARDS[0] + SHARDS[1], batch_size=4, collate_fn=collate_text)
            rank = self.global_rank
            return DataLoader(SHARDS[rank], batch_size=4 if rank == 0 else 1, collate_fn=collate_text)

        def train_dataloader(self):
            from torch.utils.data import DataLoader

            return DataLoader(ROWS[:4], batch_size=2, collate_fn=collate_text)

    return Sharded(make_decoder_tokenizer(), family="llama", seed=seed)


def _trainer(pl, root: str, callbacks: list, world: int, **options):
    from lightning.pytorch.strategies import ModelParallelStrategy

    strategy = (ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1, timeout=TIMEOUT)
                if world > 1 else "auto")
    return pl.Trainer(accelerator="cpu", devices=world, strategy=strategy, logger=False, default_root_dir=root,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      use_distributed_sampler=False, callbacks=callbacks, num_sanity_val_steps=0, **options)


def _monitor():
    from lightning_xai import ExplanationMonitor
    from lightning_xai.explainers import GradSAM, RawAttention
    from lightning_xai.metrics import DeletionAUC

    return ExplanationMonitor(explainers=[GradSAM(), RawAttention()], metrics=[DeletionAUC(steps=3)],
                              num_samples=64, num_heatmaps=1, on_error="raise", write_files=False)


def _lightning_run(world: int, root: str) -> dict:
    """Validate with the monitor, then fit two epochs with and without it: values and the final full weights."""
    pl = lightning_package("lightning.pytorch")
    monitor = _monitor()
    _trainer(pl, root, [monitor], world).validate(_module(pl), verbose=False)
    weights = {}
    for name, callbacks in (("monitored", [_monitor()]), ("plain", [])):
        module = _module(pl)
        _trainer(pl, root, callbacks, world, max_epochs=2).fit(module)
        weights[name] = _full(module.model.named_parameters())
    return {"values": monitor.history[0], "weights": weights}


def _lightning_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")  # processes launched here, as torchrun would
    try:
        torch.save(_lightning_run(WORLD, out), os.path.join(out, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_model_parallel_strategy_monitor_equals_single_process_and_training_is_unchanged(tmp_path):
    """Lightning's ModelParallelStrategy (FSDP2 in configure_model) on CPU: the monitor is served, not refused."""
    pytest.importorskip("lightning.pytorch.strategies", reason="lightning's ModelParallelStrategy")
    _fork(_lightning_worker, _free_port(), str(tmp_path))
    runs = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]
    single = _lightning_run(1, str(tmp_path / "single"))
    assert {"xai/grad_sam/deletion_auc", "xai/raw_attention/deletion_auc"} <= set(single["values"])
    for run in runs:
        assert set(run["values"]) == set(single["values"])
        for key, value in single["values"].items():
            assert run["values"][key] == pytest.approx(value, abs=1e-5), key
        monitored, plain = run["weights"]["monitored"], run["weights"]["plain"]
        assert monitored.keys() == plain.keys()
        assert all(torch.equal(monitored[name], plain[name]) for name in plain)


def test_which_sharding_is_served(monkeypatch):
    """FSDP2 on a 1-D mesh (and ModelParallelStrategy, which applies it later) is served by the explanation engine;
    FSDP1, 2-D meshes and every sharding for the concept monitor are refused with the reason."""
    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
    from torch.distributed.device_mesh import init_device_mesh

    from lightning_xai._distributed import sharded_message, sharding_refusal

    assert sharding_refusal(ModelParallelStrategy(), None, serves_fsdp2=True) is None
    assert sharding_refusal(ModelParallelStrategy(), None, serves_fsdp2=False) == "strategy ModelParallelStrategy"
    assert "FSDP1" in sharding_refusal(FSDPStrategy(), None, serves_fsdp2=True)
    from types import SimpleNamespace

    from lightning_xai import ConceptMonitor

    concepts = ConceptMonitor({"a": ["x y", "y"], "b": ["z", "w"]}, model_getter=lambda module: _model("llama"))
    with pytest.raises(LightningXAIError, match="ConceptMonitor does not support sharded training.*ModelParallel"):
        concepts.setup(SimpleNamespace(strategy=ModelParallelStrategy()), SimpleNamespace(), "fit")
    message = sharded_message("ExplanationMonitor", "strategy FSDPStrategy (FSDP1)", serves_fsdp2=True)
    assert "fully_shard" in message and "strategy='ddp'" in message and "lightning-xai explain" in message
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1, timeout=TIMEOUT)
    try:
        served = _sharded(_model("llama"))
        assert sharding_refusal(None, served, serves_fsdp2=True) is None
        assert "fully_shard" in sharding_refusal(None, served, serves_fsdp2=False)  # the concept monitor's check
        hybrid = _model("llama")
        fully_shard(hybrid, mesh=init_device_mesh("cpu", (1, 1), mesh_dim_names=("replicate", "shard")))
        assert "2-D device mesh" in sharding_refusal(None, hybrid, serves_fsdp2=True)
    finally:
        dist.destroy_process_group()
