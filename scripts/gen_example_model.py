#!/usr/bin/env python3
"""Generates the bundled example model: a tiny Llama-shaped Hugging Face directory with random weights.

    python3 scripts/gen_example_model.py [OUT_DIR]      (default: models/example-llama)

Output (deterministic: fixed seed, pure standard library, so every machine writes the same bytes):
  config.json                          LlamaForCausalLM, 3 layers, hidden 256, GQA (4 heads, 2 KV heads)
  model-0000{1,2}-of-00002.safetensors float16 weights in two shards
  model.safetensors.index.json         the shard index, as transformers' save_pretrained writes it

It is the input of the README's main job (`bnb4 quantize` + `bnb4 inspect`) and of
scripts/e2e_transformers.sh. The weights are random (scaled like a trained model's, 1/sqrt(fan_in)),
so generation is meaningless text but fully deterministic.
"""
import json
import math
import os
import random
import struct
import sys

SEED = 4242
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 256,
    "initializer_range": 0.02,
    "intermediate_size": 688,
    "max_position_embeddings": 512,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "use_cache": True,
    "vocab_size": 1024,
}


def tensors():
    """(name, shape, kind) in the order transformers' state_dict lists them."""
    c = CONFIG
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd, nh, nkv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (v, h), "embed")]
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out += [
            (p + "self_attn.q_proj.weight", (nh * hd, h), "linear"),
            (p + "self_attn.k_proj.weight", (nkv * hd, h), "linear"),
            (p + "self_attn.v_proj.weight", (nkv * hd, h), "linear"),
            (p + "self_attn.o_proj.weight", (h, nh * hd), "linear"),
            (p + "mlp.gate_proj.weight", (inter, h), "linear"),
            (p + "mlp.up_proj.weight", (inter, h), "linear"),
            (p + "mlp.down_proj.weight", (h, inter), "linear"),
            (p + "input_layernorm.weight", (h,), "norm"),
            (p + "post_attention_layernorm.weight", (h,), "norm"),
        ]
    out += [("model.norm.weight", (h,), "norm"), ("lm_head.weight", (v, h), "linear")]
    return out


def f16_bytes(rng, shape, kind):
    n = 1
    for d in shape:
        n *= d
    if kind == "norm":
        vals = [1.0 + 0.1 * rng.gauss(0.0, 1.0) for _ in range(n)]
    else:
        std = 1.0 if kind == "embed" else 1.0 / math.sqrt(shape[1])
        vals = [rng.gauss(0.0, std) for _ in range(n)]
    return struct.pack("<%de" % n, *vals)


def write_safetensors(path, items):
    """items: list of (name, shape, raw f16 bytes). Laid out as the safetensors library does (all F16
    here, so by name), header padded with spaces to a multiple of 8."""
    items = sorted(items, key=lambda t: t[0])
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, raw in items:
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, raw in items:
            f.write(raw)
    os.replace(tmp, path)
    return off


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "models", "example-llama")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(SEED)
    data = [(name, shape, f16_bytes(rng, shape, kind)) for name, shape, kind in tensors()]
    # two shards, split after the first half of the layers (transformers splits by size, in order)
    split = next(i for i, (n, _, _) in enumerate(data) if n.startswith("model.layers.2."))
    shards = [data[:split], data[split:]]
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        total += write_safetensors(os.path.join(out, fname), shard)
        for name, _, _ in shard:
            weight_map[name] = fname
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(CONFIG, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        f.write(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}, indent=2, sort_keys=True) + "\n")
    print("wrote %s (%d tensors, %.1f MB)" % (out, len(data), total / 1e6))


if __name__ == "__main__":
    main()
