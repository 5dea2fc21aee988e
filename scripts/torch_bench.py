#!/usr/bin/env python3
"""PyTorch peer of ponder's CPU benches: the same shapes, timed the same way.

Run by hand, never by the tests (PyTorch is not a dependency of the project):

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
    .venv-torch/bin/python scripts/torch_bench.py            # every case
    .venv-torch/bin/python scripts/torch_bench.py encoder    # cases whose name contains "encoder"
    .venv-torch/bin/python scripts/torch_bench.py --json out.json

and compare with, run back to back on the same machine:

    cargo bench -p ponder-benches --bench backends
    cargo bench -p ponder-benches --bench mamba

A ratio between the two is only meaningful when both ran in one sitting on an otherwise
idle machine. Each case runs once to warm up, then `--repeats` times (default 15); the
table gives the median and the quartiles in milliseconds.

The models are written here from the same equations as ponder's (not imported from a
library), with ponder's bench initialisation replaced by PyTorch's: speed does not depend
on the weights' values.

* encoder-4x128: token + position embeddings with a layer norm, 4 pre-norm layers
  (d 128, 4 heads, FFN 512, exact GELU), a final layer norm, the tanh pooler on [CLS] and
  a 2-class head per layer; 32 sequences of 64 tokens (vocabulary 1000). `forward` is
  the pooled features after the last layer in inference mode; `train-step` is every
  exit's logits, cross-entropy on the last exit, backward and one AdamW step (lr 1e-4,
  burn's defaults: weight decay 1e-4, eps 1e-5).
* minilm-6x384: the same at MiniLM's size: post-norm BERT layers (d 384, 12 heads, FFN
  1536, layer-norm eps 1e-12), vocabulary 30522, two segment types, 512 positions;
  32 sequences of 128 tokens.
* decoder-4x128: a GPT-2 block stack (pre-norm, exact GELU, learned positions, tied
  head), vocabulary 84, d 128, 4 heads, FFN 256, 128 positions. `prefill` is the logits
  of 8 sequences of 64 tokens with the key/value cache filled; `step` is 32 tokens
  generated one at a time at batch 8 from that cache (the cache grows by concatenation,
  as in Hugging Face's decoders), reported per token.
* mamba-4x128: Mamba blocks (RMSNorm, d_inner 256, d_state 16, d_conv 4, Δ rank 8),
  vocabulary 84. `scan` is a full-sequence forward (a sequential selective scan over
  time, as ponder's; there is no fused scan kernel on the CPU in either) at batch 1 for
  256, 512 and 1024 tokens and at batch 16 × 128; `step` is 64 tokens fed one at a time
  at batch 1 after a 16-token prefill, reported per token.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- encoders


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff, norm_first, eps):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.output = nn.Linear(d, d)
        self.ff_in = nn.Linear(d, ff)
        self.ff_out = nn.Linear(ff, d)
        self.norm_1 = nn.LayerNorm(d, eps=eps)
        self.norm_2 = nn.LayerNorm(d, eps=eps)
        self.norm_first = norm_first

    def attention(self, x):
        b, t, d = x.shape
        h = self.heads

        def split(y):
            return y.view(b, t, h, d // h).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x))
        )
        return self.output(ctx.transpose(1, 2).reshape(b, t, d))

    def ffn(self, x):
        return self.ff_out(F.gelu(self.ff_in(x)))

    def forward(self, x):
        if self.norm_first:
            x = x + self.attention(self.norm_2(x))
            return x + self.ffn(self.norm_1(x))
        x = self.norm_1(x + self.attention(x))
        return self.norm_2(x + self.ffn(x))


class MultiExitEncoder(nn.Module):
    def __init__(self, vocab, positions, types, layers, d, heads, ff, norm_first, eps):
        super().__init__()
        self.word = nn.Embedding(vocab, d)
        self.position = nn.Embedding(positions, d)
        self.types = nn.Embedding(types, d) if types else None
        self.embed_norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            EncoderLayer(d, heads, ff, norm_first, eps) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d, eps=eps) if norm_first else None
        self.pooler = nn.Linear(d, d)
        self.heads = nn.ModuleList(nn.Linear(d, 2) for _ in range(layers))

    def embed(self, ids):
        t = ids.shape[1]
        x = self.word(ids) + self.position(torch.arange(t)).unsqueeze(0)
        if self.types is not None:
            x = x + self.types(torch.zeros_like(ids))
        return self.embed_norm(x)

    def pooled(self, x):
        cls = x[:, 0]
        if self.final_norm is not None:
            cls = self.final_norm(cls)
        return torch.tanh(self.pooler(cls))

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.pooled(x)

    def forward_all(self, ids):
        x = self.embed(ids)
        logits = []
        for layer, head in zip(self.layers, self.heads):
            x = layer(x)
            logits.append(head(self.pooled(x)))
        return logits


def encoder_cases(name, cfg, batch, seq):
    def build():
        torch.manual_seed(1)
        return MultiExitEncoder(**cfg)

    vocab = cfg["vocab"]
    ids = (torch.arange(batch * seq) * 37 % min(997, vocab)).view(batch, seq)

    def forward():
        model = build().eval()

        def run():
            with torch.inference_mode():
                return model(ids)

        return run

    def train_step():
        model = build().train()
        optim = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, eps=1e-5)
        targets = torch.zeros(batch, dtype=torch.long)

        def run():
            logits = model.forward_all(ids)
            loss = F.cross_entropy(logits[-1], targets)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

        return run

    return [
        (f"{name}/forward-{batch}x{seq}", forward, 1),
        (f"{name}/train-step-{batch}x{seq}", train_step, 1),
    ]


# ---------------------------------------------------------------- decoder


class DecoderBlock(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.fc = nn.Linear(d, ff)
        self.fc_out = nn.Linear(ff, d)

    def forward(self, x, cache):
        """x [B, T, d]; cache (k, v) [B, H, T_past, d_head] or None."""
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q, k, v = (y.view(b, t, h, d // h).transpose(1, 2) for y in (q, k, v))
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None and t > 1)
        x = x + self.proj(ctx.transpose(1, 2).reshape(b, t, d))
        x = x + self.fc_out(F.gelu(self.fc(self.ln_2(x))))
        return x, (k, v)


class DecoderLm(nn.Module):
    def __init__(self, vocab=84, d=128, heads=4, layers=4, ff=256, positions=128):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.blocks = nn.ModuleList(DecoderBlock(d, heads, ff) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)

    def forward(self, ids, caches=None, start=0):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(start, start + t)).unsqueeze(0)
        new = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if caches is None else caches[i])
            new.append(kv)
        return self.ln_f(x) @ self.wte.weight.t(), new


def decoder_cases():
    batch, prompt, generated = 8, 64, 32
    ids = (torch.arange(batch * prompt) * 31 % 84).view(batch, prompt)
    tokens = [torch.full((batch, 1), (i * 13 + 5) % 84) for i in range(generated)]

    def build():
        torch.manual_seed(7)
        return DecoderLm().eval()

    def prefill():
        model = build()

        def run():
            with torch.inference_mode():
                return model(ids)

        return run

    def step():
        model = build()
        with torch.inference_mode():
            _, caches = model(ids)

        def run():
            with torch.inference_mode():
                c = caches
                for i, tok in enumerate(tokens):
                    logits, c = model(tok, c, prompt + i)
                return logits

        return run

    return [
        (f"decoder-4x128/prefill-{batch}x{prompt}", prefill, 1),
        (f"decoder-4x128/step-batch{batch}-after{prompt} (per token)", step, generated),
    ]


# ---------------------------------------------------------------- Mamba


class RmsNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaBlock(nn.Module):
    def __init__(self, d=128, d_state=16, expand=2, d_conv=4):
        super().__init__()
        di = expand * d
        self.di, self.n, self.k = di, d_state, d_conv
        self.r = math.ceil(d / 16)
        self.norm = RmsNorm(d)
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1)
        self.x_proj = nn.Linear(di, self.r + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.r, di)
        self.a_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(di, 1))
        self.d_skip = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d, bias=False)

    def dbc(self, u):
        delta_r, b, c = self.x_proj(u).split([self.r, self.n, self.n], dim=-1)
        return F.softplus(self.dt_proj(delta_r)), b, c

    def forward(self, x):
        """x [B, T, d] → (output, (conv state, ssm state))."""
        bsz, t, _ = x.shape
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        conv_in = xs.transpose(1, 2)
        u = F.silu(self.conv(conv_in)[..., :t].transpose(1, 2))
        delta, b, c = self.dbc(u)
        a = -torch.exp(self.a_log)
        h = torch.zeros(bsz, self.di, self.n)
        ys = []
        du = delta * u
        for i in range(t):
            h = torch.exp(delta[:, i, :, None] * a) * h + du[:, i, :, None] * b[:, i, None, :]
            ys.append((h * c[:, i, None, :]).sum(-1))
        y = torch.stack(ys, dim=1) + u * self.d_skip
        conv_state = F.pad(conv_in, (self.k - t, 0))[..., -self.k:] if t < self.k else conv_in[..., -self.k:]
        return x + self.out_proj(y * F.silu(z)), (conv_state, h)

    def step(self, x, state):
        """x [B, d] → output, state updated."""
        conv_state, h = state
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        conv_state = torch.cat([conv_state[..., 1:], xs[..., None]], dim=-1)
        conv = (conv_state * self.conv.weight[:, 0]).sum(-1) + self.conv.bias
        u = F.silu(conv)
        delta, b, c = self.dbc(u)
        a = -torch.exp(self.a_log)
        h = torch.exp(delta[..., None] * a) * h + (delta * u)[..., None] * b[:, None, :]
        y = (h * c[:, None, :]).sum(-1) + u * self.d_skip
        return x + self.out_proj(y * F.silu(z)), (conv_state, h)


class MambaLm(nn.Module):
    def __init__(self, vocab=84, d=128, layers=4):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(MambaBlock(d) for _ in range(layers))
        self.norm_f = RmsNorm(d)

    def forward(self, ids):
        x = self.embedding(ids)
        states = []
        for block in self.blocks:
            x, s = block(x)
            states.append(s)
        return self.norm_f(x) @ self.embedding.weight.t(), states

    def step(self, ids, states):
        x = self.embedding(ids)
        new = []
        for block, s in zip(self.blocks, states):
            x, s = block.step(x, s)
            new.append(s)
        return self.norm_f(x) @ self.embedding.weight.t(), new


def mamba_cases():
    def build():
        torch.manual_seed(7)
        return MambaLm().eval()

    def ids(batch, length):
        return (torch.arange(batch * length) * 31 + 7).remainder(84).view(batch, length)

    def scan(batch, length):
        def make():
            model = build()
            x = ids(batch, length)

            def run():
                with torch.inference_mode():
                    return model(x)

            return run

        return make

    def step():
        model = build()
        with torch.inference_mode():
            _, states = model(ids(1, 16))
        tokens = [torch.tensor([(i * 13 + 5) % 84]) for i in range(64)]

        def run():
            with torch.inference_mode():
                s = states
                for tok in tokens:
                    logits, s = model.step(tok, s)
                return logits

        return run

    cases = [
        (f"mamba-4x128/scan-batch1-{n}", scan(1, n), 1) for n in (256, 512, 1024)
    ]
    cases.append(("mamba-4x128/scan-16x128", scan(16, 128), 1))
    cases.append(("mamba-4x128/step-batch1-after16 (per token)", step, 64))
    return cases


# ---------------------------------------------------------------- driver


def all_cases():
    small = dict(vocab=1000, positions=64, types=0, layers=4, d=128, heads=4, ff=512,
                 norm_first=True, eps=1e-5)
    minilm = dict(vocab=30522, positions=512, types=2, layers=6, d=384, heads=12, ff=1536,
                  norm_first=False, eps=1e-12)
    return (
        encoder_cases("encoder-4x128", small, 32, 64)
        + encoder_cases("minilm-6x384", minilm, 32, 128)
        + decoder_cases()
        + mamba_cases()
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("filter", nargs="?", default="", help="run the cases whose name contains this")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per case (default 15)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    rows = []
    for name, make, per in all_cases():
        if args.filter not in name:
            continue
        run = make()
        run()  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3 / per)
        q = statistics.quantiles(times, n=4)
        row = dict(case=name, median_ms=statistics.median(times), q1_ms=q[0], q3_ms=q[2])
        rows.append(row)
        print(f"{name:55s} {row['median_ms']:9.3f} ms  [{q[0]:.3f} – {q[2]:.3f}]", flush=True)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(), rows=rows), f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
