"""Prompt tokenization as openpi's `PaligemmaTokenizer` does it for π0.5 LIBERO.

`pi05_libero` has no discrete state in the prompt: tokens are `<bos> text` then the
tokens of "\n", right-padded with id 0 to `max_len` (docs/references.md "Data conventions").
Users give the PaliGemma sentencepiece model when they have it; otherwise
`train_sentencepiece` fits a small model on the dataset's task strings (no downloads).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece as spm

log = logging.getLogger(__name__)


def clean_prompt(text: str) -> str:
    """openpi: strip, '_' -> ' ', newline -> ' '."""
    return text.strip().replace("_", " ").replace("\n", " ")


class PromptTokenizer:
    def __init__(self, model_path: str | Path, max_len: int):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        self.path = path
        self.max_len = max_len
        self._sp = spm.SentencePieceProcessor(model_file=str(path))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """-> tokens int64 (max_len,), mask bool (max_len,)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        ids = self._sp.encode(clean_prompt(prompt), add_bos=True) + self._sp.encode("\n")
        if len(ids) > self.max_len:
            log.warning(
                "prompt has %d tokens, truncated to max_token_len=%d", len(ids), self.max_len
            )
            ids = ids[: self.max_len]
        n = len(ids)
        tokens = np.zeros(self.max_len, dtype=np.int64)
        tokens[:n] = ids
        mask = np.zeros(self.max_len, dtype=bool)
        mask[:n] = True
        return tokens, mask


def train_sentencepiece(texts: Iterable[str], out_path: str | Path, vocab_size: int) -> Path:
    """Fit a small sentencepiece model on task strings (deterministic, offline).

    The vocabulary is soft-limited (`hard_vocab_limit=False`) because a handful of task
    strings cannot fill a fixed vocabulary; pieces stay below `vocab_size` so ids fit the
    model's embedding.
    """
    sentences = sorted({clean_prompt(t) for t in texts})
    if not sentences:
        raise ValueError("train_sentencepiece needs at least one task string, got none")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 4),
        model_writer=buf,
        vocab_size=min(vocab_size, 256 + 4 * sum(len(s) for s in sentences)),
        hard_vocab_limit=False,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        bos_id=2,
        eos_id=1,
        pad_id=0,
        unk_id=3,
        num_threads=1,
        minloglevel=2,
        user_defined_symbols=["\n"],  # π0.5 ends the prompt with "\n" (openpi)
        remove_extra_whitespaces=False,
    )
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out_path)
    return out_path
