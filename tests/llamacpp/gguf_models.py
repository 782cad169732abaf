"""Tiny random-weight llama-architecture GGUF models for the llama.cpp test tier.

The models are a few hundred kilobytes, load in llama-server in well under a second and
generate (meaningless) text. Everything is derived from the seed, so the same arguments
always give a byte-identical file.

Vocabulary: a SentencePiece-style ("llama") vocab built here: <unk>, <s>, </s>, the ChatML
control tokens <|im_start|>/<|im_end|>, the 256 byte-fallback tokens <0x00>..<0xFF>, the
word-start marker and printable ASCII, plus "▁x" and a few common letter pairs (~420 tokens).
A ChatML chat template is embedded, so /v1/chat/completions works without --chat-template.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
SPM_SPACE = "\u2581"  # "▁", SentencePiece's word-start marker

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: The two models the test tier uses: name -> keyword arguments for write_tiny_llama_gguf.
TEST_MODELS: dict[str, dict[str, int]] = {
    "tiny-llama-a": {"seed": 1, "n_layer": 2, "n_ff": 128},
    "tiny-llama-b": {"seed": 2, "n_layer": 3, "n_ff": 96},
}

_COMMON_PAIRS = (
    "th",
    "he",
    "in",
    "er",
    "an",
    "re",
    "on",
    "at",
    "en",
    "nd",
    "ti",
    "es",
    "or",
    "te",
    "of",
    "ed",
    "is",
    "it",
    "al",
    "ar",
    "st",
    "to",
    "nt",
    "ng",
    "se",
    "ha",
    "as",
    "ou",
    "io",
    "le",
)


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Return (tokens, scores, token_types) of the SPM-style test vocabulary."""
    tt = gguf.TokenType
    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types: list[int] = [tt.UNKNOWN, tt.CONTROL, tt.CONTROL, tt.CONTROL, tt.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [tt.BYTE] * 256
    pieces = [SPM_SPACE] + [chr(c) for c in range(33, 127)]
    pieces += [SPM_SPACE + chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += list(_COMMON_PAIRS)
    tokens += pieces
    types += [tt.NORMAL] * len(pieces)
    # SPM merges the adjacent pair whose result has the highest score; only the normal
    # pieces take part, longer pieces score higher so they win over their parts.
    scores = [0.0] * (len(tokens) - len(pieces)) + [float(len(p)) - i * 1e-3 for i, p in enumerate(pieces)]
    assert len(set(tokens)) == len(tokens)
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama_gguf(
    path: str | os.PathLike[str],
    *,
    name: str = "tiny-llama",
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context_length: int = 2048,
    dtype: str = "f32",
) -> Path:
    """Write a random-weight llama GGUF to ``path`` (atomically) and return the path.

    ``dtype`` is "f32" or "f16" for the weight matrices; norms are always F32.
    """
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    mat_dtype = np.float32 if dtype == "f32" else np.float16

    def matrix(n_out: int, n_in: int, std: float | None = None) -> np.ndarray:
        # numpy shape (rows, cols) == ggml ne {cols, rows}: ggml's {n_in, n_out}.
        scale = std if std is not None else 1.0 / np.sqrt(n_in)
        return (rng.standard_normal((n_out, n_in)) * scale).astype(mat_dtype)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, ARCH)
    try:
        writer.add_name(name)
        writer.add_description(f"random weights for llamaswap tests (seed {seed})")
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        writer.add_context_length(context_length)
        writer.add_embedding_length(n_embd)
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(n_ff)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(10000.0)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(n_vocab)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHATML_TEMPLATE)

        writer.add_tensor("token_embd.weight", matrix(n_vocab, n_embd, std=1.0))
        for i in range(n_layer):
            blk = f"blk.{i}"
            writer.add_tensor(f"{blk}.attn_norm.weight", ones(n_embd))
            writer.add_tensor(f"{blk}.attn_q.weight", matrix(n_embd, n_embd))
            writer.add_tensor(f"{blk}.attn_k.weight", matrix(n_embd_kv, n_embd))
            writer.add_tensor(f"{blk}.attn_v.weight", matrix(n_embd_kv, n_embd))
            writer.add_tensor(f"{blk}.attn_output.weight", matrix(n_embd, n_embd))
            writer.add_tensor(f"{blk}.ffn_norm.weight", ones(n_embd))
            writer.add_tensor(f"{blk}.ffn_gate.weight", matrix(n_ff, n_embd))
            writer.add_tensor(f"{blk}.ffn_up.weight", matrix(n_ff, n_embd))
            writer.add_tensor(f"{blk}.ffn_down.weight", matrix(n_embd, n_ff))
        writer.add_tensor("output_norm.weight", ones(n_embd))
        writer.add_tensor("output.weight", matrix(n_vocab, n_embd))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def write_test_models(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the models of :data:`TEST_MODELS` into ``directory``; return name -> path."""
    directory = Path(directory)
    return {
        name: write_tiny_llama_gguf(directory / f"{name}.gguf", name=name, **kwargs)
        for name, kwargs in TEST_MODELS.items()
    }
