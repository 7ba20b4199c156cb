"""Fixtures for recstack.pretrain: one thread, and a tiny sentence-transformers model built locally."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

# A WordPiece vocab that covers any lowercase ASCII text: whole words for the test
# sentences, then single letters and digits, with and without the "##" continuation mark.
_WORDS = "a the red blue green shoe shoes book pasta running cook cookbook italian sneakers for".split()
_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _WORDS + list(string.ascii_lowercase + string.digits) + [
    f"##{c}" for c in string.ascii_lowercase + string.digits
] + list(string.punctuation)


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) with mean pooling, saved as a sentence-transformers folder.

    Random weights: the vectors mean nothing, but every step of loading and encoding is the
    real one, and nothing is downloaded.
    """
    pytest.importorskip("sentence_transformers")
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("tiny_text_model")
    bert_dir, model_dir = root / "bert", root / "sentence_model"
    bert_dir.mkdir()
    (bert_dir / "vocab.txt").write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(bert_dir)
    # Positional: the keyword is vocab_file in transformers 4 and vocab in 5.
    tokenizer = BertTokenizerFast(str(bert_dir / "vocab.txt"), do_lower_case=True)
    assert tokenizer.unk_token_id not in tokenizer("Red running shoes, 2x")["input_ids"]
    tokenizer.save_pretrained(bert_dir)
    transformer = Transformer(str(bert_dir), max_seq_length=48)
    pooling = Pooling(32, "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(model_dir))
    return model_dir
