"""Shared fixtures: a tiny randomly initialised Phi-3 model (the class of Phi-4) with a small
byte-level BPE tokenizer trained here, saved as a normal transformers model directory."""

import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _corpus():
    import json
    texts = []
    for root, _, files in os.walk(FIXTURES):
        for f in files:
            with open(os.path.join(root, f), encoding="utf-8") as fh:
                texts.append(fh.read())
    texts.append(json.dumps({"keywords": "def return print input import for while if else in range ```python"}))
    return texts * 3


def make_tiny_model(path, seed=0, layers=4, vocab=512):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Phi3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    model = Phi3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-phi3")))


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_dir):
    from lm.policy import HFPolicy
    return HFPolicy(tiny_model_dir, dtype="float32", device="cpu")
