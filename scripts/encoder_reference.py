#!/usr/bin/env python3
"""Reference values for ponder-transformer's Hugging Face encoder import.

A NumPy (float64) re-implementation of the BERT / RoBERTa / ALBERT encoders written
from the Hugging Face model definitions' equations (post-norm layers, exact GELU or
ALBERT's tanh GELU, additive attention mask), not from ponder's code. It writes to
crates/ponder-transformer/tests/data/:

* tiny-{bert,roberta,albert}/{config.json,model.safetensors}: small random checkpoints
  in each naming (weights scaled up so that attention is far from uniform), and
  tiny-*.expected.safetensors: the embedding output and every layer's hidden states
  for a padded batch of two sequences, and the pooler's output;
* minilm.expected.safetensors (only when data/all-minilm-l6-v2 exists): the token ids
  of three sentences from a WordPiece tokenizer implemented here from vocab.txt
  (BERT's basic tokenizer: lower-casing, accent stripping, punctuation split; greedy
  longest-match WordPiece), and the embedding output and all six layers' hidden states
  of all-MiniLM-L6-v2 for each sentence, with its pooler's output; the same for two sentence pairs
  (`[CLS] a [SEP] b [SEP]` with segment ids 0 then 1, as GLUE's pair tasks feed them:
  minilm.pairs.json).

Run from the repository root: python3 scripts/encoder_reference.py
"""

import json
import os
import struct
import unicodedata

import numpy as np

