from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny import build_tokenizer, save_lora_adapter, save_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_models(tiny_dir, tiny_tokenizer) -> list[Path]:
    """Three random checkpoints sharing one tokenizer: [reference, expert A, expert B]."""
    return [save_model(tiny_dir / f"model{i}", tiny_tokenizer, seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def tiny_padded_model(tiny_dir, tiny_tokenizer) -> Path:
    """A checkpoint whose logit layer has 16 extra slots beyond the tokenizer."""
    return save_model(tiny_dir / "padded", tiny_tokenizer, seed=7, extra_vocab=16)


@pytest.fixture(scope="session")
def tiny_adapters(tiny_dir, tiny_models) -> list[Path]:
    """Two random LoRA adapters on tiny_models[0]."""
    return [save_lora_adapter(tiny_dir / f"lora{i}", tiny_models[0], seed=10 + i) for i in range(2)]


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_dir, tiny_tokenizer) -> Path:
    """A random Llama reward model with a scalar head whose tokenizer has a chat template."""
    from tests.tiny import save_classifier

    return save_classifier(tiny_dir / "reward", tiny_tokenizer, seed=21, num_labels=1, kind="llama")


@pytest.fixture(scope="session")
def tiny_nli_model(tiny_dir, tiny_tokenizer) -> Path:
    """A random BERT classifier with MNLI-style labels and no chat template."""
    from tests.tiny import save_classifier

    return save_classifier(tiny_dir / "nli", tiny_tokenizer, seed=22, num_labels=3, kind="bert", chat_template=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread is far faster than two contending on a busy 2-core machine (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
