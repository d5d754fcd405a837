#!/usr/bin/env python3
"""End-to-end check of bnb4's bitsandbytes backend on a transformers model (meant for a GPU machine).

A small Llama is built locally from a config with random weights (nothing is downloaded), saved, and
loaded twice with BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True):
  1. with bitsandbytes' own kernels, and
  2. with bnb4's kernels registered (bnb4.bitsandbytes_backend.register()), so bnb4 quantizes it;
     every 4-bit tensor of the two loads must be byte-identical on CUDA.
Then the first model generates 20 tokens greedily with bitsandbytes' kernels and again with bnb4's:
the tokens must be the same, or part only at a step where bitsandbytes' two best logits are closer than
twice the two runs' logit difference there (a tie their rounding decides; the logits are compared up to
that step), and the logits within tolerance. One decode step (one token, KV cache of
the prompt) is timed both ways: median of --reps steps after warm-up, synchronized.

Exit status 0 when every check passes. Needs torch, transformers, accelerate, bitsandbytes and bnb4 (in-tree:
BNB4_LIBRARY=build/libbnb4.so PYTHONPATH=python). Usage:
  python3 scripts/e2e_bnb_backend.py [--device cuda] [--json out.json]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--compute-dtype", default=None, choices=["float16", "bfloat16", "float32"],
                   help="bnb_4bit_compute_dtype (default: not set, as in the brief's config: float32)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--prompt", type=int, default=8, help="prompt length in tokens")
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--reps", type=int, default=50, help="timed decode steps per variant")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--logit-rtol", type=float, default=2e-2,
                   help="max |logits_bnb4 - logits_bnb| allowed, relative to max |logits_bnb|")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args()


def build_checkpoint(folder, args, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=max(1, args.hidden // 256), max_position_embeddings=512,
                         tie_word_embeddings=False)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    return config


def load_quantized(folder, args, dtype):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    extra = {}
    if args.compute_dtype:
        extra["bnb_4bit_compute_dtype"] = getattr(torch, args.compute_dtype)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                **extra)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, device_map=args.device,
                                                 dtype=dtype)
    model.eval()
    import bitsandbytes as bnb
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            # keep bitsandbytes' CPU path on its standard weight layout (it rewrites it on AVX512-BF16
            # CPUs at the first inference forward, which bnb4's kernels do not read)
            module.support_avx512bf16_for_cpu = False
    return model


def quantized_state(model):
    """Every 4-bit tensor of every Linear4bit: packed weight, absmax codes, nested absmax, offset."""
    import bitsandbytes as bnb
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            st = module.weight.quant_state
            out[name + ".weight"] = module.weight.data
            out[name + ".absmax"] = st.absmax
            if st.nested:
                out[name + ".nested_absmax"] = st.state2.absmax
                out[name + ".offset"] = st.offset.reshape(1)
    return out


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generate(model, prompt, args):
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                             do_sample=False, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=0)
    return out.sequences[0, prompt.shape[1]:].tolist(), torch.stack([x[0].float() for x in out.logits])


def time_decode_step(model, prompt, args):
    """Median seconds of one decode step (one new token on the prompt's KV cache), cache cropped back
    after each step so every step sees the same cache length."""
    from transformers import DynamicCache
    with torch.no_grad():
        cache = DynamicCache()
        out = model(prompt, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        times = []
        for i in range(args.reps + 5):
            sync(args.device)
            t0 = time.perf_counter()
            model(token, past_key_values=cache, use_cache=True)
            sync(args.device)
            if i >= 5:
                times.append(time.perf_counter() - t0)
            cache.crop(-1)  # drop the step's token: every step sees the same cache length
    return statistics.median(times)


def main():
    args = parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    dtype = getattr(torch, args.dtype)
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import bitsandbytes as bnb
    import bnb4
    import bnb4.bitsandbytes_backend as backend
    print(f"e2e: seed {args.seed}; torch {torch.__version__}; bitsandbytes {bnb.__version__}; bnb4 from "
          f"{bnb4.library_path}; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""), flush=True)
    results = {"seed": args.seed, "device": args.device, "dtype": args.dtype,
               "compute_dtype": args.compute_dtype or "float32 (bitsandbytes default)",
               "model": {"hidden": args.hidden, "intermediate": args.intermediate, "layers": args.layers,
                         "vocab": args.vocab}}
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        build_checkpoint(folder, args, dtype)
        backend.unregister()
        model = load_quantized(folder, args, dtype)
        with backend.enabled():
            model_bnb4_quantized = load_quantized(folder, args, dtype)

    # 1. quantization on load: bnb4's kernels must store what bitsandbytes' store
    a, b = quantized_state(model), quantized_state(model_bnb4_quantized)
    differing = [k for k in a if not torch.equal(a[k].cpu().view(torch.uint8) if a[k].dtype != torch.uint8
                                                 else a[k].cpu(),
                                                 b[k].cpu().view(torch.uint8) if b[k].dtype != torch.uint8
                                                 else b[k].cpu())]
    results["quantized_tensors"] = len(a)
    results["quantized_tensors_differing"] = differing
    exact_expected = args.device.startswith("cuda")  # bitsandbytes' CPU backend quantizes differently
    print(f"quantize on load: {len(a) - len(differing)}/{len(a)} 4-bit tensors byte-identical"
          + ("" if exact_expected else " (CPU: bitsandbytes' pure-PyTorch quantizer, not the CUDA reference)"))
    if differing and exact_expected:
        failures.append(f"{len(differing)} quantized tensors differ, e.g. {differing[:3]}")
    del model_bnb4_quantized

    # 2. greedy generation, same model, bitsandbytes' kernels then bnb4's
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(1, args.vocab, (1, args.prompt), generator=gen).to(args.device)
    tokens_bnb, logits_bnb = generate(model, prompt, args)
    with backend.enabled():
        tokens_bnb4, logits_bnb4 = generate(model, prompt, args)
    same = tokens_bnb == tokens_bnb4
    scale = logits_bnb.abs().max().item()
    steps = min(len(logits_bnb), len(logits_bnb4))
    first = None if same else next(i for i, (x, y) in enumerate(zip(tokens_bnb, tokens_bnb4)) if x != y)
    if first is not None:  # greedy decoding parts at a near tie; past it the contexts differ, so compare up to it
        steps = first + 1
    diff = (logits_bnb4[:steps] - logits_bnb[:steps]).abs().max().item()
    results.update(tokens_bnb=tokens_bnb, tokens_bnb4=tokens_bnb4, same_tokens=same,
                   logits_max_abs_diff=diff, logits_max_abs=scale, logits_rel_diff=diff / scale)
    print(f"generate {args.new_tokens} tokens: bitsandbytes {tokens_bnb}")
    print(f"                        bnb4         {tokens_bnb4}  -> {'same tokens' if same else 'DIFFERENT'}")
    print(f"logits{'' if same else f' (steps 0..{first})'}: max |bnb4 - bitsandbytes| = {diff:.4g} "
          f"(max |logit| {scale:.4g}, relative {diff / scale:.3g}, tolerance {args.logit_rtol})")
    if first is not None:
        top2 = logits_bnb[first].topk(2).values
        gap = (top2[0] - top2[1]).item()
        step_diff = (logits_bnb4[first] - logits_bnb[first]).abs().max().item()
        note = (f"tokens part at step {first}, where bitsandbytes' top-2 logit gap is {gap:.4g} and the logits "
                f"differ by up to {step_diff:.4g}")
        if gap > 2 * step_diff:  # the difference there could not swap the two: not a tie
            failures.append(note)
        else:
            print(f"e2e: {note}: a tie that the two kernels' rounding decides")
    if diff > args.logit_rtol * scale:
        failures.append(f"logits differ by {diff:.4g} > {args.logit_rtol} * {scale:.4g}")

    # 3. one decode step, both ways
    t_bnb = time_decode_step(model, prompt, args)
    with backend.enabled():
        t_bnb4 = time_decode_step(model, prompt, args)
    results.update(decode_step_s_bnb=t_bnb, decode_step_s_bnb4=t_bnb4)
    print(f"one decode step (median of {args.reps}): bitsandbytes {t_bnb * 1e3:.3f} ms, bnb4 {t_bnb4 * 1e3:.3f} ms "
          f"(bnb4 / bitsandbytes = {t_bnb4 / t_bnb:.2f})")

    results["failures"] = failures
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print("e2e: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
