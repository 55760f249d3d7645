"""Long inputs in bounded memory (issue 13): peak memory and time of one explanation at 512 to 2,048 tokens.

A small Llama-style decoder classifier built from a config (random weights, float32: width 256, 4 layers, 8 query
heads of 32, 4 key/value heads, MLP 688, vocabulary 1,000), batch 1, every token real. Each case runs in its own
process, so each peak is its own:

  * ``plain``:            ``model(**inputs).logits[0, 1].backward()`` on sdpa (a training step's forward+backward,
                          the reference of the ratios)
  * ``grad_sam``:         ``explain(model, inputs, [GradSAM()])`` (every layer's maps and their gradients recorded)
  * ``grad_sam_sdpa``:    ``explain(..., [GradSAM(attention="sdpa")])`` (the pass on sdpa, maps rebuilt in row blocks)
  * ``gxi``:              ``explain(..., [GradientXInput()])`` (reads no maps: the shared pass runs on sdpa)
  * ``gxi_sdpa``:         ``explain(..., [GradSAM(attention="sdpa"), GradientXInput()])`` (both on the sdpa pass)
  * ``cp_lrp_sdpa``, ``attn_lrp_sdpa``: ``explain(..., [ConservativeLRP(attention="sdpa")])`` /
                          ``[AttnLRP(attention="sdpa")]`` (their own pass on sdpa, after the shared pass, which
                          reads no maps and runs on sdpa without autograd)
  * ``attn_lrp_sdpa_alone``: ``attn_lrp(model, inputs, attention="sdpa")``, the functional without the shared pass

Memory: one process per case and length, the peak resident set size during one run minus the resident size just
before it (after a warm-up run at 64 tokens), with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors go back to
the OS and the peak is the working set. Time: every case of a length in one process with the default allocator
(that threshold slows every allocation), interleaved, median of ``--repeats`` runs after a warm-up. Ratios are
against ``plain`` at the same length. On a shared machine, timings move with the other jobs' load.

Usage: python bench/long_inputs.py [--tokens 512 1024 2048] [--repeats 3] [--threads 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

CASES = ("plain", "grad_sam", "grad_sam_sdpa", "gxi", "gxi_sdpa", "cp_lrp_sdpa", "attn_lrp_sdpa",
         "attn_lrp_sdpa_alone")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cases(threads: int) -> tuple[dict, Callable[[int], dict]]:
    """``{case: run(inputs)}`` on the benchmark model, and the inputs of a length."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from lightning_xai import explain
    from lightning_xai.explainers import AttnLRP, ConservativeLRP, GradientXInput, GradSAM, attn_lrp
    from lightning_xai.modalities import TextModality

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=4, head_dim=32, vocab_size=1000, pad_token_id=0, num_labels=2,
                         max_position_embeddings=4096)
    model = LlamaForSequenceClassification(config).eval()
    text = TextModality(special_ids=[0, 1, 2], pad_id=0, replacement_id=None, removal="attention")

    def inputs_of(length: int) -> dict:
        ids = torch.randint(3, 1000, (1, length), generator=torch.Generator().manual_seed(length))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def plain(inputs: dict) -> None:
        model(**inputs).logits[0, 1].backward()
        model.zero_grad(set_to_none=True)

    def explaining(*explainers: object) -> Callable[[dict], object]:
        return lambda inputs: explain(model, inputs, list(explainers), modality=text, target=1)

    runs = {
        "plain": plain,
        "grad_sam": explaining(GradSAM()),
        "grad_sam_sdpa": explaining(GradSAM(attention="sdpa")),
        "gxi": explaining(GradientXInput()),
        "gxi_sdpa": explaining(GradSAM(attention="sdpa"), GradientXInput()),
        "cp_lrp_sdpa": explaining(ConservativeLRP(attention="sdpa")),
        "attn_lrp_sdpa": explaining(AttnLRP(attention="sdpa")),
        "attn_lrp_sdpa_alone": lambda inputs: attn_lrp(model, inputs, 1, attention="sdpa"),
    }
    return runs, inputs_of


def peak_of(case: str, tokens: int, threads: int) -> dict:
    """One case in this process: warm-up at 64 tokens, then one measured run; peak RSS over RSS before it."""
    runs, inputs_of = cases(threads)
    runs[case](inputs_of(64))  # warm-up: kernels, thread pools, lazy imports
    inputs = inputs_of(tokens)
    before = rss_mib()
    runs[case](inputs)
    return {"case": case, "tokens": tokens, "peak_mib": round(peak_rss_mib() - before, 1)}


def times_of(names: list[str], tokens: int, repeats: int, threads: int) -> dict[str, float]:
    """Every case in one process (default allocator), interleaved, median of ``repeats`` after a warm-up."""
    runs, inputs_of = cases(threads)
    for name in names:
        runs[name](inputs_of(64))
    inputs = inputs_of(tokens)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            runs[name](inputs)
            seconds[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(values), 3) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "TOKENS"), help=argparse.SUPPRESS)
    parser.add_argument("--child-times", type=int, metavar="TOKENS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(peak_of(args.child[0], int(args.child[1]), args.threads)))
        return
    if args.child_times:
        print(json.dumps(times_of(args.cases, args.child_times, args.repeats, args.threads)))
        return
    results = []
    for tokens in args.tokens:
        common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--cases", *args.cases]
        timed = subprocess.run([sys.executable, __file__, "--child-times", str(tokens), *common],
                               capture_output=True, text=True, check=True)
        seconds = json.loads(timed.stdout.strip().splitlines()[-1])
        for case in args.cases:
            memory = subprocess.run([sys.executable, __file__, "--child", case, str(tokens), *common],
                                    env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}, capture_output=True,
                                    text=True, check=True)
            results.append({**json.loads(memory.stdout.strip().splitlines()[-1]), "seconds": seconds[case]})
            print(json.dumps(results[-1]), flush=True)
    plain = {r["tokens"]: r for r in results if r["case"] == "plain"}
    rows = []
    for r in results:
        reference = plain.get(r["tokens"])
        if reference is not None:
            r["memory_ratio"] = round(r["peak_mib"] / reference["peak_mib"], 2)
            r["time_ratio"] = round(r["seconds"] / reference["seconds"], 2)
        rows.append(r)
    print("| case | tokens | peak MiB | / plain | seconds | / plain |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['case']} | {r['tokens']} | {r['peak_mib']} | {r.get('memory_ratio', '')} | {r['seconds']} | "
              f"{r.get('time_ratio', '')} |")
    if args.out:
        with open(args.out, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
