"""``polyalign generate``: decode with MOD over experts given on the command line."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from polyalign.errors import ConfigError
from polyalign.experts import Expert
from polyalign.interface import GenerationConfig, read_prompts
from polyalign.models import DEFAULT_MODEL


def parse_pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` pairs from a repeatable option, with a clear error for anything else."""
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise ConfigError(f"{option} expects NAME=VALUE, got {value!r}")
        pairs.append((name.strip(), rest))
    return pairs


def parse_weights(text: str) -> list[float]:
    """``"0.5,0.5"`` -> [0.5, 0.5]."""
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--weights expects comma-separated numbers such as 0.5,0.5, got {text!r}") from None


def prompts_from(prompt: str | None, prompt_file: Path | None) -> list[str]:
    """Prompts from the argument, a file (:func:`polyalign.interface.read_prompts`) or stdin ("-")."""
    if prompt is not None and prompt_file is not None:
        raise ConfigError("give a prompt or --prompt-file, not both")
    if prompt_file is not None:
        return read_prompts(prompt_file)
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError("no prompt: give one as an argument, with --prompt-file, or on stdin")
        return [sys.stdin.read()]
    return [prompt]


def build_experts(model: str, personas: list[str], adapters: list[str], expert_models: list[str]) -> list[Expert]:
    experts = [Expert(model, system_prompt=p, name=n) for n, p in parse_pairs(personas, "--persona")]
    experts += [Expert(model, adapter=a, name=n) for n, a in parse_pairs(adapters, "--adapter")]
    experts += [Expert(m, name=n) for n, m in parse_pairs(expert_models, "--expert-model")]
    if not experts:
        raise ConfigError("no experts: give --persona NAME=PROMPT, --adapter NAME=PATH or --expert-model NAME=MODEL")
    return experts


def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; '-' or nothing reads stdin.")] = None,
    prompt_file: Annotated[Path | None, typer.Option(help="One prompt per line, JSONL with 'prompt', or a JSON list.")
                           ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Base model of persona and adapter experts.")] = (
        DEFAULT_MODEL
    ),
    persona: Annotated[list[str], typer.Option(help="Persona expert NAME='system prompt' (repeatable).")] = [],  # noqa: B006
    adapter: Annotated[list[str], typer.Option(help="LoRA expert NAME=PATH on --model (repeatable).")] = [],  # noqa: B006
    expert_model: Annotated[list[str], typer.Option(help="Checkpoint expert NAME=MODEL (repeatable).")] = [],  # noqa: B006
    reference: Annotated[str | None, typer.Option(help="Reference model; default --model; 'none' to omit.")] = None,
    reference_system: Annotated[str | None, typer.Option(help="System prompt of the reference.")] = None,
    weights: Annotated[str, typer.Option("--weights", "-w", help="One weight per expert, e.g. 0.5,0.5.")] = "",
    divergence: Annotated[str, typer.Option(help="reverse_kl, forward_kl, jsd, alpha:0.5, jeffrey.")] = "reverse_kl",
    strategy: Annotated[str, typer.Option(help="greedy, sample or beam.")] = "greedy",
    max_new_tokens: Annotated[int, typer.Option()] = 64,
    temperature: Annotated[float, typer.Option()] = 1.0,
    top_k: Annotated[int | None, typer.Option()] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    num_beams: Annotated[int, typer.Option()] = 4,
    stop: Annotated[list[str], typer.Option(help="Stop string (repeatable).")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option()] = 0,
    stream: Annotated[bool, typer.Option(help="Print tokens as they come (one prompt, greedy/sample).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per response.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16.")] = None,
) -> None:
    """Decode with MOD: combine experts' next-token distributions with the given weights."""
    from pydantic import ValidationError

    from polyalign.policies import MOD

    prompts = prompts_from(prompt, prompt_file)
    experts = build_experts(model, persona, adapter, expert_model)
    if not weights:
        raise ConfigError(f"--weights is required: {len(experts)} numbers, one per expert in the order "
                          f"{[e.label for e in experts]}")
    w = parse_weights(weights)
    try:
        config = GenerationConfig(max_new_tokens=max_new_tokens, strategy=strategy, temperature=temperature,
                                  top_k=top_k, top_p=top_p, num_beams=num_beams, stop=stop, seed=seed)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}") from None
    ref = None if reference == "none" else Expert(reference or model, system_prompt=reference_system)
    policy = MOD(experts, ref, divergence=divergence, device=device, dtype=dtype)
    if stream:
        if len(prompts) != 1:
            raise ConfigError("--stream prints one prompt's tokens: give a single prompt")
        for event in policy.stream(prompts, w, config):
            print(event.text, end="", flush=True)
        print()
        return
    for gen in policy.generate(prompts, w, config=config):
        print(json.dumps(asdict(gen)) if json_out else gen.text)
