#!/usr/bin/env python3
"""Dump reference GPT-2 logits from Hugging Face transformers, for gpt2-parity.

Why it exists: gpt2-parity computes GPT-2 logits in Rust (libtorch) and needs
numbers it can trust to compare them with. This script produces them with the
implementation everyone else uses, HF's GPT2LMHeadModel (eager attention,
float32 unless --dtype says otherwise, eval mode, no gradients), and writes
them (logits as float32), with the token ids, the residual stream and a
digest of the weights, into one safetensors file of the
format `gpt2-parity-reference/1` (see docs/reference-format.md). Optionally it
adds TransformerLens logits, processed and unprocessed, and records the processed
run's switches in the `transformer_lens_processing` metadata entry.

The gpt2-parity binary embeds this file and runs it as
`python dump_reference.py ...`, so it must stay self-contained: it imports
torch and transformers only (transformer_lens only when asked).

Usage:
  dump_reference.py --model ID|DIR --output FILE [--model-name NAME]
                    [--dtype float32|float64|float16|bfloat16]
                    [--prepend-bos] [--prompts-file F] [--transformer-lens
                    [--no-fold-ln] [--no-center-writing-weights]
                    [--no-center-unembed] [--no-fold-value-biases]] [PROMPT]...

Prompts from --prompts-file (JSON Lines: each non-blank line a JSON string or
an object with a "prompt" string) come first, then those on the command line.
--output - writes the file to stdout. Every error is one line on stderr and
exit status 2.
"""

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import queue
import shutil
import struct
import sys
import tempfile
import threading
from importlib import metadata as package_metadata

import torch
import transformers
from transformers import AutoTokenizer, GPT2LMHeadModel

FORMAT = "gpt2-parity-reference/1"
WEIGHTS_FILE = "model.safetensors"
SHARD_INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
DEFAULT_MODEL = "openai-community/gpt2"
PROG = "dump_reference.py"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


class UsageError(Exception):
    """A problem with the request or its inputs; reported as one line, exit 2."""


# ---------------------------------------------------------------- arguments

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_args(argv):
    parser = OneLineParser(prog=PROG, description="Dump reference GPT-2 logits (format %s)." % FORMAT)
    parser.add_argument("prompts", nargs="*", metavar="PROMPT")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Hub id or local directory")
    parser.add_argument("--model-name", help="model string to record instead of --model")
    parser.add_argument("--output", required=True, help="output file, or - for stdout")
    parser.add_argument("--prepend-bos", action="store_true", help="prepend <|endoftext|> to every prompt")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="torch dtype the model computes in; logits are stored as float32 either way")
    parser.add_argument("--prompts-file", help="JSON Lines file of prompts (read before PROMPT...)")
    parser.add_argument("--transformer-lens", action="store_true",
                        help="also record TransformerLens logits, processed and unprocessed")
    for step in ("fold-ln", "center-writing-weights", "center-unembed", "fold-value-biases"):
        parser.add_argument(f"--no-{step}", action="store_true",
                            help=f"TransformerLens processed run: turn off {step.replace('-', '_')}")
    return parser.parse_args(argv)


def read_prompts_file(path):
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read prompts file {path}: {err}")
    prompts = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            prompts.append(parse_prompt_line(path, number, line))
    return prompts


def parse_prompt_line(path, number, line):
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}:{number}: not valid JSON ({err.msg})")
    if isinstance(value, dict):
        value = value.get("prompt")
    if not isinstance(value, str):
        raise UsageError(f"{path}:{number}: expected a JSON string or an object with a \"prompt\" string")
    return value


def collect_prompts(args):
    prompts = read_prompts_file(args.prompts_file) if args.prompts_file else []
    prompts += args.prompts
    if not prompts:
        raise UsageError("no prompts given (pass PROMPT... or --prompts-file)")
    if not args.prepend_bos:
        for index, prompt in enumerate(prompts):
            if prompt == "":
                raise UsageError(f"prompt {index} is empty; an empty prompt needs --prepend-bos")
    return prompts


# ---------------------------------------------------------------- model

