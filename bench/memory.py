"""Peak memory of one monitored validation with a large probe set (issue 7): 256 samples x 512 tokens, MiniLM.

The monitor explains the probe set in chunks of at most ``--batch-size`` rows and at most ``token_budget``
rows x tokens^2 (the monitor's default: 2 rows of 512 tokens), and the perturbation engine forwards at most
``--max-batch-size`` rows at once, so memory is bounded by the chunk sizes, not by the probe-set size. Reports the
process's peak resident set size (``ru_maxrss``) before and after the monitored validation, and the budget
implied by the chunk sizes.

glibc's allocator raises its mmap threshold dynamically, after which mid-sized tensors come from the heap and
fragment it: the peak then grows with the number of chunks, not with their size. Run once as is and once with
``MALLOC_MMAP_THRESHOLD_=1048576`` (fixed threshold; jemalloc/tcmalloc behave alike) to see the working set alone.

Usage: python bench/memory.py [--samples 256] [--tokens 512] [--batch-size 16] [--max-batch-size 32] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from types import SimpleNamespace

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from lightning_xai import ExplanationMonitor  # noqa: E402
from lightning_xai._runtime import release_free_memory  # noqa: E402
from lightning_xai.explainers import GradSAM  # noqa: E402
from lightning_xai.metrics import DeletionAUC  # noqa: E402
from lightning_xai.recipes.bundled import minilm_path  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--token-budget", type=int, default=32 * 128 * 128)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)  # the classification head is new: the same model in every run
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.samples, args.tokens), generator=generator)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    monitor = ExplanationMonitor(explainers=[GradSAM()], metrics=[DeletionAUC(steps=args.steps,
                                 max_batch_size=args.max_batch_size)], num_samples=args.samples, num_heatmaps=0,
                                 batch_size=args.batch_size, tokenizer=tokenizer, write_files=False,
                                 token_budget=args.token_budget)
    module = torch.nn.Module()
    module.model = model
    trainer = SimpleNamespace(sanity_checking=False, loggers=[], is_global_zero=True, datamodule=None, log_dir=None,
                              default_root_dir="/tmp")
    monitor.setup(trainer, module, "fit")
    monitor.on_validation_batch_end(trainer, module, None, batch, 0)
    with torch.no_grad():  # a plain validation forward of one explanation chunk, for reference
        model(**{k: v[: args.batch_size] for k, v in batch.items()})
    before = peak_rss_mib()
    start = time.perf_counter()
    values, _, _ = monitor._explain_probe_set(torch.device("cpu"), keep_maps=False)
    seconds = time.perf_counter() - start
    after = peak_rss_mib()
    held = current_rss_mib()
    release_free_memory()  # what the monitor does after every validation
    released = current_rss_mib()
    print(json.dumps({
        "probe": f"{args.samples} samples x {args.tokens} tokens (MiniLM-L6, 3 classes)",
        "chunks": {"explain batch_size": args.batch_size, "token_budget": args.token_budget,
                   "perturbation max_batch_size": args.max_batch_size,
                   "deletion steps": args.steps},
        "peak_rss_mib_before_monitor": round(before, 1),
        "peak_rss_mib_after_monitor": round(after, 1),
        "monitor_increase_mib": round(after - before, 1),
        "rss_mib_after_monitor_before_release": round(held, 1),
        "rss_mib_after_release": round(released, 1),
        "malloc_mmap_threshold_env": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "seconds": round(seconds, 1),
        "values": {k: round(float(v), 4) for k, v in values.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
