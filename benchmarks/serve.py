"""Serving throughput and latency on the embedded model (issue 10's benchmark).

A live ``polyalign serve`` app (uvicorn in this process, the default persona MOD: reference + 2 persona experts on
SmolLM2-135M-Instruct) answers ``--requests`` chat requests with mixed weights (on and off the simplex) and mixed
lengths (``--lengths``), sent through the ``openai`` client with streaming:

1. from ``--clients`` concurrent clients (continuous batching);
2. the same requests one at a time, in the same run;
3. short requests arriving while a long one runs: their time to first token, against an idle server's.

Prints throughput (completion tokens/s), p50/p95 time to first token and latency, errors, the ratio of 1 to 2, and
one JSON line. Every request is greedy with ``max_tokens`` from ``--lengths``; the tokens counted are the usage the
server reports.

    python benchmarks/serve.py [--requests 200] [--clients 16] [--lengths 8,16,32,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import torch

from polyalign.prompts import builtin_prompts
from polyalign.serve import Limits, Scheduler, Served, create_app
from polyalign.serve.server import bind, default_policy


@dataclass
class Result:
    ttft: float
    latency: float
    tokens: int
    error: str | None = None


def requests_for(n: int, lengths: list[int], seed: int) -> list[dict]:
    """``n`` chat requests: prompts from the held-out set, weights on and off the simplex, mixed lengths."""
    rng = random.Random(seed)
    prompts = builtin_prompts("heldout")
    out = []
    for i in range(n):
        w = rng.choice([rng.random(), rng.uniform(-0.5, 1.5)])
        out.append({"messages": [{"role": "user", "content": prompts[i % len(prompts)]}], "max_tokens":
                    rng.choice(lengths), "objective_weights": {"concise": round(w, 3), "warm": round(1 - w, 3)}})
    return out


def send(client, request: dict) -> Result:
    start = time.perf_counter()
    first, tokens = None, 0
    try:
        stream = client.chat.completions.create(
            model="personas", messages=request["messages"], max_tokens=request["max_tokens"], temperature=0,
            stream=True, stream_options={"include_usage": True},
            extra_body={"objective_weights": request["objective_weights"]})
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as exc:  # noqa: BLE001 - counted and reported, the benchmark goes on
        return Result(0.0, time.perf_counter() - start, 0, f"{type(exc).__name__}: {exc}")
    end = time.perf_counter()
    return Result((first or end) - start, end - start, tokens)


def run_clients(client, requests: list[dict], clients: int) -> tuple[list[Result], float]:
    """Send ``requests`` from ``clients`` threads, each taking the next one when its last is answered."""
    results: list[Result | None] = [None] * len(requests)
    lock, cursor = threading.Lock(), [0]

    def worker():
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(requests):
                return
            results[i] = send(client, requests[i])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summary(results: list[Result], wall: float) -> dict:
    ok = [r for r in results if r.error is None]
    tokens = sum(r.tokens for r in ok)
    return {"requests": len(results), "errors": len(results) - len(ok), "tokens": tokens, "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1),
            "ttft_p50_s": round(quantile([r.ttft for r in ok], 0.5), 3),
            "ttft_p95_s": round(quantile([r.ttft for r in ok], 0.95), 3),
            "latency_p50_s": round(quantile([r.latency for r in ok], 0.5), 3),
            "latency_p95_s": round(quantile([r.latency for r in ok], 0.95), 3)}


def short_during_long(client, shorts: int, long_tokens: int) -> dict:
    """TTFT of short requests (8 tokens) sent one after another while a long request runs (restarted when it
    ends), and of the same short requests on an idle server."""
    short = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8,
             "objective_weights": {"concise": 0.8, "warm": 0.2}}
    long = {"messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            "max_tokens": long_tokens, "objective_weights": {"concise": 0.2, "warm": 0.8}}
    idle = [send(client, short).ttft for _ in range(max(3, shorts // 4))]
    busy, stop = [], threading.Event()

    def keep_long_running():
        while not stop.is_set():
            send(client, long)

    runner = threading.Thread(target=keep_long_running)
    runner.start()
    time.sleep(1.0)  # the long request is decoding
    for _ in range(shorts):
        busy.append(send(client, short).ttft)
        time.sleep(0.05)
    stop.set()
    runner.join()
    return {"short_ttft_busy_p50_s": round(quantile(busy, 0.5), 3), "short_ttft_busy_p95_s": round(quantile(busy, 0.95),
            3), "short_ttft_idle_p50_s": round(quantile(idle, 0.5), 3), "long_max_tokens": long_tokens,
            "shorts": shorts}


def phase(name: str, fn):
    """Run one phase, saying on stderr when it starts and how long it took (the whole run takes minutes)."""
    print(f"[serve benchmark] {name}...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    out = fn()
    print(f"[serve benchmark] {name}: {time.perf_counter() - start:.1f} s {json.dumps(out)}", file=sys.stderr,
          flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--lengths", default="8,16,32,64", help="max_tokens values, drawn per request")
    parser.add_argument("--sequential", type=int, default=None,
                        help="serve only the first N requests one at a time (default: all); throughput compares")
    parser.add_argument("--shorts", type=int, default=20, help="short requests sent during a long one")
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--max-rows", type=int, default=64, help="rows per batch (each request is 3 roles' rows)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; on a shared CPU 1 is far faster than contending)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import openai
    import uvicorn

    lengths = [int(x) for x in args.lengths.split(",")]
    policy = default_policy()
    limits = Limits(max_tokens=max(lengths + [args.long_tokens]), max_rows=args.max_rows, max_queue=4 * args.requests)
    served = [Served("personas", policy, Scheduler(policy, limits.max_rows, limits.max_queue, "personas"))]
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(served, limits), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="none", max_retries=0,
                           timeout=600)
    requests = requests_for(args.requests, lengths, args.seed)
    send(client, requests[0])  # warm-up
    try:
        concurrent = phase("concurrent", lambda: summary(*run_clients(client, requests, args.clients)))
        one_by_one = requests[: args.sequential] if args.sequential else requests
        sequential = phase("one at a time", lambda: summary(*run_clients(client, one_by_one, 1)))
        latency = phase("short during long", lambda: short_during_long(client, args.shorts, args.long_tokens))
    finally:
        server.should_exit = True
        thread.join(30)
    ratio = concurrent["tokens_per_s"] / sequential["tokens_per_s"]
    print(f"policy: MOD personas on the embedded model (3 rows per request), torch threads {torch.get_num_threads()}")
    print(f"{'':>22} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'lat p50':>8} {'lat p95':>8} {'errors':>7} reqs")
    for name, s in ((f"{args.clients} clients", concurrent), ("one at a time", sequential)):
        print(f"{name:>22} {s['tokens_per_s']:8.1f} {s['ttft_p50_s']:9.3f} {s['ttft_p95_s']:9.3f} "
              f"{s['latency_p50_s']:8.3f} {s['latency_p95_s']:8.3f} {s['errors']:7d} {s['requests']}")
    print(f"throughput ratio (concurrent / one at a time): {ratio:.2f}x")
    print(f"short request TTFT during a {args.long_tokens}-token request: p50 {latency['short_ttft_busy_p50_s']:.3f} s,"
          f" p95 {latency['short_ttft_busy_p95_s']:.3f} s (idle server p50 {latency['short_ttft_idle_p50_s']:.3f} s)")
    print(json.dumps({"benchmark": "serve", "clients": args.clients, "lengths": lengths, "concurrent": concurrent,
                      "sequential": sequential, "ratio": round(ratio, 2), **latency}))


if __name__ == "__main__":
    main()