OUT = "crates/ponder-transformer/tests/data"
MINILM = "data/all-minilm-l6-v2"


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dtype = {"F32": np.float32, "F16": np.float16, "I64": np.int64}[v["dtype"]]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(v["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = np.ascontiguousarray(t)
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[t.dtype]
        raw = t.tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def gelu(x, act):
    if act == "gelu_new":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, w, b):
    return x @ w.T + b


def encoder_states(w, cfg, ids, mask, prefix="", types=None):
    """Embedding output then every layer's output, float64, [batch, t, H]; segment ids
    `types` (default all 0)."""
    g = lambda n: np.asarray(w[prefix + n], dtype=np.float64)
    kind = cfg["model_type"]
    eps = cfg.get("layer_norm_eps", 1e-12)
    act = cfg.get("hidden_act", "gelu")
    bsz, t = ids.shape
    if kind == "roberta":
        # positions from padding_idx + 1 for real tokens (right padding)
        pos = (np.cumsum(mask, axis=1) * mask + 1).astype(np.int64)
    else:
        pos = np.tile(np.arange(t), (bsz, 1))
    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[pos]
    x = x + g("embeddings.token_type_embeddings.weight")[np.zeros_like(ids) if types is None else types]
    x = layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
    states = [x]
    if kind == "albert":
        x = linear(x, g("encoder.embedding_hidden_mapping_in.weight"), g("encoder.embedding_hidden_mapping_in.bias"))
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = h // heads
    add_mask = (1.0 - mask)[:, None, None, :] * -1e9
    for i in range(cfg["num_hidden_layers"]):
        if kind == "albert":
            p = "encoder.albert_layer_groups.0.albert_layers.0."
            n = dict(q=p + "attention.query", k=p + "attention.key", v=p + "attention.value", o=p + "attention.dense",
                     ln1=p + "attention.LayerNorm", f1=p + "ffn", f2=p + "ffn_output", ln2=p + "full_layer_layer_norm")
        else:
            p = f"encoder.layer.{i}."
            n = dict(q=p + "attention.self.query", k=p + "attention.self.key", v=p + "attention.self.value",
                     o=p + "attention.output.dense", ln1=p + "attention.output.LayerNorm", f1=p + "intermediate.dense",
                     f2=p + "output.dense", ln2=p + "output.LayerNorm")
        lin = lambda key, z: linear(z, g(n[key] + ".weight"), g(n[key] + ".bias"))
        split = lambda z: z.reshape(bsz, t, heads, dh).transpose(0, 2, 1, 3)
        q, k, v = split(lin("q", x)), split(lin("k", x)), split(lin("v", x))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + add_mask
        scores = scores - scores.max(-1, keepdims=True)
        attn = np.exp(scores)
        attn = attn / attn.sum(-1, keepdims=True)
        ctx = (attn @ v).transpose(0, 2, 1, 3).reshape(bsz, t, h)
        x = layer_norm(x + lin("o", ctx), g(n["ln1"] + ".weight"), g(n["ln1"] + ".bias"), eps)
        ffn = lin("f2", gelu(lin("f1", x), act))
        x = layer_norm(x + ffn, g(n["ln2"] + ".weight"), g(n["ln2"] + ".bias"), eps)
        states.append(x)
    return states


def pooled(w, name, last):
    """The pooler on the [CLS] token of the last layer: tanh(W·h_cls + b), [batch, H]."""
    g = lambda n: np.asarray(w[n], dtype=np.float64)
    return np.tanh(linear(last[:, 0], g(name + ".weight"), g(name + ".bias")))


def tiny(kind, rng):
    h, heads, ff, layers, vocab, e = 16, 4, 24, 3, 40, 8
    cfg = dict(model_type=kind, vocab_size=vocab, hidden_size=h, num_hidden_layers=layers,
               num_attention_heads=heads, intermediate_size=ff, type_vocab_size=2, layer_norm_eps=1e-12,
               hidden_act="gelu_new" if kind == "albert" else "gelu",
               max_position_embeddings=12 if kind == "roberta" else 10)
    if kind == "albert":
        cfg["embedding_size"] = e
    emb = e if kind == "albert" else h
    r = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)
    prefix = {"bert": "bert.", "roberta": "roberta.", "albert": "albert."}[kind]
    w = {
        "embeddings.word_embeddings.weight": r(vocab, emb) * 4,
        "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], emb) * 4,
        "embeddings.token_type_embeddings.weight": r(2, emb),
        "embeddings.LayerNorm.weight": 1 + r(emb) * 0.2,
        "embeddings.LayerNorm.bias": r(emb) * 0.2,
    }
    if kind == "albert":
        w["encoder.embedding_hidden_mapping_in.weight"] = r(h, e)
        w["encoder.embedding_hidden_mapping_in.bias"] = r(h)
        groups = ["encoder.albert_layer_groups.0.albert_layers.0."]
        names = dict(q="attention.query", k="attention.key", v="attention.value", o="attention.dense",
                     ln1="attention.LayerNorm", f1="ffn", f2="ffn_output", ln2="full_layer_layer_norm")
    else:
        groups = [f"encoder.layer.{i}." for i in range(layers)]
        names = dict(q="attention.self.query", k="attention.self.key", v="attention.self.value",
                     o="attention.output.dense", ln1="attention.output.LayerNorm", f1="intermediate.dense",
                     f2="output.dense", ln2="output.LayerNorm")
    shapes = dict(q=(h, h), k=(h, h), v=(h, h), o=(h, h), f1=(ff, h), f2=(h, ff))
    for p in groups:
        for key, name in names.items():
            if key.startswith("ln"):
                w[p + name + ".weight"] = 1 + r(h) * 0.2
                w[p + name + ".bias"] = r(h) * 0.2
            else:
                w[p + name + ".weight"] = r(*shapes[key]) * (2.0 if key in "qk" else 1.0)
                w[p + name + ".bias"] = r(shapes[key][0]) * 0.2
    pooler = "pooler" if kind == "albert" else "pooler.dense"
    w[pooler + ".weight"] = r(h, h)
    w[pooler + ".bias"] = r(h)
    stored = {prefix + k: v for k, v in w.items()}
    ids = np.array([[2, 5, 7, 11, 13, 17, 19], [3, 4, 9, 31, 0, 0, 0]], dtype=np.int64)
    mask = np.array([[1] * 7, [1, 1, 1, 1, 0, 0, 0]], dtype=np.float64)
    states = encoder_states(w, cfg, ids, mask)
    d = os.path.join(OUT, f"tiny-{kind}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_safetensors(os.path.join(d, "model.safetensors"), stored)
    expected = {"ids": ids, "mask": mask.astype(np.int64)}
    for i, s in enumerate(states):
        expected[f"state.{i}"] = s.astype(np.float32)
    expected["pooled"] = pooled(w, pooler, states[-1]).astype(np.float32)
    write_safetensors(os.path.join(OUT, f"tiny-{kind}.expected.safetensors"), expected)


# --- WordPiece (BERT uncased) ---------------------------------------------------------

def basic_tokens(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out, word = [], ""
    for c in text:
        cat = unicodedata.category(c)
        if c.isspace():
            if word:
                out.append(word)
            word = ""
        elif cat.startswith("P") or (33 <= ord(c) <= 47) or (58 <= ord(c) <= 64) or (91 <= ord(c) <= 96) or (123 <= ord(c) <= 126):
            if word:
                out.append(word)
            out.append(c)
            word = ""
        else:
            word += c
    if word:
        out.append(word)
    return out


def wordpiece(text, vocab, pair=None):
    """[CLS] text [SEP] (pair [SEP]), and the segment ids (0 up to the first [SEP],
    then 1)."""
    ids = [vocab["[CLS]"]] + pieces_of(text, vocab) + [vocab["[SEP]"]]
    types = [0] * len(ids)
    if pair is not None:
        second = pieces_of(pair, vocab) + [vocab["[SEP]"]]
        ids += second
        types += [1] * len(second)
    return ids, types


def pieces_of(text, vocab):
    ids = []
    for word in basic_tokens(text):
        start, pieces = 0, []
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    found = piece
                    break
                end -= 1
            if found is None:
                pieces = ["[UNK]"]
                break
            pieces.append(found)
            start = end
        ids.extend(vocab[p] for p in pieces)
    return ids


SENTENCES = [
    "Early exit saves compute on easy inputs.",
    "Congratulations! You've WON a FREE cruise -- reply now.",
    "The quick brown fox jumps over the lazy dog's back.",
]

# sentence pairs as GLUE's pair tasks feed them: [CLS] a [SEP] b [SEP], segments 0 and 1
PAIRS = [
    ["A man is playing a flute.", "A man plays a bamboo flute!"],
    ["Is the cruise free?", "Reply now: you've won a FREE cruise."],
]


def minilm():
    if not os.path.isdir(MINILM):
        print(f"{MINILM} is absent: skipping the MiniLM reference (scripts/fetch-data.sh minilm)")
        return
    with open(os.path.join(MINILM, "vocab.txt"), encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    with open(os.path.join(MINILM, "config.json")) as f:
        cfg = json.load(f)
    w = read_safetensors(os.path.join(MINILM, "model.safetensors"))
    expected = {}
    for n, sentence in enumerate(SENTENCES):
        ids = np.array([wordpiece(sentence, vocab)[0]], dtype=np.int64)
        states = encoder_states(w, cfg, ids, np.ones(ids.shape))
        expected[f"ids.{n}"] = ids[0]
        for i, s in enumerate(states):
            expected[f"state.{n}.{i}"] = s[0].astype(np.float32)
        expected[f"pooled.{n}"] = pooled(w, "pooler.dense", states[-1])[0].astype(np.float32)
    for n, (a, b) in enumerate(PAIRS):
        ids, types = wordpiece(a, vocab, b)
        ids = np.array([ids], dtype=np.int64)
        types = np.array([types], dtype=np.int64)
        states = encoder_states(w, cfg, ids, np.ones(ids.shape), types=types)
        expected[f"pair_ids.{n}"] = ids[0]
        expected[f"pair_types.{n}"] = types[0]
        for i, s in enumerate(states):
            expected[f"pair_state.{n}.{i}"] = s[0].astype(np.float32)
        expected[f"pair_pooled.{n}"] = pooled(w, "pooler.dense", states[-1])[0].astype(np.float32)
    write_safetensors(os.path.join(OUT, "minilm.expected.safetensors"), expected)
    with open(os.path.join(OUT, "minilm.sentences.json"), "w") as f:
        json.dump(SENTENCES, f, indent=1)
    with open(os.path.join(OUT, "minilm.pairs.json"), "w") as f:
        json.dump(PAIRS, f, indent=1)


if __name__ == "__main__":
    rng = np.random.default_rng(20261128)
    for kind in ["bert", "roberta", "albert"]:
        tiny(kind, rng)
    minilm()
