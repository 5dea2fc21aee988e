#!/usr/bin/env python3
"""Independent NumPy reference for a tiny Mamba-1 selective-SSM language model.

Writes a random, deterministic (seeded) Mamba-1 model in the state-spaces/mamba
tensor naming (``mamba_ssm/modules/mamba_simple.py`` + ``models/mixer_seq_simple.py``)
as a hand-written safetensors file, plus a JSON file of expected values that the
Rust test ``crates/ponder-mamba/tests/reference.rs`` reads and compares against.

Equations (per block, x: [B, T, d]; all math in float64 on float32-rounded weights):
    u            = RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w
    [xs, z]      = split(u @ in_proj^T, d_inner)             (xs first, z second)
    xs[t, c]     = silu(b[c] + sum_k W[c,0,k] * xs[t-(d_conv-1)+k, c])   (causal, zero-padded)
    [δ, B, C]    = split(xs @ x_proj^T, [dt_rank, d_state, d_state])
    Δ            = softplus(δ @ dt_proj.weight^T + dt_proj.bias)
    A            = -exp(A_log)
    h_t          = exp(Δ_t[:,None] * A) * h_{t-1} + (Δ_t * xs_t)[:,None] * B_t[None,:],  h_{-1} = 0
    y_t          = h_t @ C_t + D * xs_t
    mixer(x)     = (y * silu(z)) @ out_proj^T
    x           <- x + mixer(RMSNorm(x))
Model: embedding -> n_layer blocks -> RMSNorm(norm_f) -> logits = h @ embedding^T (tied head).

The recurrent step form (conv_state [B, d_inner, d_conv] holding the last d_conv
pre-conv xs values, oldest first; ssm_state [B, d_inner, d_state]) is also
implemented and checked in-script against the full forward to 1e-10.

Run from anywhere:
    python3 scripts/mamba_reference.py
Outputs (relative to the repository root):
    crates/ponder-mamba/tests/data/mamba_reference.safetensors
    crates/ponder-mamba/tests/data/mamba_reference.json
"""
import json
import math
import os
import struct

import numpy as np

SEED = 20231201
# d_model 20 gives dt_rank = ceil(20/16) = 2, so a transposed dt_proj would not pass.
CFG = dict(vocab_size=11, d_model=20, n_layer=2, d_state=4, d_conv=4, expand=2, norm_eps=1e-5)
CFG["d_inner"] = CFG["expand"] * CFG["d_model"]
CFG["dt_rank"] = math.ceil(CFG["d_model"] / 16)
INPUT_IDS = np.array([[1, 5, 2, 9, 0, 3, 10], [7, 7, 4, 1, 8, 2, 6]], dtype=np.int64)
# Prompts shorter than, equal to and longer than d_conv = 4 (the conv state is zero-
# padded, exact, or the tail of the prompt).
PROMPT_LENS = (2, 4, 5)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "crates", "ponder-mamba", "tests", "data")


# ----------------------------------------------------------------------------- weights
def make_weights(rng):
    """Random but realistic weights, rounded to f32 (math later runs in f64 on these)."""
    V, d, n = CFG["vocab_size"], CFG["d_model"], CFG["d_state"]
    di, R, K = CFG["d_inner"], CFG["dt_rank"], CFG["d_conv"]

    def lin(out_f, in_f):
        b = 1.0 / math.sqrt(in_f)
        return rng.uniform(-b, b, size=(out_f, in_f))

    w = {"backbone.embedding.weight": rng.normal(0.0, 1.0, size=(V, d))}
    for i in range(CFG["n_layer"]):
        p = f"backbone.layers.{i}."
        w[p + "norm.weight"] = 1.0 + rng.normal(0.0, 0.1, size=d)
        w[p + "mixer.in_proj.weight"] = lin(2 * di, d)
        w[p + "mixer.conv1d.weight"] = rng.uniform(-0.5, 0.5, size=(di, 1, K))
        w[p + "mixer.conv1d.bias"] = rng.uniform(-0.2, 0.2, size=di)
        # x4 so B and C are not tiny: the expected values then depend on A_log and Δ
        # (checked: +0.1 on A_log moves the logits by ~1e-3, far above the 1e-4 tolerance).
        w[p + "mixer.x_proj.weight"] = 4.0 * lin(R + 2 * n, di)
        w[p + "mixer.dt_proj.weight"] = rng.uniform(-R ** -0.5, R ** -0.5, size=(di, R))
        # Mamba's dt init: dt ~ logU[1e-3, 1e-1], bias = softplus^{-1}(dt); +1.0 so Δ is
        # not tiny and the reference is sensitive to the scan.
        dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), size=di))
        dt = np.maximum(dt, 1e-4)
        w[p + "mixer.dt_proj.bias"] = dt + np.log(-np.expm1(-dt)) + 1.0
        w[p + "mixer.A_log"] = np.log(np.tile(np.arange(1, n + 1, dtype=np.float64), (di, 1))) \
            + rng.normal(0.0, 0.1, size=(di, n))
        w[p + "mixer.D"] = 1.0 + rng.normal(0.0, 0.1, size=di)
        w[p + "mixer.out_proj.weight"] = lin(d, di)
    w["backbone.norm_f.weight"] = 1.0 + rng.normal(0.0, 0.1, size=d)
    # Round to f32 first so the stored file and the f64 math see identical values.
    return {k: v.astype(np.float32).astype(np.float64) for k, v in w.items()}


