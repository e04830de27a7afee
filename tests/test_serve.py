"""The serving API through the real ``openai`` client (and raw HTTP for what that client refuses to send) against a
live server on a tiny random model: completions, chat, streaming, n with spread, weights, every bad request,
continuous batching, disconnects, and the ``polyalign serve`` command itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from polyalign.interface import GenerationConfig
from polyalign.serve import Limits, Served
from polyalign.serve.weighting import spread
from polyalign.weights import REAL
from tests.serve_live import KEY, PERSONAS, GatedScheduler, SlowScheduler, live_server, tiny_policy

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.usefixtures("one_thread")

LIMITS = Limits(max_prompt_tokens=64, max_tokens=180, default_max_tokens=8, max_n=4, max_prompts=4, max_queue=8,
                max_rows=16, max_body_bytes=4096, shutdown_grace=2.0)
PROMPT = "hello world"


@pytest.fixture(scope="module")
def policy(tiny_models):
    return tiny_policy(tiny_models[1])


@pytest.fixture(scope="module")
def live(policy):
    served = [Served("tiny", policy, SlowScheduler(policy, LIMITS.max_rows, LIMITS.max_queue, "tiny"), "tiny MOD")]
    with live_server(served, LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.api, api_key=KEY, max_retries=0, timeout=60)


def alone(policy, prompt, weights, **options):
    """The same request decoded by the policy alone, with no server in between."""
    return policy.generate(prompt, weights, config=GenerationConfig(**options))


def chat(client, prompt=PROMPT, **kwargs):
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], **kwargs)


# -- what works ----------------------------------------------------------------------------------------------------

def test_models_list_the_policy_with_its_objectives_and_weight_ranges(client):
    (card,) = client.models.list().data
    assert card.id == "tiny" and card.owned_by == "polyalign"
    extra = card.model_extra
    assert [o["name"] for o in extra["objectives"]] == list(PERSONAS)
    assert extra["objectives"][0]["min"] is None and extra["objectives"][0]["suggested_range"] == [-0.5, 1.5]
    assert extra["weight_domain"]["kind"] == "real" and extra["alpha"] is None
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat_answers_as_the_policy_does_alone_with_usage_and_finish_reason(client, policy):
    reply = chat(client, max_tokens=8, extra_body={"objective_weights": {"terse": 0.8, "warm": 0.2}})
    (gen,) = alone(policy, PROMPT, [0.8, 0.2], max_new_tokens=8)
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content == gen.text
    assert choice.finish_reason == "length"
    assert choice.model_extra["objective_weights"] == {"terse": 0.8, "warm": 0.2}
    assert reply.usage.prompt_tokens == len(gen.prompt_token_ids) and reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    assert reply.object == "chat.completion" and reply.model == "tiny"


def test_completions_take_several_prompts_and_default_weights(client, policy):
    prompts = [PROMPT, "tell me a story"]
    reply = client.completions.create(model="tiny", prompt=prompts, max_tokens=6, temperature=0)
    gens = alone(policy, prompts, [0.5, 0.5], max_new_tokens=6)
    assert [c.text for c in reply.choices] == [g.text for g in gens]
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.prompt_tokens == sum(len(g.prompt_token_ids) for g in gens)
    assert reply.usage.completion_tokens == 12


def test_weights_change_the_output(client):
    texts = {chat(client, max_tokens=10, extra_body={"objective_weights": w}).choices[0].message.content
             for w in ({"terse": 1.0}, {"warm": 1.0}, {"terse": 1.5, "warm": -0.5})}
    assert len(texts) == 3


def test_stop_strings_cut_the_answer_and_finish_with_stop(client, policy):
    (full,) = alone(policy, PROMPT, [0.5, 0.5], max_new_tokens=12)
    stop = full.text[4:6]
    reply = chat(client, max_tokens=12, stop=[stop])
    (gen,) = alone(policy, PROMPT, [0.5, 0.5], max_new_tokens=12, stop=[stop])
    assert reply.choices[0].message.content == gen.text == full.text[: full.text.find(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_streamed_chunks_add_up_to_the_answer_with_role_finish_and_usage(client):
    whole = chat(client, max_tokens=10).choices[0].message.content
    chunks = list(chat(client, max_tokens=10, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_streamed_completions_with_n_samples_equal_the_seeded_generation(client, policy):
    stream = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, n=2, temperature=0.9, seed=11,
                                       stream=True)
    texts = ["", ""]
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.text
    gens = alone(policy, PROMPT, [0.5, 0.5], max_new_tokens=6, strategy="sample", n=2, temperature=0.9, seed=11)
    assert texts == [g.text for g in gens]


def test_n_with_spread_decodes_each_choice_at_its_labelled_weighting(client, policy):
    reply = chat(client, max_tokens=6, n=3, extra_body={"spread": True, "objective_weights": {"terse": 0.6,
                                                                                             "warm": 0.4}})
    expected = spread([0.6, 0.4], 3, 0.5, REAL)
    assert [w for row in expected for w in row] == pytest.approx([0.8, 0.2, 0.55, 0.45, 0.3, 0.7])
    for choice, weights in zip(reply.choices, expected, strict=True):
        assert list(choice.model_extra["objective_weights"].values()) == pytest.approx(weights)
        (gen,) = alone(policy, PROMPT, weights, max_new_tokens=6)
        assert choice.message.content == gen.text
    (gen,) = alone(policy, PROMPT, [0.6, 0.4], max_new_tokens=6)
    assert reply.usage.prompt_tokens == len(gen.prompt_token_ids)  # one prompt, counted once
    assert reply.usage.completion_tokens == 18


def test_health_readiness_and_the_playground_files(live):
    assert httpx.get(f"{live.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{live.url}/ready")
    assert ready.status_code == 200 and ready.json()["policies"]["tiny"]["ready"] is True
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and "polyalign playground" in page.text and "https://" not in page.text
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{live.url}/static/{name}").status_code == 200


# -- continuous batching ---------------------------------------------------------------------------------------

def test_a_short_request_sent_during_a_long_one_finishes_first_and_equals_it_alone(client, policy):
    long_w, short_w = {"terse": 0.3, "warm": 0.7}, {"terse": 0.9, "warm": 0.1}
    long_text, events = [], {"first": threading.Event(), "long_done": threading.Event()}

    def long_request():
        for chunk in chat(client, max_tokens=150, stream=True, extra_body={"objective_weights": long_w}):
            if chunk.choices:
                long_text.append(chunk.choices[0].delta.content or "")
                events["first"].set()
        events["long_done"].set()

    thread = threading.Thread(target=long_request)
    thread.start()
    assert events["first"].wait(30)
    short = chat(client, "what is the capital of france?", max_tokens=4, extra_body={"objective_weights": short_w})
    long_was_running = not events["long_done"].is_set()
    thread.join(60)
    assert long_was_running, "the short request waited for the long one"
    (short_alone,) = alone(policy, "what is the capital of france?", [0.9, 0.1], max_new_tokens=4)
    (long_alone,) = alone(policy, PROMPT, [0.3, 0.7], max_new_tokens=150)
    assert short.choices[0].message.content == short_alone.text
    assert "".join(long_text) == long_alone.text


def wait_for_no_rows(live, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{live.url}/ready").json()["policies"]["tiny"]["rows"] == 0:
            return
        time.sleep(0.02)
    raise AssertionError("rows stayed in the batch")


def test_a_client_that_disconnects_mid_stream_frees_its_rows_at_once(live):
    wait_for_no_rows(live)
    scheduler = live.served[0].scheduler
    before = scheduler.steps
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 170, "stream": True,
            "temperature": 0}
    with httpx.stream("POST", f"{live.api}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    wait_for_no_rows(live)
    assert scheduler.steps - before < 120  # stopped well short of the 170 steps it asked for


def test_a_client_that_gives_up_on_a_plain_request_frees_its_rows(live):
    wait_for_no_rows(live)
    scheduler = live.served[0].scheduler
    before = scheduler.steps
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 170, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{live.api}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=0.3)
    wait_for_no_rows(live)
    assert scheduler.steps - before < 150


# -- bad requests ----------------------------------------------------------------------------------------------

def post(live, path, body, key=KEY, raw=None):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"} if key else {}
    content = raw if raw is not None else json.dumps(body)
    return httpx.post(f"{live.api}/{path}", content=content, headers=headers, timeout=30)


def message(content=PROMPT):
    return [{"role": "user", "content": content}]


BAD = [
    ("unknown objective", {"objective_weights": {"nonesuch": 1.0}}, 400, "unknown_objective"),
    ("weights as text", {"objective_weights": {"terse": "high"}}, 400, "invalid_value"),
    ("weights as a list", {"objective_weights": [0.5, 0.5]}, 400, "invalid_value"),
    ("a boolean weight", {"objective_weights": {"terse": True}}, 400, "invalid_value"),
    ("empty weights", {"objective_weights": {}}, 400, None),
    ("all weights zero", {"objective_weights": {"terse": 0, "warm": 0}}, 400, None),
    ("alpha for a policy without one", {"alpha": 0.5}, 400, "alpha_not_supported"),
    ("alpha as text", {"alpha": "0.5"}, 400, "invalid_value"),
    ("too many choices", {"n": 5, "temperature": 1}, 400, "too_many_choices"),
    ("n > 1 greedy", {"n": 2, "temperature": 0}, 400, None),
    ("spread with one choice", {"spread": True}, 400, None),
    ("max_tokens too large", {"max_tokens": 181}, 400, "max_tokens_too_large"),
    ("max_tokens zero", {"max_tokens": 0}, 400, "invalid_value"),
    ("max_tokens as text", {"max_tokens": "9"}, 400, "invalid_value"),
    ("temperature too high", {"temperature": 3}, 400, "invalid_value"),
    ("unsupported penalty", {"presence_penalty": 1.0}, 400, "invalid_value"),
    ("an unknown field", {"logit_bias": {"5": 10}}, 400, "invalid_value"),
    ("too many stops", {"stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_value"),
    ("a prompt too long", {"messages": message("hello " * 100)}, 400, "context_length_exceeded"),
    ("no messages", {"messages": []}, 400, "invalid_value"),
    ("an assistant turn last", {"messages": [{"role": "assistant", "content": "hi"}]}, 400, None),
    ("an image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "invalid_value"),
    ("a model path", {"model": "/etc/passwd"}, 404, "model_not_found"),
    ("a hub model", {"model": "gpt2"}, 404, "model_not_found"),
]


@pytest.mark.parametrize(("what", "change", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_chat_requests_get_an_openai_error_body(live, what, change, status, code):
    body = {"model": "tiny", "messages": message(), "max_tokens": 4, **change}
    response = post(live, "chat/completions", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.text


RAW = [
    ("NaN weight", '{"model": "tiny", "prompt": "hi", "objective_weights": {"terse": NaN}}', 400),
    ("Infinity weight", '{"model": "tiny", "prompt": "hi", "objective_weights": {"terse": Infinity}}', 400),
    ("overflowing weight", '{"model": "tiny", "prompt": "hi", "objective_weights": {"terse": 1e999}}', 400),
    ("NaN temperature", '{"model": "tiny", "prompt": "hi", "temperature": NaN}', 400),
    ("not JSON", '{"model": "tiny", "prompt": ', 400),
    ("not an object", '["tiny"]', 400),
    ("not UTF-8", b'{"model": "tiny", "prompt": "\xff\xfe"}', 400),
    ("too many prompts", json.dumps({"model": "tiny", "prompt": ["a"] * 5}), 400),
    ("a body too large", json.dumps({"model": "tiny", "prompt": "x" * 5000}), 413),
]


@pytest.mark.parametrize(("what", "raw", "status"), RAW, ids=[r[0] for r in RAW])
def test_bad_raw_bodies_get_an_openai_error_body(live, what, raw, status):
    response = post(live, "completions", None, raw=raw)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"] and "Traceback" not in response.text


def test_the_openai_client_raises_its_own_error_types(live, client):
    with pytest.raises(openai.BadRequestError, match="unknown objective"):
        chat(client, extra_body={"objective_weights": {"nonesuch": 1}})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="../models/other", messages=message())
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=live.api, api_key=key or "x", max_retries=0)
        if not key:
            bad = openai.OpenAI(base_url=live.api, api_key="x", max_retries=0, default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    assert post(live, "completions", {"model": "tiny", "prompt": "hi"}, key=None).status_code == 401


def test_a_full_queue_answers_429_and_the_queued_requests_still_finish(policy):
    limits = Limits(max_tokens=8, default_max_tokens=4, max_rows=1, max_queue=1)
    scheduler = GatedScheduler(policy, limits.max_rows, limits.max_queue, "gated")
    with live_server([Served("tiny", policy, scheduler)], limits, api_key=None) as live:
        client = openai.OpenAI(base_url=live.api, api_key="unused", max_retries=0, timeout=60)
        results = []
        threads = [threading.Thread(target=lambda: results.append(chat(client, max_tokens=4))) for _ in range(2)]
        for t, (key, count) in zip(threads, [("rows", 1), ("waiting", 1)], strict=True):
            t.start()  # the first is admitted (and held at the gate), the second waits in the queue
            deadline = time.monotonic() + 10
            while scheduler.load[key] < count:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as caught:
            chat(client, max_tokens=4)
        assert caught.value.body["code"] == "queue_full"
        scheduler.gate.set()
        for t in threads:
            t.join(30)
        assert len(results) == 2 and results[0].choices[0].message.content == results[1].choices[0].message.content


# -- the command -----------------------------------------------------------------------------------------------

def run_cli(*args, timeout=60):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "polyalign.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_serve_refuses_a_missing_policy_and_a_port_in_use_with_one_error_line(tmp_path):
    missing = run_cli("--policy", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "does not exist" in missing.stderr
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        busy = run_cli("--port", str(holder.getsockname()[1]))
    finally:
        holder.close()
    assert busy.returncode == 2 and "already in use" in busy.stderr and "Traceback" not in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: nonesuch\n")
    refused = run_cli("--policy", str(bad_yaml), "--port", "0")
    assert refused.returncode == 2 and "unknown policy kind" in refused.stderr


def test_serve_starts_from_a_policy_yaml_answers_and_shuts_down_gracefully(tmp_path, tiny_models):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({"kind": "mod", "personas": PERSONAS, "model": str(tiny_models[1])}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "polyalign.cli", "serve", "--policy", f"mine={config}", "--port",
                             "0", "--api-key", "k"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("polyalign serve on http://127.0.0.1:"), first + proc.stderr.read()
        url = first.split()[3]
        policy_line = proc.stdout.readline()
        assert "'mine'" in policy_line and "['terse', 'warm']" in policy_line
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="mine", messages=message(), max_tokens=3, temperature=0)
        assert reply.usage.completion_tokens == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_request_the_model_cannot_fit_is_a_400_streamed_or_not(client):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="positions"):  # under max_prompt_tokens, over the context
            chat(client, "hello world " * 7, max_tokens=180, stream=stream)


def test_a_clp_policy_takes_alpha_in_its_range_and_simplex_weights(tiny_models):
    from polyalign.policies import CLP

    policy = CLP.create(["short", "kind"], str(tiny_models[0]), "lora", alpha_min=0.05)
    limits = Limits(max_tokens=8, default_max_tokens=4)
    with live_server([Served("clp", policy, SlowScheduler(policy, 8, 8, "clp"))], limits, api_key=None) as live:
        client = openai.OpenAI(base_url=live.api, api_key="unused", max_retries=0, timeout=60)
        card = client.models.retrieve("clp").model_extra
        assert card["weight_domain"]["kind"] == "simplex" and card["alpha"]["min"] == 0.05
        assert [(o["min"], o["max"]) for o in card["objectives"]] == [(0.0, 1.0), (0.0, 1.0)]
        weights = {"short": 0.3, "kind": 0.7}
        reply = client.chat.completions.create(model="clp", messages=message(), max_tokens=5, temperature=0,
                                               extra_body={"objective_weights": weights, "alpha": 0.5})
        (gen,) = policy.generate(PROMPT, [0.3, 0.7], alpha=0.5, config=GenerationConfig(max_new_tokens=5))
        assert reply.choices[0].message.content == gen.text and reply.model_extra["alpha"] == 0.5
        for bad in ({"alpha": 0.01}, {"objective_weights": {"short": 0.6, "kind": 0.6}}):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="clp", messages=message(), max_tokens=3, temperature=0,
                                               extra_body=bad)


def test_shutdown_gives_a_running_request_its_grace_then_a_clean_error(policy):
    limits = Limits(max_tokens=150, default_max_tokens=4, shutdown_grace=0.5)
    scheduler = SlowScheduler(policy, 8, 8, "tiny")
    scheduler.delay = 0.02  # 150 steps: far longer than the grace
    errors, started = [], threading.Event()
    with live_server([Served("tiny", policy, scheduler)], limits, api_key=None) as live:
        client = openai.OpenAI(base_url=live.api, api_key="unused", max_retries=0, timeout=60)

        def long_request():
            try:
                for _ in chat(client, max_tokens=150, stream=True):
                    started.set()
            except openai.APIError as exc:
                errors.append(exc)

        thread = threading.Thread(target=long_request)
        thread.start()
        assert started.wait(30)
        live.server.should_exit = True
        thread.join(30)
        assert not scheduler.alive
    assert len(errors) == 1 and "shut down before this request finished" in str(errors[0])
