"""Objectives that run a transformers model: embedding relevance and sequence-classifier rewards.

``hf`` scores (prompt, response) with any ``AutoModelForSequenceClassification`` reward model (the chat
template when the tokenizer has one, else a text pair); ``nli`` is the same classifier reading
(premise, hypothesis) = (prompt or reference, response) and taking the entailment label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from polyalign.errors import ObjectiveError
from polyalign.objectives.base import RowError
from polyalign.objectives.loading import input_limit, load_model, minilm_path


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token embeddings over the attention mask (sentence-transformers' pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class Relevance:
    """Cosine similarity of prompt and response embeddings (all-MiniLM-L6-v2, mean pooled), in [-1, 1]."""

    def __init__(self, model: str | None = None, against: Literal["prompt", "reference"] = "prompt",
                 device: str = "auto", max_length: int = 256):
        self.model, self.tokenizer = load_model("encoder", model or minilm_path(), device, "float32")
        self.against, self.max_length = against, input_limit(self.model, self.tokenizer, max_length)
        self.name, self.higher_is_better = "relevance", True

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised sentence embeddings ``[N, D]``."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.model.device)
        hidden = self.model(**batch).last_hidden_state
        return F.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1)

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        anchors = _premises(self.name, self.against, prompts, references)
        unique = list(dict.fromkeys(anchors))  # many responses often share one prompt: embed it once
        anchor_vectors = self.embed(unique)[[unique.index(a) for a in anchors]]
        return (anchor_vectors * self.embed(responses)).sum(-1).cpu()


def _premises(name: str, source: str, prompts: Sequence[str], references: Sequence[str | None] | None) -> list[str]:
    if source == "prompt":
        return list(prompts)
    if references is None:
        raise ObjectiveError(f"objective {name!r} reads the reference (against/premise=reference) but no "
                             "references were given")
    for row, reference in enumerate(references):
        if reference is None:
            raise RowError(f"objective {name!r} reads the reference; row {{row}} has none", row)
    return list(references)


class Classifier:
    """One label (or the scalar head) of an ``AutoModelForSequenceClassification``, batched, on its device."""

    def __init__(self, model: str, label: str | None = None,
                 output: Literal["auto", "logit", "prob", "logprob"] = "auto", chat_template: bool | None = None,
                 premise: Literal["prompt", "reference"] = "prompt", device: str = "auto", dtype: str = "auto",
                 max_length: int = 512, trust_remote_code: bool = False, revision: str | None = None,
                 name: str = "hf"):
        # Left truncation keeps the end of a too-long response; the tokenizer is this setting's own, not mutated.
        self.model, self.tokenizer = load_model("classifier", model, device, dtype, trust_remote_code, revision,
                                                truncation_side="left")
        self.name, self.higher_is_better = name, True
        self.index = self._label_index(model, label)
        self.output = ("logit" if self.model.config.num_labels == 1 else "prob") if output == "auto" else output
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ObjectiveError(f"objective {name!r}: chat_template=true but the tokenizer of {model!r} has none")
        self.chat = has_template if chat_template is None else chat_template
        self.premise, self.max_length = premise, input_limit(self.model, self.tokenizer, max_length)

    def _label_index(self, model: str, label: str | None) -> int:
        id2label = {int(i): str(v) for i, v in self.model.config.id2label.items()}
        n = self.model.config.num_labels
        if label is None:
            if n == 1:
                return 0
            raise ObjectiveError(f"objective {self.name!r}: {model!r} has {n} labels ({', '.join(id2label.values())}); "
                                 "choose one with label=NAME")
        if label.isdigit() and int(label) < n:
            return int(label)
        for index, text in id2label.items():
            if text.lower() == label.lower():
                return index
        raise ObjectiveError(f"objective {self.name!r}: {model!r} has no label {label!r}; its labels are "
                             f"{', '.join(id2label.values())}")

    def encode(self, prompts: Sequence[str], responses: Sequence[str], references=None):
        """Tokenised model inputs: the chat template over (user, assistant), else (premise, response) pairs."""
        common = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        if self.chat:
            texts = [self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
                for p, r in zip(prompts, responses, strict=True)]
            return self.tokenizer(texts, add_special_tokens=False, **common)
        premises = _premises(self.name, self.premise, prompts, references)
        return self.tokenizer(premises, list(responses), **common)

    @torch.inference_mode()
    def score(self, prompts, responses, references=None) -> torch.Tensor:
        batch = self.encode(prompts, responses, references).to(self.model.device)
        logits = self.model(**batch).logits.float()
        if self.model.config.num_labels == 1:
            chosen = logits[:, 0]
            probs = {"prob": torch.sigmoid, "logprob": F.logsigmoid}
        else:
            chosen = logits[:, self.index]
            probs = {"prob": lambda _: logits.softmax(-1)[:, self.index],
                     "logprob": lambda _: logits.log_softmax(-1)[:, self.index]}
        return (chosen if self.output == "logit" else probs[self.output](chosen)).cpu()
