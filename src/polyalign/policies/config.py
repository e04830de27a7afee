"""One typed way to describe a policy: a pydantic discriminated union on ``kind``, each with ``.build()``.

The same mapping (or YAML file) describes a method in ``polyalign evaluate``, ``polyalign generate --policy``
and later in ``serve`` and ``train``::

    kind: mod
    personas: {concise: "Answer in one short sentence.", warm: "Write long, warm answers!"}
    divergence: jsd

Plugins add kinds with :func:`register_policy` (a config class with a ``kind`` literal and a ``build`` method).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from polyalign.errors import ConfigError, ObjectiveError, PolyalignError
from polyalign.interface import SteerablePolicy, config_error
from polyalign.models import DEFAULT_MODEL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpertConfig(_Strict):
    """One role: a model, optionally with a LoRA adapter and a system prompt. A plain string names the model.
    ``checkpoint``: a trained single-objective expert (a LoRA ``polyalign train`` checkpoint or run folder of kind
    morlhf/experts) as the adapter on its base model (``model`` then names another location of that base)."""

    model: str | None = None
    adapter: str | None = None
    checkpoint: str | None = None
    system_prompt: str | None = None
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"model": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_adapter(self) -> ExpertConfig:
        if self.checkpoint is not None and self.adapter is not None:
            raise ValueError("give an adapter or a checkpoint, not both")
        return self

    @property
    def trained(self) -> dict[str, Any] | None:
        """The checkpoint's ``policy.json`` (None without a checkpoint); refuses what cannot be an expert."""
        if self.checkpoint is None:
            return None
        from polyalign.checkpoint import read_meta, resolve

        folder = resolve(self.checkpoint)
        meta = read_meta(folder)
        if meta.get("kind") != "morlhf" or len(meta.get("points", [])) != 1:
            raise ConfigError(f"checkpoint {str(folder)!r} holds a {meta.get('kind')!r} policy; an expert is a "
                              "fixed-weighting checkpoint (policy.kind morlhf or experts); for a "
                              f"{meta.get('kind')} policy use kind: {meta.get('kind')}")
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(f"checkpoint {str(folder)!r} is not a LoRA expert (selector {meta.get('selector')}); "
                              "export it as a model first: polyalign.load(path).export_expert(0, folder)")
        return meta | {"folder": str(folder)}

    @property
    def objective(self) -> str | None:
        """The objective a trained expert steers: the one its weighting e_i puts its weight on."""
        meta = self.trained
        if meta is None:
            return self.name
        w = meta["points"][0][0]
        hot = [i for i, x in enumerate(w) if x != 0.0]
        return self.name or (meta["objectives"][hot[0]] if len(hot) == 1 else None)

    def build(self):
        from polyalign.experts import Expert

        meta = self.trained
        if meta is None:
            return Expert(self.model or DEFAULT_MODEL, self.adapter, self.system_prompt, self.name)
        return Expert(self.model or meta["base_model"], meta["folder"], self.system_prompt, self.objective)


class PolicyConfig(_Strict):
    """Fields every model-backed policy takes."""

    kind: str
    device: str | None = None
    dtype: str | None = None
    chat: bool = Field(True, description="Format prompts with the chat template when the tokenizer has one.")
    single_point: ClassVar[bool] = False

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        """The policy; ``objectives`` names what it steers when the config does not (e.g. unnamed experts)."""
        raise NotImplementedError

    def check_checkpoints(self) -> None:
        """Refuse now, reading only ``policy.json`` files, trained checkpoints that are missing or of the wrong kind."""
        getattr(self, "expert_names", None)
        for field in ("aligned", "reference"):
            role = getattr(self, field, None)
            if isinstance(role, ExpertConfig):
                role.trained  # noqa: B018 - reads and checks the checkpoint's policy.json

    @property
    def _placement(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "chat": self.chat}


class ModConfig(PolicyConfig):
    """MOD over ``experts`` (expert i steers objective i) or one ``model`` with ``personas`` (keys name the
    objectives). The reference defaults to ``model`` with ``reference_system_prompt`` for personas, and to none
    for experts (fine for reverse KL with weights summing to 1); ``reference: none`` drops it."""

    kind: Literal["mod"]
    experts: list[ExpertConfig] | None = None
    personas: dict[str, str] | None = None
    model: str = DEFAULT_MODEL
    reference: ExpertConfig | Literal["none"] | None = None
    reference_system_prompt: str | None = None
    divergence: str = "reverse_kl"
    allow_divergence_mismatch: bool = Field(False, description="Decode f-DPO experts trained under another "
                                                               "divergence anyway (MOD's optimality is then lost).")

    @model_validator(mode="after")
    def _one_source(self) -> ModConfig:
        if (self.experts is None) == (self.personas is None):
            raise ValueError("give either experts or personas")
        if self.experts is not None and not self.experts or self.personas is not None and not self.personas:
            raise ValueError("give at least one expert")
        return self

    @property
    def expert_names(self) -> list[str | None]:
        return list(self.personas) if self.personas is not None else [e.objective for e in self.experts or []]

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.experts import Expert
        from polyalign.policies.mod import MOD

        if self.personas is not None:
            experts = [Expert(self.model, system_prompt=p, name=n) for n, p in self.personas.items()]
            default_ref = Expert(self.model, system_prompt=self.reference_system_prompt, name="reference")
        else:
            experts = [e.build() for e in self.experts or []]
            default_ref = None
        reference = None if self.reference == "none" else self.reference.build() if self.reference else default_ref
        names = self.expert_names
        if any(n is None for n in names):
            names = objectives if objectives is not None and len(objectives) == len(experts) else None
        return MOD(experts, reference, self.divergence, names,
                   allow_divergence_mismatch=self.allow_divergence_mismatch, **self._placement)


