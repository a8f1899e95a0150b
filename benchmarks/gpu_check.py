"""GPU check, ready to run on a CUDA machine with no network (not a test; skips cleanly without CUDA).

Builds a seeded random LLaMA of about 1B parameters (no download), then for every registered method kind
runs one method with `--device cuda` placement and again with `device_map="auto"` placement, checks the
same contract invariants the CPU tests check, and prints per-method wall times. Usage:

    .venv/bin/python benchmarks/gpu_check.py [--layers 16] [--tokens 2048]

Exit 0 when every invariant holds (or there is no CUDA device: it says so and skips), 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--layers", type=int, default=16, help="decoder layers of the random model (default 16: ~1B)"
    )
    ap.add_argument("--tokens", type=int, default=2048, help="calibration tokens (default 2048)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: skipped, torch sees no CUDA device")
        return 0
    from transformers import LlamaConfig, LlamaForCausalLM

    from kb.errors import KBError
    from reference_impls import registry
    from reference_impls.harness import runner
    from reference_impls.harness.contract import Context

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=args.layers,
                         num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)  # fmt: skip
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).half().eval()
    print(
        f"random LLaMA: {sum(p.numel() for p in base.parameters()) / 1e9:.2f}B parameters, {args.layers} layers"
    )
    calib = torch.randint(0, config.vocab_size, (max(1, args.tokens // 512), 512))
    one_per_kind: dict[str, str] = {}
    for spec in registry.METHODS.values():
        one_per_kind.setdefault(spec.kind, spec.name)
    failures = 0
    for placement in ("cuda", "auto"):
        for kind, name in one_per_kind.items():
            spec = registry.METHODS[name]
            if placement == "cuda":
                model = copy.deepcopy(base).to("cuda")
            else:
                from accelerate import dispatch_model, infer_auto_device_map

                model = copy.deepcopy(base)
                model = dispatch_model(model, infer_auto_device_map(model))
            config_obj = runner.method_config(spec, {"layers": max(1, args.layers // 4)})
            torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                runner.apply_method(model, spec, config_obj, calib, Context())  # checks the invariants
                with torch.inference_mode():
                    ok = bool(torch.isfinite(model(calib[:1, :64].to("cuda")).logits.float()).all())
                status = "ok" if ok else "non-finite logits"
            except KBError as exc:
                status = f"FAILED: {exc}"
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            failures += status != "ok"
            print(f"{placement:5} {kind:16} {name:10} {seconds:7.1f} s  {status}")
            del model
            torch.cuda.empty_cache()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
