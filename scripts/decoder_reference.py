#!/usr/bin/env python3
"""Reference values for the Hugging Face decoder imports (GPT-2, Llama, Mamba).

A NumPy (float64) re-implementation of GPT2LMHeadModel and LlamaForCausalLM written
from the Hugging Face model definitions' equations, not from ponder's code:

* GPT-2: x = wte[ids] + wpe[pos]; per block x += c_proj(attn(ln_1(x))) with the fused
  Conv1D c_attn ([in, out] weights) split into q, k, v; x += c_proj(gelu_new(c_fc(ln_2(x))));
  logits = ln_f(x) @ wte^T (tied head).
* Llama: x = embed_tokens[ids]; per block x += o_proj(attn(RMSNorm(x))) with rotary
  positions on q and k (inv_freq = theta^(-2i/d_head), cos/sin of cat(angles, angles),
  q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x2, x1)) and grouped-query attention
  (key/value head h // (H / H_kv) for query head h); x += down(silu(gate(h)) * up(h))
  with h = RMSNorm(x); logits = RMSNorm(x) @ lm_head^T (untied).
* Mamba: the weights of scripts/mamba_reference.py (the same seed and equations) in the
  Hugging Face naming (backbone.embeddings.weight instead of backbone.embedding.weight)
  with a MambaConfig config.json; its expected values are that script's
  mamba_reference.json.

It writes to crates/ponder-transformer/tests/data/:
  tiny-gpt2/{config.json,model.safetensors}, tiny-llama/{config.json,model.safetensors}
  and tiny-{gpt2,llama}.expected.safetensors, holding
    hidden.{l}   every block's output (the residual stream) for a right-padded batch of
                 two sequences (lengths 7 and 5; the padding id 0 follows the second),
    logits       the final norm and head on it,
    decode       the logits of every position of an unpadded batch of two sequences of 8
                 tokens (checked in-script against prefill of 3 tokens and a KV-cache step
                 for each of the other 5),
    padded_ids, decode_ids (as F32) and lengths;
and to crates/ponder-mamba/tests/data/tiny-mamba-hf/{config.json,model.safetensors}.

Run from the repository root: python3 scripts/decoder_reference.py
"""

import json
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import mamba_reference  # noqa: E402  (the Mamba weights and their expected values)
from encoder_reference import write_safetensors  # noqa: E402

OUT = os.path.join(ROOT, "crates", "ponder-transformer", "tests", "data")
MAMBA_OUT = os.path.join(ROOT, "crates", "ponder-mamba", "tests", "data", "tiny-mamba-hf")

PADDED_IDS = np.array([[3, 17, 5, 29, 11, 2, 8], [21, 4, 30, 9, 14, 0, 0]], dtype=np.int64)
LENGTHS = [7, 5]
DECODE_IDS = np.array([[6, 1, 25, 13, 7, 19, 3, 22], [12, 28, 2, 16, 9, 31, 5, 10]], dtype=np.int64)
PROMPT = 3

GPT2 = dict(vocab_size=33, n_embd=16, n_head=4, n_layer=4, n_positions=32, eps=1e-5)
LLAMA = dict(vocab_size=35, hidden_size=16, heads=4, kv_heads=2, n_layer=4, ff=24,
             positions=32, eps=1e-6, theta=500.0)


