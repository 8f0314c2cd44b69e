"""How the engine's throughput scales with model width and sequence length on this machine, and what the GPU
configs should reach on paper.

For each hidden size and sequence length: the engine trains the masked-LM ModernBERT of ``mlm/default.yaml`` (4 layers, 4 x hidden
feed-forward, heads of 64) on packed PTB blocks for ``--steps`` timed steps after ``--warmup-steps``, and the
table gives tokens/s and model-FLOPs utilisation against this machine's measured fp32 matmul peak. Batch
sizes keep tokens per step constant (``--tokens-per-step``), so rows differ in the model only.

On paper: the ``*_wikitext103.yaml`` configs' model FLOPs per token (as the engine counts them), and the
tokens/s they would reach on a stated GPU peak (``--gpu-peak``, default an A100's 312 TFLOP/s dense bf16) at
the MFU a well-tuned BERT / GPT-2 pretraining reaches there (``--gpu-mfu``, default 0.4).

    python scripts/bench_scaling.py
    python scripts/bench_scaling.py --hidden 128 256 --seq 128 --steps 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lm  # noqa: E402  (the shared set-up and the engine side of the LM benchmark)

from nlp_ssl.config import load_config  # noqa: E402
from nlp_ssl.engine.flops import measure_peak_flops  # noqa: E402
from nlp_ssl.errors import exit_on_user_error  # noqa: E402
from nlp_ssl.models.transformer_lm import build_lm  # noqa: E402
from nlp_ssl.pipelines.language_model import CausalLMConfig, MaskedLMConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GPU_CONFIGS = {"masked": REPO / "recipes/configs/mlm/bert_small_wikitext103.yaml",
               "causal": REPO / "recipes/configs/clm/gpt2_small_wikitext103.yaml"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512, 768])
    p.add_argument("--seq", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens-per-step", type=int, default=4096)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--gpu-peak", type=float, default=312e12, help="FLOP/s of the GPU the paper estimate assumes")
    p.add_argument("--gpu-mfu", type=float, default=0.4)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def on_paper(args: argparse.Namespace) -> list[dict[str, Any]]:
    """FLOPs per token of the GPU configs and the tokens/s they reach at ``gpu_mfu`` of ``gpu_peak``."""
    from nlp_ssl.objectives.lm import _transformer_flops_per_token

    rows = []
    for kind, path in GPU_CONFIGS.items():
        cfg = load_config(CausalLMConfig if kind == "causal" else MaskedLMConfig, path)
        vocab = cfg.tokenizer.vocab_size

        class _Vocab:  # build_lm only asks the tokenizer for its size and special ids
            pad_token_id, bos_token_id, eos_token_id = 0, 1, 1

            def __len__(self) -> int:
                return vocab

        with torch.device("meta"):  # shapes only: no memory, no weight initialisation (GPT-2 small is 124M)
            model = build_lm(kind, cfg.model, _Vocab(), cfg.data.block_size)
        head = cfg.mlm.mlm_probability if kind == "masked" else 1.0
        flops = _transformer_flops_per_token(model, head, cfg.data.block_size)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"config": path.name, "kind": kind, "params": params, "seq": cfg.data.block_size,
                     "flops_per_token": flops, "tokens_per_sec": args.gpu_mfu * args.gpu_peak / flops})
    return rows


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    peak = measure_peak_flops(torch.device("cpu"))
    print(f"measured fp32 peak {peak / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads", flush=True)
    table = []
    base = bench_lm.parse_args(["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
                                "--layers", str(args.layers)])
    setups: dict[int, bench_lm.Setup] = {}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for seq in args.seq:
            for hidden in args.hidden:
                run_args = replace_args(base, hidden=hidden, block_size=seq,
                                        batch_size=max(1, args.tokens_per_step // seq))
                if seq not in setups:  # one tokenizer and one set of blocks per sequence length
                    setups[seq] = bench_lm.build_setup(run_args)
                setup = bench_lm.Setup(**{**setups[seq].__dict__, "cfg": replace(
                    setups[seq].cfg, per_device_train_batch_size=run_args.batch_size,
                    model=replace(setups[seq].cfg.model, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                                  intermediate_size=4 * hidden))})
                result = bench_lm.run_engine(setup, run_args, Path(tmp))
                flops = bench_lm.model_flops_per_token(setup)
                row = {"hidden": hidden, "seq": seq, "batch": run_args.batch_size,
                       "params": sum(p.numel() for p in bench_lm.fresh_model(setup).parameters()),
                       "tokens_per_sec": result.tokens_per_sec, "mfu": flops * result.tokens_per_sec / peak,
                       "peak_memory_mib": result.extra["peak_memory_bytes"] / 2**20}
                table.append(row)
                print(f"hidden {hidden:>4}  seq {seq:>4}  batch {row['batch']:>3}  {row['params'] / 1e6:6.1f}M params  "
                      f"{row['tokens_per_sec']:>8,.0f} tokens/s  MFU {100 * row['mfu']:4.0f}%  "
                      f"{row['peak_memory_mib']:,.0f} MiB", flush=True)
    paper = on_paper(args)
    for row in paper:
        print(f"{row['config']}: {row['params'] / 1e6:.0f}M params, {row['flops_per_token'] / 1e9:.2f} GFLOP/token "
              f"-> {row['tokens_per_sec']:,.0f} tokens/s at {args.gpu_mfu:.0%} of {args.gpu_peak / 1e12:.0f} TFLOP/s")
    report = {"peak_flops": peak, "cpu": table, "gpu_on_paper": paper}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def replace_args(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


if __name__ == "__main__":
    main()
