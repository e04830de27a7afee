"""Tiny random models and a tiny tokenizer, built from configs (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "be terse and brief. be warm, kind and enthusiastic!",
    "what is the capital of france? paris is lovely.",
    "hello world, tell me a story about a happy cat",
    "system user assistant 0 1 2 3 4 5 6 7 8 9 yes no great awful",
]
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences: encodes any text, decodes losslessly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, seed: int, extra_vocab: int = 0) -> LlamaForCausalLM:
    """A 2-layer random Llama; ``extra_vocab`` pads the logit layer beyond the tokenizer (e.g. 32016 vs 32000)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size + extra_vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # Random init is near-uniform; sharpen the logits so experts really disagree.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.eval()


def save_model(path: Path, tokenizer: PreTrainedTokenizerFast, seed: int, extra_vocab: int = 0) -> Path:
    build_model(len(tokenizer), seed, extra_vocab).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_lora_adapter(path: Path, base_dir: Path, seed: int, r: int = 4) -> Path:
    """A random LoRA adapter (non-zero B so it changes outputs) on the q/v projections and lm_head."""
    from peft import LoraConfig, get_peft_model

    base = LlamaForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.normal_(0.0, 0.5)
    peft_model.save_pretrained(path)
    return path


NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}


def save_classifier(path: Path, tokenizer: PreTrainedTokenizerFast, seed: int, num_labels: int = 1,
                    kind: str = "llama", chat_template: bool = True) -> Path:
    """A random sequence classifier: a 2-layer Llama (decoder reward model) or BERT (NLI-style encoder).

    ``num_labels == 3`` names the labels contradiction/neutral/entailment like MNLI heads.
    """
    from transformers import BertConfig, BertForSequenceClassification, LlamaForSequenceClassification

    torch.manual_seed(seed)
    labels = NLI_LABELS if num_labels == 3 else {i: f"LABEL_{i}" for i in range(num_labels)}
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, pad_token_id=0, num_labels=num_labels,
                  id2label=labels, label2id={v: k for k, v in labels.items()})
    if kind == "llama":
        model = LlamaForSequenceClassification(LlamaConfig(num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                                           **common))
    else:
        model = BertForSequenceClassification(BertConfig(**common))
    with torch.no_grad():  # spread the random head so labels and rows really differ
        for p in model.score.parameters() if kind == "llama" else model.classifier.parameters():
            p.mul_(10.0)
    model.eval().save_pretrained(path)
    saved = tokenizer if chat_template else _without_template(tokenizer)
    saved.save_pretrained(path)
    return path


def _without_template(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain
