"""``polyalign generate``: decode with any policy, described by a YAML file or by experts on the command line.

The decoding options are made from :class:`~polyalign.interface.GenerationConfig`'s fields (name, type, help),
so every field is an option and none is copied by hand.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from polyalign.errors import ConfigError
from polyalign.interface import GenerationConfig, check_prompts, read_prompts
from polyalign.models import DEFAULT_MODEL
from polyalign.weights import parse_weights


def parse_pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` pairs from a repeatable option, with a clear error for anything else."""
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise ConfigError(f"{option} expects NAME=VALUE, got {value!r}")
        pairs.append((name.strip(), rest))
    return pairs


def prompts_from(prompt: str | None, prompt_file: Path | None) -> list[str]:
    """Prompts from the argument, a file (:func:`polyalign.interface.read_prompts`) or stdin ("-")."""
    if prompt is not None and prompt_file is not None:
        raise ConfigError("give a prompt or --prompt-file, not both")
    if prompt_file is not None:
        return read_prompts(prompt_file)
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError("no prompt: give one as an argument, with --prompt-file, or on stdin")
        try:
            return [sys.stdin.read()]
        except UnicodeDecodeError:
            raise ConfigError("stdin is not UTF-8 text: pipe a UTF-8 prompt") from None
    return [prompt]


def policy_from_options(model: str, personas: list[str], adapters: list[str], expert_models: list[str],
                        reference: str | None, reference_system: str | None, divergence: str) -> dict:
    """The ``kind: mod`` policy mapping that the expert options describe."""
    experts = [{"model": model, "system_prompt": p, "name": n} for n, p in parse_pairs(personas, "--persona")]
    experts += [{"model": model, "adapter": a, "name": n} for n, a in parse_pairs(adapters, "--adapter")]
    experts += [{"model": m, "name": n} for n, m in parse_pairs(expert_models, "--expert-model")]
    if not experts:
        raise ConfigError("no experts: give --policy FILE, --persona NAME=PROMPT, --adapter NAME=PATH or "
                          "--expert-model NAME=MODEL")
    ref: Any = "none" if reference == "none" else {"model": reference or model, "system_prompt": reference_system}
    return {"kind": "mod", "experts": experts, "reference": ref, "divergence": divergence}


def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; '-' or nothing reads stdin.")] = None,
    prompt_file: Annotated[Path | None, typer.Option(help="One prompt per line, JSONL with 'prompt', or a JSON list.")
                           ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (kind: mod, dera, plain, python; the evaluation "
                                                     "config's method syntax).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Base model of persona and adapter experts.")] = (
        DEFAULT_MODEL
    ),
    persona: Annotated[list[str], typer.Option(help="Persona expert NAME='system prompt' (repeatable).")] = [],  # noqa: B006
    adapter: Annotated[list[str], typer.Option(help="LoRA expert NAME=PATH on --model (repeatable).")] = [],  # noqa: B006
    expert_model: Annotated[list[str], typer.Option(help="Checkpoint expert NAME=MODEL (repeatable).")] = [],  # noqa: B006
    reference: Annotated[str | None, typer.Option(help="Reference model; default --model; 'none' to omit.")] = None,
    reference_system: Annotated[str | None, typer.Option(help="System prompt of the reference.")] = None,
    divergence: Annotated[str, typer.Option(help="reverse_kl, forward_kl, jsd, alpha:0.5, jeffrey.")] = "reverse_kl",
    allow_divergence_mismatch: Annotated[bool, typer.Option(
        "--allow-divergence-mismatch", help="Decode f-DPO experts trained under another divergence anyway.")] = False,
    weights: Annotated[str, typer.Option("--weights", "-w", help="One weight per objective, e.g. 0.5,0.5.")] = "",
    alpha: Annotated[float | None, typer.Option(help="KL strength in [0, 1], for policies that take one.")] = None,
    stream: Annotated[bool, typer.Option(help="Print tokens as they come (one prompt, greedy/sample).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per response (with --stream: "
                                                          "one per token event).")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16.")] = None,
    **options: Any,
) -> None:
    """Decode with a policy: MOD over the experts given here, or any policy described in --policy YAML."""
    # Everything that needs no model is checked before the models load (or transformers is imported: a second).
    config = _generation_config(options)
    prompts = check_prompts(prompts_from(prompt, prompt_file))
    w = parse_weights(weights) if weights else None
    if stream:
        _check_stream(prompts, config, json_out)
    from polyalign.policies.config import load_policy, parse_policy

    if policy is not None:
        if persona or adapter or expert_model:
            raise ConfigError("give --policy or expert options (--persona, --adapter, --expert-model), not both")
        described = load_policy(policy)
    else:
        described = parse_policy(policy_from_options(model, persona, adapter, expert_model, reference,
                                                     reference_system, divergence), "options")
    settings = (("device", device), ("dtype", dtype)) + \
        ((("allow_divergence_mismatch", True),) if allow_divergence_mismatch else ())
    for field, value in settings:
        if value is not None and field in type(described).model_fields:
            described = described.model_copy(update={field: value})
    steered = described.build()
    if w is None:
        raise ConfigError(f"--weights is required: {len(steered.objectives)} numbers, one per objective in the order "
                          f"{steered.objectives}")
    if stream:
        for event in steered.stream(prompts, w, alpha=alpha, config=config):
            if json_out:
                print(json.dumps(asdict(event)), flush=True)
            else:
                print(event.text, end="", flush=True)
        if not json_out:
            print()
        return
    for gen in steered.generate(prompts, w, alpha=alpha, config=config):
        print(json.dumps({**asdict(gen), "usage": asdict(gen.usage)}) if json_out else gen.text)


def _check_stream(prompts: list[str], config: GenerationConfig, json_out: bool) -> None:
    """Plain-text streaming prints one response: several would interleave their tokens into one garbled line."""
    if len(prompts) != 1:
        raise ConfigError("--stream prints one prompt's tokens: give a single prompt")
    if config.n > 1 and not json_out:
        raise ConfigError(f"--stream with --n {config.n} would interleave {config.n} responses in one text; add "
                          "--json (one object per token event, with the response's index) or drop --stream")


def _generation_config(options: dict) -> GenerationConfig:
    try:
        return GenerationConfig.model_validate(options)  # pydantic's errors, to name the option that is wrong
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "options"
        raise ConfigError(f"--{field.replace('_', '-')}: {first['msg']}") from None


def _cli_type(annotation: Any) -> Any:
    """A type typer can parse for a GenerationConfig field (Literal -> str; pydantic validates the value)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _cli_type(inner[0]) | None
    return annotation


def _with_config_options(fn):
    """Give ``fn`` (which takes ``**options``) one keyword option per :class:`GenerationConfig` field."""
    signature = inspect.signature(fn)
    annotations = {k: v for k, v in typing.get_type_hints(fn, include_extras=True).items() if k != "options"}
    params = [p.replace(annotation=annotations[p.name]) for p in signature.parameters.values()
              if p.kind is not p.VAR_KEYWORD]
    for name, field in GenerationConfig.model_fields.items():
        flag = f"--{name.replace('_', '-')}"
        annotation = Annotated[_cli_type(field.annotation), typer.Option(flag, help=field.description,
                                                                         rich_help_panel="Decoding")]
        default = field.get_default(call_default_factory=True)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
        annotations[name] = annotation

    def wrapper(**kwargs):
        options = {name: kwargs.pop(name) for name in GenerationConfig.model_fields}
        return fn(**kwargs, **options)

    wrapper.__name__, wrapper.__doc__, wrapper.__module__ = fn.__name__, fn.__doc__, fn.__module__
    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = annotations
    return wrapper


generate = _with_config_options(generate)
