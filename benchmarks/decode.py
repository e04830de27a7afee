"""Decoding throughput on the embedded default model (issue 2's benchmark).

Prints tokens per second and ratios against plain single-model ``transformers.generate`` measured in the
same run: MOD with 2 and 3 persona experts (one batched forward per step), MOD with 2 LoRA experts
(peft mixed-adapter batch), and the naive loop of the research code (each expert's forward one after
another, each with its own cache), both at the research code's batch cap of 4 prompts and at the full
batch. Every run generates exactly ``--tokens`` tokens per prompt.

    python benchmarks/decode.py [--batch 16] [--tokens 64] [--repeats 2] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import DynamicCache

from polyalign.combine import combine_logprobs
from polyalign.experts import Expert, format_prompt
from polyalign.interface import GenerationConfig
from polyalign.models import DEFAULT_MODEL, load_model
from polyalign.policies import MOD

PERSONAS = {
    "concise": "You are a blunt, dry, matter-of-fact assistant. Answer in one short plain sentence.",
    "warm": "You are a cheerful, loving assistant. Write long, warm, enthusiastic answers!",
    "formal": "You are a formal academic. Answer with precise, technical language.",
}
TOPICS = ["the sea", "bread", "trains", "winter", "music", "chess", "bees", "rivers", "maps", "tea", "clocks",
          "snow", "owls", "glass", "paper", "stars"]


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, one-off kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_generate(prompts: list[str], tokens: int, dtype: str):
    loaded = load_model(DEFAULT_MODEL, dtype=dtype)
    tok = loaded.tokenizer
    enc = tok([format_prompt(tok, p, None, True) for p in prompts], return_tensors="pt", padding=True,
              add_special_tokens=False)

    def run():
        with torch.inference_mode():
            loaded.model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
    return run


def naive_loop(prompts: list[str], tokens: int, systems: list[str], dtype: str, batch_cap: int):
    """The research code's way: one forward per expert per step, each with its own cache, ``batch_cap``
    prompts at a time."""
    loaded = load_model(DEFAULT_MODEL, dtype=dtype)
    tok, model = loaded.tokenizer, loaded.model
    vocab = len(tok)
    eos = [tok.eos_token_id]
    weights = torch.full((len(systems),), 1.0 / len(systems))
    chunks = [prompts[i:i + batch_cap] for i in range(0, len(prompts), batch_cap)]

    def run():
        for chunk in chunks:
            run_chunk(chunk)

    def run_chunk(chunk):
        encs = [tok([format_prompt(tok, p, s, True) for p in chunk], return_tensors="pt", padding=True,
                    add_special_tokens=False) for s in systems]
        with torch.inference_mode():
            states = []
            for enc in encs:
                mask = enc["attention_mask"]
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos,
                            past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
                states.append([out, mask, pos[:, -1:] + 1])
            for _ in range(tokens):
                lps = torch.stack([torch.log_softmax(s[0].logits[:, -1, :vocab].float(), -1) for s in states])
                lps[:, :, eos] = -1e9  # same fixed length as the others
                nxt = combine_logprobs(None, lps, weights).argmax(-1, keepdim=True)
                for s in states:
                    s[1] = torch.cat([s[1], s[1].new_ones(len(chunk), 1)], -1)
                    s[0] = model(input_ids=nxt, attention_mask=s[1], position_ids=s[2],
                                 past_key_values=s[0].past_key_values, use_cache=True)
                    s[2] = s[2] + 1
    return run


def random_lora_adapters(n: int, directory: str) -> list[str]:
    from peft import LoraConfig, get_peft_model

    paths = []
    for i in range(n):
        base = load_model(DEFAULT_MODEL, cached=False, dtype="float32").model
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.01)
        path = f"{directory}/lora{i}"
        model.save_pretrained(path)
        paths.append(path)
    return paths


def mod_run(policy: MOD, prompts: list[str], tokens: int):
    m = len(policy.objectives)
    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens)
    return lambda: policy.generate(prompts, [1.0 / m] * m, config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="float32, or bfloat16 (fast on CPUs with AMX)")
    args = parser.parse_args()
    torch.manual_seed(0)
    prompts = [f"Write a few sentences about {t}." for t in (TOPICS * 4)[: args.batch]]
    names = list(PERSONAS)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = random_lora_adapters(2, tmp)
        two = [PERSONAS[n] for n in names[:2]]
        dt = {"dtype": args.dtype}
        runs = {
            "transformers.generate, 1 model": plain_generate(prompts, args.tokens, args.dtype),
            "MOD, 2 persona experts": mod_run(MOD.from_personas({n: PERSONAS[n] for n in names[:2]},
                                                                with_reference=False, **dt), prompts, args.tokens),
            "MOD, 3 persona experts": mod_run(MOD.from_personas(PERSONAS, with_reference=False, **dt), prompts,
                                              args.tokens),
            "MOD, 2 LoRA experts": mod_run(MOD([Expert(adapter=a, name=f"lora{i}") for i, a in enumerate(adapters)],
                                               **dt), prompts, args.tokens),
            "naive loop, 2 personas, batch 4": naive_loop(prompts, args.tokens, two, args.dtype, 4),
            f"naive loop, 2 personas, batch {args.batch}": naive_loop(prompts, args.tokens, two, args.dtype,
                                                                      args.batch),
        }
        times = {}
        for name, fn in runs.items():
            times[name] = best_time(fn, args.repeats)
            print(f"  measured {name}: {times[name]:.2f} s", flush=True)
    base = times["transformers.generate, 1 model"]
    naive4 = times["naive loop, 2 personas, batch 4"]
    naive = times[f"naive loop, 2 personas, batch {args.batch}"]
    total = args.batch * args.tokens
    print(f"\nbatch {args.batch}, {args.tokens} new tokens, {args.dtype}, best of {args.repeats}, "
          f"device {load_model().device}, {torch.get_num_threads()} threads")
    print(f"{'run':36s} {'tok/s':>8s} {'vs generate':>12s} {'vs naive b4':>12s} {f'vs naive b{args.batch}':>12s}")
    for name, t in times.items():
        print(f"{name:36s} {total / t:8.1f} {base / t:11.2f}x {naive4 / t:11.2f}x {naive / t:11.2f}x")


if __name__ == "__main__":
    main()