def write_safetensors(path, tensors):
    """Minimal safetensors writer: u64 LE header length, JSON header, raw LE f32 data."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------- model
def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    return np.logaddexp(0.0, x)  # log(1 + e^x), overflow-safe


def rms_norm(x, w):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + CFG["norm_eps"]) * w


def layer(w, i):
    p = f"backbone.layers.{i}."
    return {k[len(p):]: v for k, v in w.items() if k.startswith(p)}


def ssm_params(L, xs):
    """x_proj / dt_proj on post-conv xs (..., d_inner) -> Δ, B, C, A."""
    R, n = CFG["dt_rank"], CFG["d_state"]
    dbc = xs @ L["mixer.x_proj.weight"].T
    delta, Bm, Cm = dbc[..., :R], dbc[..., R:R + n], dbc[..., R + n:]
    dt = softplus(delta @ L["mixer.dt_proj.weight"].T + L["mixer.dt_proj.bias"])
    return dt, Bm, Cm, -np.exp(L["mixer.A_log"])


def mixer_forward(L, u):
    """Full-sequence mixer. u: [B, T, d] -> (out [B,T,d], conv_state, ssm_state)."""
    Bsz, T, _ = u.shape
    di, K, n = CFG["d_inner"], CFG["d_conv"], CFG["d_state"]
    xz = u @ L["mixer.in_proj.weight"].T
    x_pre, z = xz[..., :di], xz[..., di:]
    # Causal depthwise conv: left-pad with K-1 zeros in time.
    Wc, bc = L["mixer.conv1d.weight"][:, 0, :], L["mixer.conv1d.bias"]
    xp = np.concatenate([np.zeros((Bsz, K - 1, di)), x_pre], axis=1)
    conv = bc + sum(Wc[:, k] * xp[:, k:k + T, :] for k in range(K))
    xs = silu(conv)
    dt, Bm, Cm, A = ssm_params(L, xs)
    h = np.zeros((Bsz, di, n))
    ys = []
    for t in range(T):  # sequential selective scan
        h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * xs[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append(np.einsum("bcn,bn->bc", h, Cm[:, t]) + L["mixer.D"] * xs[:, t])
    y = np.stack(ys, axis=1)
    out = (y * silu(z)) @ L["mixer.out_proj.weight"].T
    conv_state = xp[:, -K:, :].transpose(0, 2, 1).copy()  # last K pre-conv xs, oldest first
    return out, conv_state, h


def forward(w, ids):
    """Full forward. Returns logits, per-block residuals, layer-0 mixer out, states."""
    x = w["backbone.embedding.weight"][ids]
    hidden, conv_states, ssm_states, mixer0 = [], [], [], None
    for i in range(CFG["n_layer"]):
        L = layer(w, i)
        m, cs, ss = mixer_forward(L, rms_norm(x, L["norm.weight"]))
        if i == 0:
            mixer0 = m
        x = x + m
        hidden.append(x)
        conv_states.append(cs)
        ssm_states.append(ss)
    logits = rms_norm(x, w["backbone.norm_f.weight"]) @ w["backbone.embedding.weight"].T
    return dict(logits=logits, hidden=hidden, mixer0=mixer0, conv=conv_states, ssm=ssm_states)


def step(w, tok, conv_states, ssm_states):
    """One recurrent step. tok: [B]. Updates the state lists in place; returns logits [B, V]."""
    di = CFG["d_inner"]
    x = w["backbone.embedding.weight"][tok]
    for i in range(CFG["n_layer"]):
        L = layer(w, i)
        xz = rms_norm(x, L["norm.weight"]) @ L["mixer.in_proj.weight"].T
        x_pre, z = xz[:, :di], xz[:, di:]
        cs = np.roll(conv_states[i], -1, axis=-1)
        cs[:, :, -1] = x_pre
        conv_states[i] = cs
        xs = silu(np.sum(cs * L["mixer.conv1d.weight"][:, 0, :], axis=-1) + L["mixer.conv1d.bias"])
        dt, Bm, Cm, A = ssm_params(L, xs)
        h = np.exp(dt[:, :, None] * A) * ssm_states[i] + (dt * xs)[:, :, None] * Bm[:, None, :]
        ssm_states[i] = h
        y = np.einsum("bcn,bn->bc", h, Cm) + L["mixer.D"] * xs
        x = x + (y * silu(z)) @ L["mixer.out_proj.weight"].T
    return rms_norm(x, w["backbone.norm_f.weight"]) @ w["backbone.embedding.weight"].T


def zero_states(bsz):
    di, K, n = CFG["d_inner"], CFG["d_conv"], CFG["d_state"]
    return ([np.zeros((bsz, di, K)) for _ in range(CFG["n_layer"])],
            [np.zeros((bsz, di, n)) for _ in range(CFG["n_layer"])])


# ----------------------------------------------------------------------------- main
def main():
    w = make_weights(np.random.default_rng(SEED))
    full = forward(w, INPUT_IDS)
    Bsz, T = INPUT_IDS.shape

    # Self-check 1: pure recurrence from zero state reproduces the full forward.
    conv_s, ssm_s = zero_states(Bsz)
    step_logits = np.stack([step(w, INPUT_IDS[:, t], conv_s, ssm_s) for t in range(T)], axis=1)
    assert np.max(np.abs(step_logits - full["logits"])) < 1e-10, "step != full forward"
    for i in range(CFG["n_layer"]):
        assert np.max(np.abs(conv_s[i] - full["conv"][i])) < 1e-10
        assert np.max(np.abs(ssm_s[i] - full["ssm"][i])) < 1e-10

    # Self-check 2: prefill each prompt with the full forward, then step the rest.
    tails, prefill_states = {}, {}
    for plen in PROMPT_LENS:
        pre = forward(w, INPUT_IDS[:, :plen])
        prefill_states[str(plen)] = {"conv": [c.tolist() for c in pre["conv"]],
                                     "ssm": [s.tolist() for s in pre["ssm"]]}
        conv_s, ssm_s = [c.copy() for c in pre["conv"]], [s.copy() for s in pre["ssm"]]
        tail = np.stack([step(w, INPUT_IDS[:, t], conv_s, ssm_s) for t in range(plen, T)], axis=1)
        assert np.max(np.abs(tail - full["logits"][:, plen:])) < 1e-10, "prefill+step mismatch"
        tails[str(plen)] = tail.tolist()

    os.makedirs(OUT_DIR, exist_ok=True)
    st_path = os.path.join(OUT_DIR, "mamba_reference.safetensors")
    js_path = os.path.join(OUT_DIR, "mamba_reference.json")
    write_safetensors(st_path, w)

    ref = {
        "config": {k: CFG[k] for k in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv",
                                       "expand", "d_inner", "dt_rank", "norm_eps")},
        "input_ids": INPUT_IDS.tolist(),
        "logits": full["logits"].tolist(),
        "hidden": [h.tolist() for h in full["hidden"]],
        "mixer_out_layer0": full["mixer0"].tolist(),
        "final_conv_state": [c.tolist() for c in full["conv"]],
        "final_ssm_state": [s.tolist() for s in full["ssm"]],
        # per prompt length: the states after the prompt, then the stepped logits of
        # the remaining positions
        "prefill_states": prefill_states,
        "prefill_then_step": tails,
    }
    with open(js_path, "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")

    for p in (st_path, js_path):
        print(f"wrote {os.path.relpath(p, ROOT)} ({os.path.getsize(p)} bytes)")
    print(f"{len(w)} tensors; logits[0,0,:3] = {full['logits'][0, 0, :3].tolist()}")
    print(f"max |step - full| = {np.max(np.abs(step_logits - full['logits'])):.3e}")


if __name__ == "__main__":
    main()