class DeraConfig(PolicyConfig):
    """DeRa: ``aligned`` realigned toward ``reference`` by lambda (the weight) or alpha (with ``trained_alpha``; a
    trained expert's ``checkpoint`` knows its own). Evaluated over several objectives, only alpha steers it."""

    kind: Literal["dera"]
    aligned: ExpertConfig
    reference: ExpertConfig = Field(default_factory=ExpertConfig)
    objective: str | None = None
    trained_alpha: float | None = Field(None, gt=0.0, lt=1.0)

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.policies.dera import DeRa

        name = self.objective or (objectives[0] if objectives and len(objectives) == 1 else "aligned")
        trained = self.aligned.trained  # a trained expert knows its alpha
        trained_alpha = self.trained_alpha if trained is None or self.trained_alpha is not None \
            else trained["points"][0][1]
        if self.aligned.checkpoint is not None and "reference" not in self.model_fields_set:
            reference = ExpertConfig(model=self.aligned.model or trained["base_model"], name="reference")
        else:
            reference = self.reference
        if self.objective is None and objectives and len(objectives) > 1:  # steered by alpha only
            from polyalign.policies.dera import DeRaOverObjectives

            return DeRaOverObjectives(self.aligned.build(), reference.build(), objectives, trained_alpha,
                                      **self._placement)
        return DeRa(self.aligned.build(), reference.build(), name, trained_alpha, **self._placement)


class PlainConfig(PolicyConfig):
    """A plain model (optionally an adapter or a system prompt): one point on a chart. ``model`` is the
    kind's older name."""

    kind: Literal["plain", "model"]
    model: str = DEFAULT_MODEL
    adapter: str | None = None
    system_prompt: str | None = None
    reference: ExpertConfig | None = None
    single_point: ClassVar[bool] = True

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.experts import Expert
        from polyalign.policies.plain import Plain

        model = Expert(self.model, self.adapter, self.system_prompt, name="model")
        reference = self.reference.build() if self.reference else None
        return Plain(model, reference, objectives or ["model"], **self._placement)


class ClpConfig(PolicyConfig):
    """CLP (conditioned language policy): a trained ``checkpoint`` (a run's ``checkpoints/step-N`` or any folder
    ``polyalign.load`` reads; a run folder means its newest checkpoint), or an untrained one on ``model`` (every
    copy at the reference: the same as the model, for baselines and tests)."""

    kind: Literal["clp"]
    checkpoint: str | None = None
    model: str | None = Field(None, description="Base model: the untrained policy's, or the checkpoint's base "
                                                "at another location.")
    objectives: list[str] | None = None
    selector: str = "lora"
    f_mix: Literal["softmdp", "linear"] = "softmdp"
    alpha_min: float = Field(0.01, gt=0.0, lt=1.0)
    prompt_conditioning: bool = False

    @property
    def expert_names(self) -> list[str | None] | None:
        if self.checkpoint is None:
            return self.objectives
        from polyalign.checkpoint import read_meta

        return list(read_meta(_checkpoint_of(self.checkpoint, "clp"))["objectives"])

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.checkpoint import load
        from polyalign.policies.clp import CLP

        if self.checkpoint is not None:
            return load(_checkpoint_of(self.checkpoint, "clp"), model=self.model, **self._placement)
        names = self.objectives or objectives
        if not names:
            raise ConfigError("an untrained clp policy needs its objectives (objectives: [...])")
        return CLP.create(names, self.model or DEFAULT_MODEL, self.selector, self.f_mix, self.alpha_min,
                          prompt_conditioning=self.prompt_conditioning, **self._placement)


def _checkpoint_of(path: str, kind: str):
    """The resolved checkpoint folder, refused unless it holds a ``kind`` policy (naming the kind it does hold)."""
    from polyalign.checkpoint import read_meta, resolve

    folder = resolve(path)
    found = read_meta(folder).get("kind")
    if found != kind:
        hint = "soup (kind: soup, experts: [...]) or morlhf" if found == "morlhf" else found
        raise ConfigError(f"checkpoint {str(folder)!r} holds a {found!r} policy, not a {kind!r} one: describe it "
                          f"as kind: {hint}")
    return folder