def f32(a):
    """Rounds to float32 and back: the weights are stored as F32, the math runs in f64."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def causal_attention(q, k, v):
    """q: [B, H, T, dh], k, v: [B, H, S, dh] with the T queries the last T of S positions."""
    t, s = q.shape[2], k.shape[2]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    future = np.triu(np.ones((t, s), dtype=bool), k=s - t + 1)
    scores = np.where(future, -np.inf, scores)
    return softmax(scores) @ v


def heads(x, n):
    b, t, d = x.shape
    return x.reshape(b, t, n, d // n).transpose(0, 2, 1, 3)


def merge(x):
    b, h, t, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * dh)


# ----------------------------------------------------------------------------- GPT-2
def gpt2_weights(rng):
    c = GPT2
    d, v, ff = c["n_embd"], c["vocab_size"], 4 * c["n_embd"]
    w = {"transformer.wte.weight": rng.normal(0, 0.5, (v, d)),
         "transformer.wpe.weight": rng.normal(0, 0.3, (c["n_positions"], d)),
         "transformer.ln_f.weight": 1 + rng.normal(0, 0.1, d),
         "transformer.ln_f.bias": rng.normal(0, 0.1, d)}
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "ln_1.bias"] = rng.normal(0, 0.1, d)
        # Conv1D: [in, out]; large enough that attention is far from uniform
        w[p + "attn.c_attn.weight"] = rng.normal(0, 0.6, (d, 3 * d))
        w[p + "attn.c_attn.bias"] = rng.normal(0, 0.1, 3 * d)
        w[p + "attn.c_proj.weight"] = rng.normal(0, 0.25, (d, d))
        w[p + "attn.c_proj.bias"] = rng.normal(0, 0.1, d)
        w[p + "ln_2.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "ln_2.bias"] = rng.normal(0, 0.1, d)
        w[p + "mlp.c_fc.weight"] = rng.normal(0, 0.3, (d, ff))
        w[p + "mlp.c_fc.bias"] = rng.normal(0, 0.1, ff)
        w[p + "mlp.c_proj.weight"] = rng.normal(0, 0.15, (ff, d))
        w[p + "mlp.c_proj.bias"] = rng.normal(0, 0.1, d)
        # the causal-mask buffer older checkpoints carry, which the loader skips
        if i == 0:
            n = c["n_positions"]
            w[p + "attn.bias"] = np.tril(np.ones((n, n)))[None, None]
    return {k: f32(a) for k, a in w.items()}


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2_block(w, i, x, past=None):
    """One block on x [B, T, d] at positions past_len..; returns (x, (k, v) of all positions)."""
    c = GPT2
    d, h = c["n_embd"], c["n_head"]
    p = f"transformer.h.{i}."
    a = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], c["eps"])
    qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
    q, k, v = (heads(qkv[..., j * d:(j + 1) * d], h) for j in range(3))
    if past is not None:
        k, v = np.concatenate([past[0], k], 2), np.concatenate([past[1], v], 2)
    x = x + merge(causal_attention(q, k, v)) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
    m = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], c["eps"])
    m = gelu_new(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
    return x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"], (k, v)


def gpt2_forward(w, ids, start=0, caches=None):
    t = ids.shape[1]
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][start:start + t][None]
    hidden, new = [], []
    for i in range(GPT2["n_layer"]):
        x, kv = gpt2_block(w, i, x, None if caches is None else caches[i])
        hidden.append(x)
        new.append(kv)
    f = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], GPT2["eps"])
    return f @ w["transformer.wte.weight"].T, hidden, new


def gpt2_config():
    c = GPT2
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": c["vocab_size"], "n_embd": c["n_embd"], "n_head": c["n_head"],
            "n_layer": c["n_layer"], "n_positions": c["n_positions"], "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": c["eps"],
            "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
            "scale_attn_weights": True, "tie_word_embeddings": True}


# ----------------------------------------------------------------------------- Llama
def llama_weights(rng):
    c = LLAMA
    d, v, ff = c["hidden_size"], c["vocab_size"], c["ff"]
    dh = d // c["heads"]
    dkv = c["kv_heads"] * dh
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (v, d)),
         "model.norm.weight": 1 + rng.normal(0, 0.1, d),
         "lm_head.weight": rng.normal(0, 0.3, (v, d))}
    for i in range(c["n_layer"]):
        p = f"model.layers.{i}."
        # PyTorch Linear: [out, in]
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.6, (d, d))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.6, (dkv, d))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.4, (dkv, d))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.25, (d, d))
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.4, (ff, d))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.4, (ff, d))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.2, (d, ff))
    return {k: f32(a) for k, a in w.items()}


def rms_norm(x, g, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * g


def silu(x):
    return x / (1 + np.exp(-x))


def rotary(x, start):
    """x: [B, H, T, dh] at positions start..start+T."""
    dh, t = x.shape[-1], x.shape[2]
    inv_freq = 1.0 / LLAMA["theta"] ** (np.arange(0, dh, 2) / dh)
    angles = np.arange(start, start + t)[:, None] * inv_freq[None]
    emb = np.concatenate([angles, angles], -1)
    cos, sin = np.cos(emb), np.sin(emb)
    half = dh // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def llama_block(w, i, x, start, past=None):
    c = LLAMA
    p = f"model.layers.{i}."
    groups = c["heads"] // c["kv_heads"]
    a = rms_norm(x, w[p + "input_layernorm.weight"], c["eps"])
    q = rotary(heads(a @ w[p + "self_attn.q_proj.weight"].T, c["heads"]), start)
    k = rotary(heads(a @ w[p + "self_attn.k_proj.weight"].T, c["kv_heads"]), start)
    v = heads(a @ w[p + "self_attn.v_proj.weight"].T, c["kv_heads"])
    if past is not None:
        k, v = np.concatenate([past[0], k], 2), np.concatenate([past[1], v], 2)
    att = causal_attention(q, np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1))
    x = x + merge(att) @ w[p + "self_attn.o_proj.weight"].T
    m = rms_norm(x, w[p + "post_attention_layernorm.weight"], c["eps"])
    m = silu(m @ w[p + "mlp.gate_proj.weight"].T) * (m @ w[p + "mlp.up_proj.weight"].T)
    return x + m @ w[p + "mlp.down_proj.weight"].T, (k, v)


def llama_forward(w, ids, start=0, caches=None):
    x = w["model.embed_tokens.weight"][ids]
    hidden, new = [], []
    for i in range(LLAMA["n_layer"]):
        x, kv = llama_block(w, i, x, start, None if caches is None else caches[i])
        hidden.append(x)
        new.append(kv)
    f = rms_norm(x, w["model.norm.weight"], LLAMA["eps"])
    return f @ w["lm_head.weight"].T, hidden, new


def llama_config():
    c = LLAMA
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": c["vocab_size"], "hidden_size": c["hidden_size"],
            "intermediate_size": c["ff"], "num_hidden_layers": c["n_layer"],
            "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"],
            "max_position_embeddings": c["positions"], "rms_norm_eps": c["eps"],
            "rope_theta": c["theta"], "rope_scaling": None, "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
            "torch_dtype": "float32"}


# ----------------------------------------------------------------------------- output
def write_model(name, weights, config, forward):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(folder, "model.safetensors"),
                      {k: a.astype(np.float32) for k, a in weights.items()})

    logits, hidden, _ = forward(weights, PADDED_IDS)
    decode, _, _ = forward(weights, DECODE_IDS)
    # self-check: prefill then one KV-cache step per token reproduces the full forward
    step_logits, _, caches = forward(weights, DECODE_IDS[:, :PROMPT])
    got = [step_logits[:, -1]]
    for t in range(PROMPT, DECODE_IDS.shape[1]):
        out, _, caches = forward(weights, DECODE_IDS[:, t:t + 1], start=t, caches=caches)
        got.append(out[:, -1])
    want = decode[:, PROMPT - 1:]
    err = np.max(np.abs(np.stack(got, 1) - want))
    assert err < 1e-10, f"{name}: prefill + steps differ from the full forward by {err}"
    # self-check: padding after a row does not change its real positions (causal)
    alone, _, _ = forward(weights, PADDED_IDS[1:, :LENGTHS[1]])
    assert np.max(np.abs(alone - logits[1:, :LENGTHS[1]])) < 1e-12

    expected = {"padded_ids": PADDED_IDS.astype(np.float32),
                "lengths": np.array(LENGTHS, dtype=np.float32),
                "decode_ids": DECODE_IDS.astype(np.float32),
                "logits": logits.astype(np.float32),
                "decode": decode.astype(np.float32)}
    for i, h in enumerate(hidden):
        expected[f"hidden.{i}"] = h.astype(np.float32)
    path = os.path.join(OUT, f"{name}.expected.safetensors")
    write_safetensors(path, expected)
    print(f"wrote {os.path.relpath(folder, ROOT)}/ and {os.path.relpath(path, ROOT)}; "
          f"max |step - full| = {err:.1e}; logits[0, 0, :3] = {logits[0, 0, :3].tolist()}")


def write_mamba_hf():
    cfg = mamba_reference.CFG
    w = mamba_reference.make_weights(np.random.default_rng(mamba_reference.SEED))
    renamed = {k.replace("backbone.embedding.", "backbone.embeddings."): np.asarray(a, np.float32)
               for k, a in w.items()}
    os.makedirs(MAMBA_OUT, exist_ok=True)
    config = {"architectures": ["MambaForCausalLM"], "model_type": "mamba",
              "vocab_size": cfg["vocab_size"], "hidden_size": cfg["d_model"],
              "state_size": cfg["d_state"], "num_hidden_layers": cfg["n_layer"],
              "layer_norm_epsilon": cfg["norm_eps"], "expand": cfg["expand"],
              "conv_kernel": cfg["d_conv"], "use_bias": False, "use_conv_bias": True,
              "time_step_rank": cfg["dt_rank"], "hidden_act": "silu",
              "residual_in_fp32": True, "tie_word_embeddings": True}
    with open(os.path.join(MAMBA_OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(MAMBA_OUT, "model.safetensors"), renamed)
    print(f"wrote {os.path.relpath(MAMBA_OUT, ROOT)}/ (expected values: mamba_reference.json)")


def main():
    rng = np.random.default_rng(20261206)
    write_model("tiny-gpt2", gpt2_weights(rng), gpt2_config(), gpt2_forward)
    write_model("tiny-llama", llama_weights(rng), llama_config(), llama_forward)
    write_mamba_hf()


if __name__ == "__main__":
    main()
