#!/usr/bin/env python3
"""A GPT-2 that shares no code with gpt2-parity or its reference script, for its tests.

Why it exists: scripts/dump_reference.py makes references with Hugging Face
transformers, and gpt2-parity is checked against those. A test that only ever
sees references from the project's own script cannot tell a shared mistake
(in tokenization, weight naming, the format) from agreement. This script is a
second, independent source: it writes random GPT-2-shaped models in the Hub's
own (unprefixed) weight naming, and computes their logits with a plain numpy
float64 forward pass, written from the GPT-2 definition rather than from
torch or transformers.

It imports only numpy, safetensors.numpy, tokenizers and the standard library.

Usage:
  numpy_gpt2.py make-model --out DIR --seed N --n-layer L --n-embd D --n-head H
                           --n-positions P --tokenizer PATH [--gpt2-magnitudes]
  numpy_gpt2.py reference --model DIR --output FILE [--prepend-bos] PROMPT...

make-model --gpt2-magnitudes gives the model real GPT-2's numeric character instead of
logits of order 1: logits averaging about -60 with std about 17 over the vocabulary, and
three residual dimensions (GPT-2 small's 138, 378 and 447, scaled to the width) holding
values of several hundred from block 0 on ("massive activations"). Tolerances, rounding
and weight processing behave at that scale as they do on GPT-2 itself.

The reference file follows format gpt2-parity-reference/1 (docs/reference-format.md):
prompt.{i}.tokens int64 [T], prompt.{i}.logits float32 [T, V] and
prompt.{i}.resid float32 [L+1, T, D], computed in float64 and cast.
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import safetensors.numpy
from tokenizers import Tokenizer

FORMAT = "gpt2-parity-reference/1"
VOCAB = 50257
END_OF_TEXT = 50256
EPS = 1e-5
WEIGHTS_FILE = "model.safetensors"
TOOL = "tests/support/numpy_gpt2.py"


# ---------------------------------------------------------------- make-model

def make_model(out, seed, n_layer, n_embd, n_head, n_positions, tokenizer_path, gpt2_magnitudes):
    if n_embd % n_head != 0:
        sys.exit(f"n_embd {n_embd} is not divisible by n_head {n_head}")
    rng = np.random.default_rng(seed)
    d, m, p = n_embd, 4 * n_embd, n_positions

    def randn(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def ln_weight():
        return (1.0 + randn(d, scale=0.25)).astype(np.float32)

    tensors = {
        # A common offset row makes every position's logits share a non-zero mean,
        # which TransformerLens's center_unembed then removes.
        "wte.weight": randn(VOCAB, d, scale=0.1) + randn(1, d, scale=0.3),
        "wpe.weight": randn(p, d, scale=0.1),
        "ln_f.weight": ln_weight(),
        "ln_f.bias": randn(d, scale=0.1),
    }
    causal = np.tril(np.ones((p, p), dtype=np.float32)).reshape(1, 1, p, p)
    for layer in range(n_layer):
        h = f"h.{layer}."
        tensors.update({
            h + "ln_1.weight": ln_weight(),
            h + "ln_1.bias": randn(d, scale=0.1),
            h + "attn.c_attn.weight": randn(d, 3 * d, scale=1.0 / math.sqrt(d)),
            h + "attn.c_attn.bias": randn(3 * d, scale=0.1),
            h + "attn.c_proj.weight": randn(d, d, scale=0.5 / math.sqrt(d)),
            h + "attn.c_proj.bias": randn(d, scale=0.1),
            h + "ln_2.weight": ln_weight(),
            h + "ln_2.bias": randn(d, scale=0.1),
            h + "mlp.c_fc.weight": randn(d, m, scale=1.0 / math.sqrt(d)),
            h + "mlp.c_fc.bias": randn(m, scale=0.1),
            h + "mlp.c_proj.weight": randn(m, d, scale=0.5 / math.sqrt(m)),
            h + "mlp.c_proj.bias": randn(d, scale=0.1),
            # The causal-mask buffer that the Hub's own gpt2 checkpoint carries.
            h + "attn.bias": causal,
        })
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": VOCAB,
        "n_positions": p,
        "n_ctx": p,
        "n_embd": d,
        "n_layer": n_layer,
        "n_head": n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": EPS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": END_OF_TEXT,
        "eos_token_id": END_OF_TEXT,
    }
    if gpt2_magnitudes:
        give_gpt2_magnitudes(tensors, config, rng, Tokenizer.from_file(tokenizer_path))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    safetensors.numpy.save_file(tensors, os.path.join(out, WEIGHTS_FILE), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.json"))
    # Hugging Face's AutoTokenizer (the bundled reference script) wants the config beside it.
    tokenizer_config = os.path.join(os.path.dirname(tokenizer_path), "tokenizer_config.json")
    if os.path.isfile(tokenizer_config):
        shutil.copyfile(tokenizer_config, os.path.join(out, "tokenizer_config.json"))


# GPT-2 small's massive-activation dimensions (of 768), and values of the size they reach.
MASSIVE_DIMS = (138, 378, 447)
MASSIVE_VALUES = (-250.0, 180.0, 420.0)
LOGIT_MEAN, LOGIT_STD = -60.0, 17.0
RESID_GROWTH = 60.0
SHARED_ROW_SHARE = 0.25
CALIBRATION_TEXT = ("Hello World. The quick brown fox jumps over the lazy dog, "
                    "and GPT-2 predicts the next token of ordinary English text.")


def give_gpt2_magnitudes(tensors, config, rng, tokenizer):
    """Rescales a random model in place to GPT-2's numeric character (see the module docstring).

    Block 0's MLP output bias writes the massive values, so every later residual carries
    them; as in GPT-2, the LayerNorms give those dimensions small gains. The final LayerNorm's
    gain and its bias along the direction that shifts all logits alike are then solved for,
    on a calibration text run through the float64 forward, so the logits' mean and std come
    out at GPT-2's there (and near them on other text).
    """
    d = config["n_embd"]
    dims = [index * d // 768 for index in MASSIVE_DIMS]
    # Block 0 writes large values into every dimension, as GPT-2's first MLP does (an
    # extension of the embeddings): the residual stream grows well above the embeddings'
    # scale, and the massive dimensions on top.
    tensors["h.0.mlp.c_proj.weight"] *= RESID_GROWTH
    tensors["h.0.mlp.c_proj.bias"][dims] += np.asarray(MASSIVE_VALUES, dtype=np.float32)
    # A smaller shared row than the default model's keeps the logits' mean from swinging as
    # much with the context; ln_f's bias sets most of the mean, as a context-free offset.
    wte = tensors["wte.weight"]
    tensors["wte.weight"] = (wte - (1.0 - SHARED_ROW_SHARE) * wte.mean(axis=0)).astype(np.float32)
    norms = [f"h.{layer}.{name}.weight" for layer in range(config["n_layer"]) for name in ("ln_1", "ln_2")]
    for name in norms + ["ln_f.weight"]:
        tensors[name][dims] = (0.1 * (1.0 + 0.1 * rng.standard_normal(len(dims)))).astype(np.float32)

    weights = {name: value.astype(np.float64) for name, value in tensors.items() if not name.endswith(".attn.bias")}
    tokens = tokenizer.encode(CALIBRATION_TEXT, add_special_tokens=False).ids[: config["n_positions"]]
    final = residual_stream(weights, config, tokens)[-1]
    normalized = layer_norm(final, 1.0, 0.0, config["layer_norm_epsilon"])
    wte = weights["wte.weight"]
    gain_part = (normalized * weights["ln_f.weight"]) @ wte.T
    # The ln_f bias that moves every token's logit most evenly: least squares on wte b = 1.
    shift_direction = np.linalg.lstsq(wte, np.ones(VOCAB), rcond=None)[0]
    shift_part = shift_direction @ wte.T
    bias_part = weights["ln_f.bias"] @ wte.T
    gain, shift = 1.0, 0.0
    for _ in range(20):
        shift = (LOGIT_MEAN - (gain * gain_part + bias_part).mean()) / shift_part.mean()
        gain *= LOGIT_STD / (gain * gain_part + shift * shift_part + bias_part).std()
    tensors["ln_f.weight"] = (gain * weights["ln_f.weight"]).astype(np.float32)
    tensors["ln_f.bias"] = (weights["ln_f.bias"] + shift * shift_direction).astype(np.float32)


# ---------------------------------------------------------------- loading

LAYER_PARAMS = {
    "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias",
    "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
}
BUFFERS = {"attn.bias", "attn.masked_bias"}
LAYER_NAME = re.compile(r"^h\.(\d+)\.(.+)$")


def load_weights(model_dir, config):
    """Parameters as float64, keyed by unprefixed name; both Hub layouts accepted."""
    raw = safetensors.numpy.load_file(os.path.join(model_dir, WEIGHTS_FILE))
    weights = {}
    for name, value in raw.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        if short == "lm_head.weight":
            continue  # tied to wte
        match = LAYER_NAME.match(short)
        if match and match.group(2) in BUFFERS:
            continue
        if match and match.group(2) not in LAYER_PARAMS:
            sys.exit(f"unknown tensor {name}")
        if not match and short not in {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}:
            sys.exit(f"unknown tensor {name}")
        weights[short] = value.astype(np.float64)
    for required in ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] + [
        f"h.{layer}.{param}" for layer in range(config["n_layer"]) for param in sorted(LAYER_PARAMS)
    ]:
        if required not in weights:
            sys.exit(f"missing tensor {required}")
    return weights


# ---------------------------------------------------------------- forward (float64)

def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased variance
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_new(u):
    return 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def attention(x, w, b, wo, bo, n_head):
    t, d = x.shape
    dh = d // n_head
    qkv = x @ w + b
    q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
    # [T, D] -> [H, T, Dh]
    q, k, v = (a.reshape(t, n_head, dh).transpose(1, 0, 2) for a in (q, k, v))
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
    future = np.triu(np.ones((t, t), dtype=bool), k=1)
    scores = np.where(future, -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    pattern = np.exp(scores)
    pattern /= pattern.sum(axis=-1, keepdims=True)
    z = (pattern @ v).transpose(1, 0, 2).reshape(t, d)
    return z @ wo + bo


def forward(weights, config, tokens):
    """Logits [T, V] and residual stream [L+1, T, D], float64."""
    resid = residual_stream(weights, config, tokens)
    eps = config.get("layer_norm_epsilon", EPS)
    final = layer_norm(resid[-1], weights["ln_f.weight"], weights["ln_f.bias"], eps)
    return final @ weights["wte.weight"].T, resid


def residual_stream(weights, config, tokens):
    """The embeddings, then each block's output: [L+1, T, D]."""
    eps = config.get("layer_norm_epsilon", EPS)
    n_head = config["n_head"]
    x = weights["wte.weight"][tokens] + weights["wpe.weight"][: len(tokens)]
    resid = [x]
    for layer in range(config["n_layer"]):
        p = lambda name: weights[f"h.{layer}.{name}"]
        a = layer_norm(x, p("ln_1.weight"), p("ln_1.bias"), eps)
        x = x + attention(a, p("attn.c_attn.weight"), p("attn.c_attn.bias"),
                          p("attn.c_proj.weight"), p("attn.c_proj.bias"), n_head)
        m = layer_norm(x, p("ln_2.weight"), p("ln_2.bias"), eps)
        h = gelu_new(m @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"))
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        resid.append(x)
    return np.stack(resid)


# ---------------------------------------------------------------- reference

def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def reference(model_dir, output, prepend_bos, prompts):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    if config.get("activation_function", "gelu_new") != "gelu_new":
        sys.exit(f"unsupported activation_function {config['activation_function']}")
    weights = load_weights(model_dir, config)
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tensors = {}
    for index, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        if prepend_bos:
            ids = [END_OF_TEXT] + ids
        if not ids:
            sys.exit(f"prompt {index} is empty; an empty prompt needs --prepend-bos")
        tokens = np.asarray(ids, dtype=np.int64)
        logits, resid = forward(weights, config, tokens)
        tensors[f"prompt.{index}.tokens"] = tokens
        tensors[f"prompt.{index}.logits"] = np.ascontiguousarray(logits.astype(np.float32))
        tensors[f"prompt.{index}.resid"] = np.ascontiguousarray(resid.astype(np.float32))
    metadata = {
        "format": FORMAT,
        "prompts": json.dumps(prompts, ensure_ascii=False),
        "model": model_dir,
        "weights": sha256_file(os.path.join(model_dir, WEIGHTS_FILE)),
        "prepend_bos": "true" if prepend_bos else "false",
        "dtype": "float32",
        "attn_implementation": "numpy-float64",
        "producer": json.dumps({"numpy": np.__version__, "tool": TOOL}),
    }
    safetensors.numpy.save_file(tensors, output, metadata=metadata)


# ---------------------------------------------------------------- main

def main(argv):
    parser = argparse.ArgumentParser(prog="numpy_gpt2.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-model", help="write a random GPT-2-shaped model directory")
    make.add_argument("--out", required=True)
    make.add_argument("--seed", type=int, required=True)
    make.add_argument("--n-layer", type=int, required=True)
    make.add_argument("--n-embd", type=int, required=True)
    make.add_argument("--n-head", type=int, required=True)
    make.add_argument("--n-positions", type=int, required=True)
    make.add_argument("--tokenizer", required=True, help="tokenizer.json to copy into the model")
    make.add_argument("--gpt2-magnitudes", action="store_true",
                      help="logits near -60 (std 17) and three residual dims in the hundreds, as GPT-2's")
    ref = commands.add_parser("reference", help="write a gpt2-parity-reference/1 file")
    ref.add_argument("--model", required=True)
    ref.add_argument("--output", required=True)
    ref.add_argument("--prepend-bos", action="store_true")
    ref.add_argument("prompts", nargs="+", metavar="PROMPT")
    args = parser.parse_args(argv)
    if args.command == "make-model":
        make_model(args.out, args.seed, args.n_layer, args.n_embd, args.n_head,
                   args.n_positions, args.tokenizer, args.gpt2_magnitudes)
    else:
        reference(args.model, args.output, args.prepend_bos, args.prompts)


if __name__ == "__main__":
    main(sys.argv[1:])