def load_model(model_id, dtype):
    looks_like_path = os.path.isabs(model_id) or model_id.startswith(".") or os.path.exists(model_id)
    if looks_like_path and not os.path.isdir(model_id):
        raise UsageError(f"model directory {model_id} not found")
    if os.path.isdir(model_id) and not os.path.isfile(os.path.join(model_id, "config.json")):
        raise UsageError(f"model directory {model_id} has no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = GPT2LMHeadModel.from_pretrained(model_id, attn_implementation="eager", dtype=DTYPES[dtype])
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load model {model_id}: {first_line(err)}")
    return model.eval(), tokenizer


def weights_digest(model_id):
    """The digest of the weights from_pretrained read (directory or Hub cache), as gpt2-parity
    defines it (docs/reference-format.md): sha256 of model.safetensors; for shards, sha256 of
    one line "<file name> sha256:<hex>" per shard in name order, named sha256-shards; for a
    checkpoint that ships only pytorch_model.bin, sha256 of that file."""
    for name in (WEIGHTS_FILE, SHARD_INDEX_FILE, PICKLE_FILE):
        try:
            path = transformers.utils.cached_file(model_id, name, _raise_exceptions_for_missing_entries=False)
        except OSError as err:
            raise UsageError(f"cannot find the weights of {model_id}: {first_line(err)}")
        if path is None:
            continue
        if name != SHARD_INDEX_FILE:
            return "sha256:" + file_sha256(path)
        with open(path, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        lines = "".join(f"{shard} sha256:{file_sha256(os.path.join(os.path.dirname(path), shard))}\n" for shard in shards)
        return "sha256-shards:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()
    raise UsageError(f"{model_id} has no {WEIGHTS_FILE}, {SHARD_INDEX_FILE} or {PICKLE_FILE}")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenize(tokenizer, prompt, prepend_bos, limit, index):
    # verbose=False: the length check below reports over-long prompts, as one line.
    ids = list(tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        plain = backend.encode(prompt, add_special_tokens=False).ids
        if ids != plain:
            raise UsageError(f"prompt {index}: tokenizer added tokens ({ids} vs plain BPE {plain})")
    if prepend_bos:
        ids = [tokenizer.bos_token_id] + ids
    if not ids:
        raise UsageError(f"prompt {index} has no tokens")
    if len(ids) > limit:
        raise UsageError(f"prompt {index} has {len(ids)} tokens, more than the model's limit of {limit}")
    return ids


# ---------------------------------------------------------------- forward passes

@torch.no_grad()
def hf_forward(model, ids):
    """Return (logits [T, V], resid [L+1, T, D]); resid[l] is block l-1's output, before ln_f."""
    blocks = model.transformer.h
    outputs = [None] * len(blocks)

    def capture(index):
        def hook(_module, _inputs, output):
            outputs[index] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    handles = [block.register_forward_hook(capture(i)) for i, block in enumerate(blocks)]
    try:
        result = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    resid = torch.stack([result.hidden_states[0][0]] + [out[0] for out in outputs])
    # Self-check: the last block output, through ln_f, is HF's final hidden state.
    if not torch.allclose(model.transformer.ln_f(resid[-1]), result.hidden_states[-1][0], atol=1e-5, rtol=1e-5):
        raise RuntimeError("block outputs captured by hooks do not match HF's hidden states")
    return result.logits[0].float(), resid.float()


def tl_version():
    try:
        return package_metadata.version("transformer-lens")
    except package_metadata.PackageNotFoundError:
        return package_metadata.version("transformer_lens")


def tl_processing(args):
    """The switches of the processed TransformerLens run, as passed to TransformerLens and
    recorded in the `transformer_lens_processing` metadata entry."""
    return {
        "fold_ln": not args.no_fold_ln,
        "center_writing_weights": not args.no_center_writing_weights,
        "center_unembed": not args.no_center_unembed,
        "fold_value_biases": not args.no_fold_value_biases,
        "refactor_factored_attn_matrices": False,
    }


def load_tl_models(model_id, hf_model, tokenizer, processing):
    """Return {tensor suffix: TransformerLens model} for the processed and unprocessed runs."""
    try:
        import transformer_lens
    except ImportError:
        raise UsageError("--transformer-lens: transformer_lens is not installed "
                         "(pip install -r scripts/requirements-tl.txt)")
    try:
        from transformer_lens.model_bridge import TransformerBridge
        boot = lambda model, kwargs: boot_tl4(TransformerBridge, model_id, model, tokenizer, kwargs)
    except ImportError:
        boot = lambda model, kwargs: boot_tl3(transformer_lens.HookedTransformer, model_id, model, tokenizer, kwargs)
    # Each run gets its own copy of the HF model: processing rewrites weights in place.
    return {
        "tl_processed_logits": boot(copy.deepcopy(hf_model), processing),
        "tl_unprocessed_logits": boot(copy.deepcopy(hf_model), None),
    }


def boot_tl4(bridge_class, model_id, hf_model, tokenizer, processing):
    """TransformerLens 4.x; processing None means no processing at all."""
    bridge = bridge_class.boot_transformers(model_id, hf_model=hf_model, tokenizer=tokenizer,
                                            device="cpu", dtype=torch.float32)
    if processing is None:
        bridge.enable_compatibility_mode(no_processing=True)
    else:
        bridge.enable_compatibility_mode(**processing)
    return bridge.eval()


def boot_tl3(hooked_class, model_id, hf_model, tokenizer, processing):
    """TransformerLens <= 3 (takes official model names only, not directories)."""
    common = dict(hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32)
    if processing is None:
        return hooked_class.from_pretrained_no_processing(model_id, **common).eval()
    return hooked_class.from_pretrained(model_id, **common, **processing).eval()


@torch.no_grad()
def tl_forward(tl_model, ids):
    # Token tensors, not strings: TransformerLens would otherwise prepend BOS on its own.
    return tl_model(torch.tensor([ids]))[0].float()


# ---------------------------------------------------------------- output

def producer(with_tl):
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if with_tl:
        versions["transformer_lens"] = tl_version()
    return json.dumps(versions)


# safetensors lays tensors out by dtype alignment, largest first, then by name; the streamed
# file follows the same rule, so its bytes are what safetensors.torch.save would write.
SAFETENSORS_DTYPES = {torch.int64: "I64", torch.float32: "F32"}


def plan_file(shapes, meta):
    """The file's header, and its tensor names in data order, for {name: (dtype, shape)}.

    Known before the first forward pass (token counts fix every shape), so each prompt's
    tensors can be written as soon as they are computed. The JSON header has sorted keys, so
    that equal inputs give equal files (safetensors itself writes metadata in hash-map order).
    """
    order = sorted(shapes, key=lambda name: (-shapes[name][0].itemsize, name))
    header, offset = {"__metadata__": meta}, 0
    for name in order:
        dtype, shape = shapes[name]
        end = offset + dtype.itemsize * math.prod(shape)
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


# Tensors computed but not yet written: the writer runs one or two behind the forward passes
# (a prompt's logits are 4 bytes x tokens x vocabulary, 11 MB for 55 tokens of GPT-2).
WRITE_AHEAD = 2


def spare_cpu():
    """Whether a writing thread would run beside the forward passes rather than take a CPU from
    them: PyTorch runs a thread per physical core, so a machine with SMT has CPUs to spare. On 2
    CPUs and 2 threads, the script writing on a thread of its own took 17.1-18.8 s (median 18.2)
    against 17.1-17.4 s (median 17.2) writing in turn: 100 prompts, GPT-2-small shape, three
    runs each, interleaved."""
    return torch.get_num_threads() < (os.cpu_count() or 1)


def write_tensors(out, header, order, shapes, tensor_for):
    """Writes the header, then tensor_for(name) for each name in data order, checked against the plan.

    Where a CPU is spare, the writing runs on a thread of its own (file writes release the GIL),
    so that the next prompt's forward passes overlap it; the arrays are written from their own
    memory, not copied."""

    def array_for(name):
        tensor = tensor_for(name).detach().cpu().contiguous()
        dtype, shape = shapes[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise RuntimeError(f"{name} came out {tensor.dtype} {tuple(tensor.shape)}, the header says {dtype} {tuple(shape)}")
        array = tensor.numpy()
        return array.astype(array.dtype.newbyteorder("<"), copy=False)

    out.write(header)
    if not spare_cpu():
        for name in order:
            out.write(array_for(name).data)
        return
    pending = queue.Queue(maxsize=WRITE_AHEAD)
    failure = []

    def writer():
        while (array := pending.get()) is not None:
            if not failure:
                try:
                    out.write(array.data)
                except BaseException as err:  # re-raised on the main thread
                    failure.append(err)

    thread = threading.Thread(target=writer, name="reference-writer", daemon=True)
    thread.start()
    try:
        for name in order:
            if failure:
                break
            pending.put(array_for(name))
    finally:
        pending.put(None)
        thread.join()
    if failure:
        raise failure[0]


@contextlib.contextmanager
def output_file(path):
    """A binary file whose content becomes `path` whole or not at all.

    It is a temporary file beside `path`, renamed into place when the block completes and
    removed when it fails or is interrupted. For `-`, an anonymous temporary file is copied to
    stdout at the end, so that a run that fails midway writes nothing there either.
    """
    if path == "-":
        with tempfile.TemporaryFile() as spool:
            yield spool
            spool.seek(0)
            shutil.copyfileobj(spool, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory} does not exist")
    handle, temp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        os.chmod(temp, 0o666 & ~current_umask())  # mkstemp creates the file owner-only
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def first_line(err):
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------- main

class Background:
    """function(*args) run on a thread; result() waits for it and returns or raises what it did."""

    def __init__(self, function, *args):
        self.outcome = None

        def run():
            try:
                self.outcome = (True, function(*args))
            except BaseException as err:  # re-raised by result()
                self.outcome = (False, err)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self):
        self.thread.join()
        succeeded, value = self.outcome
        if not succeeded:
            raise value
        return value


class PromptForwards:
    """tensor_for(name) for write_tensors: a prompt's forward passes run when the file reaches
    its first float tensor, and its tensors are dropped as they are written. A prompt's float
    tensors are adjacent in the file ("prompt.1.*" sorts before "prompt.10.*"), so one prompt's
    outputs are held at a time."""

    def __init__(self, model, tl_models, token_lists):
        self.model, self.tl_models, self.token_lists = model, tl_models, token_lists
        self.index, self.pending = None, {}

    def __call__(self, name):
        _, index, field = name.split(".")
        ids = self.token_lists[int(index)]
        if field == "tokens":
            return torch.tensor(ids, dtype=torch.int64)
        if index != self.index:
            if self.index is None:
                # A forward whose result is dropped, on the first prompt: the first forward of a
                # process once came out differently under CI load (prompt 0 only, one thread's
                # rows 0-13 of 27 in block 0, about 250 float32 ulps; prompts 1-4 and a rerun bit
                # for bit), and twice it was that forward a test's envelope caught.
                hf_forward(self.model, ids)
            logits, resid = hf_forward(self.model, ids)
            self.index, self.pending = index, {"logits": logits, "resid": resid}
            for suffix, tl_model in self.tl_models.items():
                self.pending[suffix] = tl_forward(tl_model, ids)
        return self.pending.pop(field)


def tensor_shapes(config, token_lists, tl_suffixes):
    """{name: (dtype, shape)} of every tensor the file holds."""
    vocab, layers, width = config.vocab_size, config.n_layer, config.n_embd
    shapes = {}
    for i, ids in enumerate(token_lists):
        positions = len(ids)
        shapes[f"prompt.{i}.tokens"] = (torch.int64, (positions,))
        shapes[f"prompt.{i}.logits"] = (torch.float32, (positions, vocab))
        shapes[f"prompt.{i}.resid"] = (torch.float32, (layers + 1, positions, width))
        for suffix in tl_suffixes:
            shapes[f"prompt.{i}.{suffix}"] = (torch.float32, (positions, vocab))
    return shapes


def prepare(args):
    """What the file needs before the first forward pass: a tensor source, every tensor's
    shape, and the metadata."""
    prompts = collect_prompts(args)
    transformers.utils.logging.disable_progress_bar()
    # The digest reads the whole weights file: on a thread of its own (hashlib releases the GIL),
    # it overlaps loading the model, which reads the same file.
    digest = Background(weights_digest, args.model)
    model, tokenizer = load_model(args.model, args.dtype)
    digest = digest.result()
    limit = model.config.n_positions
    token_lists = [tokenize(tokenizer, p, args.prepend_bos, limit, i) for i, p in enumerate(prompts)]
    tl_models = load_tl_models(args.model, model, tokenizer, tl_processing(args)) if args.transformer_lens else {}
    meta = {
        "format": FORMAT,
        "prompts": json.dumps(prompts, ensure_ascii=False),
        "model": args.model_name or args.model,
        "weights": digest,
        "prepend_bos": "true" if args.prepend_bos else "false",
        "dtype": args.dtype,
        "attn_implementation": "eager",
        "producer": producer(args.transformer_lens),
    }
    if args.transformer_lens:
        meta["transformer_lens_processing"] = json.dumps(tl_processing(args))
    shapes = tensor_shapes(model.config, token_lists, tl_models)
    return PromptForwards(model, tl_models, token_lists), shapes, meta


def run(args):
    forwards, shapes, meta = prepare(args)
    header, order = plan_file(shapes, meta)
    with output_file(args.output) as out:
        write_tensors(out, header, order, shapes, forwards)


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        run(args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