class PromptedConfig(PolicyConfig):
    """Prompting (CLP Appendix A.2): a ``checkpoint`` trained with ``policy.kind: prompted``."""

    kind: Literal["prompted"]
    checkpoint: str
    model: str | None = Field(None, description="The checkpoint's base model at another location.")

    @property
    def expert_names(self) -> list[str]:
        from polyalign.checkpoint import read_meta

        return list(read_meta(_checkpoint_of(self.checkpoint, "prompted"))["objectives"])

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.checkpoint import load

        return load(_checkpoint_of(self.checkpoint, "prompted"), model=self.model, **self._placement)


class SoupConfig(PolicyConfig):
    """Rewarded Soups over trained single-objective ``experts``: checkpoints, run folders, or an experts run
    (``policy.kind: experts``) whose experts it takes all."""

    kind: Literal["soup"]
    experts: list[str] = Field(min_length=1)
    model: str | None = Field(None, description="The experts' base model at another location.")

    @property
    def expert_names(self) -> list[str]:
        from polyalign.policies.morlhf import objectives_of

        return objectives_of(self.experts)

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.policies.soup import Soup

        return Soup.from_experts(self.experts, model=self.model, **self._placement)


class MorlhfConfig(PolicyConfig):
    """MORLHF: models trained at fixed weightings (``checkpoints``: checkpoints or run folders, or an experts run);
    evaluated at their own weightings only, a front of discrete points."""

    kind: Literal["morlhf"]
    checkpoints: list[str] = Field(min_length=1)
    model: str | None = Field(None, description="The checkpoints' base model at another location.")

    @property
    def expert_names(self) -> list[str]:
        from polyalign.policies.morlhf import objectives_of

        return objectives_of(self.checkpoints)

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.policies.morlhf import MORLHF

        return MORLHF.assemble(self.checkpoints, model=self.model, **self._placement)


class PythonConfig(_Strict):
    """``factory: "package.module:function"`` called with ``args``; it must return a SteerablePolicy."""

    kind: Literal["python"]
    factory: str
    args: dict[str, Any] = Field(default_factory=dict)
    single_point: bool = False

    def build(self, objectives: list[str] | None = None) -> SteerablePolicy:
        from polyalign.objectives.python import import_callable

        try:
            fn = import_callable(self.factory, "policy factory")
        except ObjectiveError as exc:
            raise ConfigError(str(exc)) from None
        try:
            policy = fn(**self.args)
        except PolyalignError:
            raise
        except Exception as exc:  # the user's code: one line naming it, their exception kept as the cause
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise ConfigError(f"policy factory {self.factory} raised {type(exc).__name__}: {message}") from exc
        if not hasattr(policy, "objectives") or not callable(getattr(policy, "generate", None)):
            raise ConfigError(f"{self.factory} returned {type(policy).__name__}, not a SteerablePolicy (it needs "
                              ".objectives and .generate)")
        return policy


_KINDS: dict[str, type[BaseModel]] = {}


def register_policy(config: type[BaseModel]) -> type[BaseModel]:
    """Make a policy config class usable wherever policies are described; its ``kind`` literal names it."""
    kinds = config.model_fields["kind"].annotation.__args__
    for kind in kinds:
        if kind in _KINDS and _KINDS[kind] is not config:
            raise ConfigError(f"policy kind {kind!r} is already registered; choose another name")
        _KINDS[kind] = config
    return config


for _config in (ModConfig, DeraConfig, PlainConfig, ClpConfig, PromptedConfig, SoupConfig, MorlhfConfig,
                PythonConfig):
    register_policy(_config)


def policy_kinds() -> list[str]:
    return sorted(_KINDS)


def parse_policy(data: Any, source: str = "policy") -> PolicyConfig | PythonConfig:
    """A typed policy config from a mapping; errors name the kind's fields and the known kinds."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ConfigError(f"{source}: a policy is a mapping with a 'kind' ({', '.join(policy_kinds())})")
    if data["kind"] not in _KINDS:
        raise ConfigError(f"{source}: unknown policy kind {data['kind']!r}; known kinds: {', '.join(policy_kinds())}")
    classes = tuple(dict.fromkeys(_KINDS.values()))
    union = classes[0] if len(classes) == 1 else Annotated[Union[classes], Field(discriminator="kind")]  # noqa: UP007
    try:
        return TypeAdapter(union).validate_python(data)
    except ValidationError as exc:
        fields = _KINDS[data["kind"]].model_fields
        unknown = [str(e["loc"][-1]) for e in exc.errors() if e["type"] == "extra_forbidden" and len(e["loc"]) == 2]
        if unknown:
            raise ConfigError(f"{source} ({data['kind']}) does not take {unknown}; it takes "
                              f"{[f for f in fields if f != 'kind']}") from None
        raise config_error(exc, f"{source}: ") from None


def load_policy(path: str | Path) -> PolicyConfig | PythonConfig:
    """A policy config from a YAML file."""
    from polyalign.files import read_yaml

    return parse_policy(read_yaml(Path(path), "policy file"), str(path))
