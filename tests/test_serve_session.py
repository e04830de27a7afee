"""What the server's continuous batching stands on, without HTTP: rows joining a session with their own options,
rows removed between steps, the cache's left padding trimmed, the scheduler's admission/cancel/shutdown, the
spread rule and the chat transcript."""

from __future__ import annotations

import math
import threading

import pytest

from polyalign.errors import ConfigError
from polyalign.interface import GenerationConfig
from polyalign.serve.scheduler import Admitted, Failed, Job, Scheduler, Tokens
from polyalign.serve.schemas import ApiError, ChatRequest, chat_prompt
from polyalign.serve.weighting import spread, spread_points
from polyalign.weights import REAL, SCALAR, SIMPLEX
from tests.serve_live import tiny_policy

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["hello world", "tell me a story about a happy cat, please", "what is the capital of france?"]


@pytest.fixture(scope="module")
def policy(tiny_models):
    return tiny_policy(tiny_models[1])


def test_rows_joining_with_their_own_options_decode_as_they_would_alone(policy):
    long = GenerationConfig(max_new_tokens=14)
    short = GenerationConfig(max_new_tokens=3, stop=["e"])
    sampled = GenerationConfig(max_new_tokens=6, strategy="sample", n=2, temperature=0.8, top_p=0.9, seed=3)
    expected = (policy.generate(PROMPTS[0], [0.5, 0.5], config=long)
                + policy.generate(PROMPTS[1], [1.0, 0.0], config=short)
                + policy.generate(PROMPTS[2], [0.2, 0.8], config=sampled))
    session = policy.start(PROMPTS[0], [0.5, 0.5], config=long)
    session.step()
    policy.join(session, PROMPTS[1], [1.0, 0.0], config=short)
    session.step()
    policy.join(session, PROMPTS[2], [0.2, 0.8], seed=3, config=sampled)
    while not session.done:
        session.step()
    assert [d.ids for d in session.drafts] == [g.token_ids for g in expected]
    assert [d.text for d in session.drafts] == [g.text for g in expected]
    assert [d.finish_reason for d in session.drafts] == [g.finish_reason for g in expected]


def test_joining_rows_cannot_change_the_batch_wide_constraints_or_use_beams(policy):
    session = policy.start(PROMPTS[0], [0.5, 0.5], config=GenerationConfig(max_new_tokens=4))
    with pytest.raises(ConfigError, match="repetition_penalty"):
        policy.join(session, PROMPTS[1], [0.5, 0.5], config=GenerationConfig(repetition_penalty=1.2))
    with pytest.raises(ConfigError, match="beam"):
        policy.join(session, PROMPTS[1], [0.5, 0.5], config=GenerationConfig(strategy="beam", num_beams=2))


def test_removed_rows_leave_at_once_the_others_are_unchanged_and_the_padding_is_cut(policy):
    config = GenerationConfig(max_new_tokens=12)
    alone = policy.generate(PROMPTS[0], [0.3, 0.7], config=config)
    session = policy.start(PROMPTS[1:], [0.5, 0.5], config=config)  # longer prompts: row 2 pads the others
    for _ in range(2):
        session.step()
    (late,) = policy.join(session, PROMPTS[0], [0.3, 0.7])
    session.step()
    width = session.state.groups[0].mask.shape[1]
    session.remove([0, 1])
    assert [r.index for r in session.rows] == [late]
    assert session.state.groups[0].mask.shape[1] < width  # the long prompts' columns are gone
    assert bool(session.state.groups[0].mask[:, 0].any())  # no column is padding in every row (role)
    while not session.done:
        session.step()
    assert session.drafts[late].ids == alone[0].token_ids
    assert session.drafts[0].finish_reason is None and len(session.drafts[0].ids) == 3


class Sink:
    def __init__(self) -> None:
        self.updates, self.done = [], threading.Event()

    def __call__(self, update) -> None:
        self.updates.append(update)
        if isinstance(update, Failed) or isinstance(update, Tokens) and any(r for _, _, r in update.events):
            self.done.set()

    def text(self) -> str:
        return "".join(t for u in self.updates if isinstance(u, Tokens) for _, t, _ in u.events)


def test_the_scheduler_batches_jobs_and_answers_each_as_alone(policy):
    scheduler = Scheduler(policy, max_rows=4)
    scheduler.start()
    try:
        configs = [GenerationConfig(max_new_tokens=k) for k in (9, 3, 5)]
        sinks = [Sink() for _ in PROMPTS]
        for prompt, config, sink in zip(PROMPTS, configs, sinks, strict=True):
            scheduler.submit(Job([prompt], [[0.4, 0.6]], None, config, sink))
        for sink in sinks:
            assert sink.done.wait(30)
        for prompt, config, sink in zip(PROMPTS, configs, sinks, strict=True):
            assert isinstance(sink.updates[0], Admitted)
            assert sink.text() == policy.generate(prompt, [0.4, 0.6], config=config)[0].text
    finally:
        scheduler.stop(1.0)


def test_a_bad_job_fails_alone_and_a_stopped_scheduler_refuses_and_ends_the_rest_cleanly(policy):
    scheduler = Scheduler(policy, max_rows=4)
    scheduler.start()
    bad = Sink()
    scheduler.submit(Job(["hello " * 200], [[0.5, 0.5]], None, GenerationConfig(max_new_tokens=4), bad))
    assert bad.done.wait(30)
    assert isinstance(bad.updates[-1], Failed) and bad.updates[-1].error.status == 400
    long = Sink()
    scheduler.submit(Job([PROMPTS[0]], [[0.5, 0.5]], None, GenerationConfig(max_new_tokens=150), long))
    while not long.updates:
        threading.Event().wait(0.01)
    scheduler.stop(grace=0.0)
    assert isinstance(long.updates[-1], Failed) and long.updates[-1].error.status == 503
    with pytest.raises(ApiError) as refused:
        scheduler.submit(Job([PROMPTS[0]], [[0.5, 0.5]], None, GenerationConfig(), Sink()))
    assert refused.value.status == 503


def test_spread_points_cover_the_simplex_and_spread_keeps_the_sum():
    assert spread_points(3, 2) == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    three = spread_points(4, 3)
    assert three[:3] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert all(math.isclose(sum(p), 1.0) for p in three) and three[3] == pytest.approx([1 / 3] * 3, abs=0.05)
    for w in ([2.0, -1.0], [0.3, 0.7]):
        for row in spread(w, 4, 0.5, REAL):
            assert math.isclose(sum(row), sum(w))
    assert all(min(row) >= 0 for row in spread([0.3, 0.7], 5, 1.0, SIMPLEX))
    assert spread([2.0], 3, 0.5, SCALAR) == [[1.0], [2.0], [3.0]]


def test_a_conversation_is_one_user_turn():
    def req(*messages):
        return ChatRequest.model_validate({"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]})

    assert chat_prompt(req(("user", "hi")).messages) == "hi"
    assert chat_prompt(req(("system", "be brief"), ("user", "hi")).messages) == "be brief\n\nhi"
    assert chat_prompt(req(("user", "hi"), ("assistant", "hello"), ("user", "how?")).messages) == (
        "User: hi\n\nAssistant: hello\n\nUser: how?")
