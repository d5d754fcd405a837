#!/bin/sh
# End-to-end check on a CUDA machine with torch + transformers (+ bitsandbytes, or its files in
# .device/bnb/): a model directory converted by `bnb4 quantize` loads with transformers'
# from_pretrained, and greedy generation gives the same tokens (and bitwise the same logits) as the
# same model quantized by bitsandbytes itself; the tensors transformers/bitsandbytes save for that model
# are byte-identical to ours, the double-quantization offset included.
#
#   scripts/e2e_transformers.sh            (from the repo root)
#
# Environment:
#   BNB4=path/to/bnb4   use this binary (default: build one in build-e2e/, CPU backend)
#   BNB_SITE=dir        where bitsandbytes' Python files are (default .device/bnb, put on PYTHONPATH)
#   E2E_WORK=dir        scratch directory (default /tmp/bnb4-e2e)
#   BNB4_CUDA_BIN=path  a bnb4 built with BNB4_CUDA=ON: also convert with --device cuda and require
#                       files identical to the CPU conversion (E2E_CUDA=1 builds one when BNB4 is unset)
# Exit status 0 when every check passed.
set -eu
root=$(pwd)
work=${E2E_WORK:-/tmp/bnb4-e2e}
site=${BNB_SITE:-$root/.device/bnb}
[ -d "$site" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${BNB4:-}" ]; then
  cmake -S "$root" -B "$root/build-e2e" -DCMAKE_BUILD_TYPE=Release -DBNB4_CUDA="${E2E_CUDA:-0}" \
        -DBNB4_BUILD_TESTS=OFF -DBNB4_BUILD_BENCH=OFF >/dev/null
  cmake --build "$root/build-e2e" -j "$(nproc)" --target bnb4_cli >/dev/null
  BNB4="$root/build-e2e/bnb4"
  [ "${E2E_CUDA:-0}" = 1 ] && BNB4_CUDA_BIN=${BNB4_CUDA_BIN:-$BNB4}
fi
model="$root/models/example-llama"
[ -f "$model/config.json" ] || python3 "$root/scripts/gen_example_model.py" "$model"
rm -rf "$work"
mkdir -p "$work"
"$BNB4" info | head -3
t0=$(date +%s.%N)
"$BNB4" quantize "$model" "$work/nf4-dq"
"$BNB4" quantize --quant-type fp4 --no-double-quant "$model" "$work/fp4"
"$BNB4" inspect "$work/nf4-dq" | tail -1
cuda_status="not run"
if [ -n "${BNB4_CUDA_BIN:-}" ]; then
  # the CUDA runtime/cuBLAS of the toolkit or of torch's wheels, where the loader does not look by itself
  extra=$(python3 -c 'import glob, os
try:
    import nvidia; base = list(nvidia.__path__)
except Exception: base = []
print(":".join(glob.glob("/usr/local/cuda*/lib64") + [d for b in base for d in glob.glob(os.path.join(b, "*", "lib"))]))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$extra"
  cuda_status=FAIL
  if "$BNB4_CUDA_BIN" quantize --device cuda "$model" "$work/nf4-dq-cuda" &&
     "$BNB4_CUDA_BIN" quantize --device cuda --quant-type fp4 --no-double-quant "$model" "$work/fp4-cuda" &&
     diff -r "$work/nf4-dq" "$work/nf4-dq-cuda" && diff -r "$work/fp4" "$work/fp4-cuda"; then
    cuda_status="PASS (files identical to the CPU conversion)"
  fi
  echo "e2e: --device cuda: $cuda_status"
fi

E2E_WORK="$work" E2E_MODEL="$model" python3 - <<'PY'
import json, os, struct, sys, time
import torch, transformers, bitsandbytes
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

work, src = os.environ["E2E_WORK"], os.environ["E2E_MODEL"]
print("e2e: torch %s, transformers %s, bitsandbytes %s, %s" % (
    torch.__version__, transformers.__version__, bitsandbytes.__version__, torch.cuda.get_device_name(0)))

def tensors(d):
    out = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        b = open(os.path.join(d, fn), "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k != "__metadata__":
                s, e = v["data_offsets"]
                out[k] = (v["dtype"], v["shape"], b[8 + n + s:8 + n + e])
    return out

def load(path, **kw):
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16, device_map="cuda", **kw)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float16, device_map="cuda", **kw)

failures = 0
prompt = torch.tensor([[1, 17, 300, 42, 999, 5, 77, 123, 640, 2]], device="cuda")
mask = torch.ones_like(prompt)
for name, qt, dq in (("nf4-dq", "nf4", True), ("fp4", "fp4", False)):
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qt, bnb_4bit_use_double_quant=dq,
                             bnb_4bit_compute_dtype=torch.float16)
    t0 = time.time()
    ref = load(src, quantization_config=cfg)          # bitsandbytes quantizes on the GPU
    ours = load(os.path.join(work, name))             # our checkpoint, quantization_config from config.json
    n4 = sum(type(m).__name__ == "Linear4bit" for m in ours.modules())
    print("e2e[%s]: loaded both (%d Linear4bit layers in ours, %d in bitsandbytes') in %.1f s"
          % (name, n4, sum(type(m).__name__ == "Linear4bit" for m in ref.modules()), time.time() - t0))
    # 1. the bytes bitsandbytes/transformers save for this model vs the bytes bnb4 wrote
    saved = os.path.join(work, name + "-saved-by-bitsandbytes")
    ref.save_pretrained(saved)
    a, b = tensors(saved), tensors(os.path.join(work, name))
    if set(a) != set(b):
        print("e2e[%s]: FAIL key sets differ: only bitsandbytes %s, only bnb4 %s"
              % (name, sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5]))
        failures += 1
    same = 0
    for k in sorted(set(a) & set(b)):  # every tensor, the nested offset's too (bnb4_torch_mean.h)
        if a[k] != b[k]:
            print("e2e[%s]: FAIL tensor %s differs (%s %s vs %s %s)" % (name, k, a[k][0], a[k][1], b[k][0], b[k][1]))
            failures += 1
        else:
            same += 1
    print("e2e[%s]: %d tensors byte-identical to bitsandbytes' own save" % (name, same))
    # 2. generation and logits
    with torch.no_grad():
        la, lb = ref(prompt, attention_mask=mask).logits, ours(prompt, attention_mask=mask).logits
        ga = ref.generate(prompt, attention_mask=mask, max_new_tokens=32, do_sample=False)
        gb = ours.generate(prompt, attention_mask=mask, max_new_tokens=32, do_sample=False)
    tok_ok = torch.equal(ga, gb)
    print("e2e[%s]: greedy tokens %s (%s), logits %s (max |diff| %.3g)" % (
        name, "IDENTICAL" if tok_ok else "DIFFER", gb[0, prompt.shape[1]:].tolist()[:12],
        "bitwise equal" if torch.equal(la, lb) else "differ", (la.float() - lb.float()).abs().max().item()))
    failures += not tok_ok
    del ref, ours
    torch.cuda.empty_cache()
print("e2e: %s" % ("PASS" if failures == 0 else "FAIL (%d problems)" % failures))
sys.exit(1 if failures else 0)
PY
echo "e2e: total $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
[ "$cuda_status" != FAIL ] || exit 1
