"""CLP's conditioning (Wang et al. 2024, "Conditioned Language Policy"): one model whose conditioned parameters
theta_S are a weighted mix of m per-objective copies and the frozen reference. Written by hand because no library
does it: peft's weighted adapter merge averages A and B separately (cross terms), and nothing mixes full parameter
copies per request. See DESIGN.md, "CLP".

    theta_S(alpha, w) = (1 - beta) * sum_i w_i theta_S^(i) + beta * theta_ref[S],   beta = f_mix(alpha)   (Eq. 3)

Contents, each exact:

* ``f_mix`` (Eq. 4, or linear), its inverse (Appendix A.4) and :func:`mix_coefficients` -> ``((1-beta) w, beta)``;
* the samplers of Algorithm 1: ``w ~ Dirichlet(c)`` and ``alpha = f_mix^-1(U)``;
* selectors naming the subset S (``full``, ``attn``, ``logit``, ``layers:0-11``, ``attn:0-11``, ``regex:...``,
  ``lora[:targets]``);
* :class:`ConditionedModel`: m trainable copies of theta_S and a frozen theta_ref[S], run either with one
  weighting for the batch (mixed parameters, cached per weighting at inference; gradients reach copy i scaled by
  c_i, Appendix A.3) or with one weighting per row (mixed outputs: every module holding S is affine in its
  parameters, so mixing its outputs with coefficients summing to one equals running it with the mixed parameters);
* :class:`LoRAConditionedModel`: m LoRA adapters on a frozen base, ``W x + sum_i c_i s B_i A_i x`` with c per row.

Alpha lies in ``[alpha_min, 1]`` for both f_mix kinds; omitting it means ``alpha_min`` (softmdp: beta = 0, the
copies alone; linear: beta = alpha_min).
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from polyalign.errors import ConfigError, PolyalignError, WeightsError
from polyalign.weights import SIMPLEX, WeightsLike, check_weights

F_MIX = ("softmdp", "linear")
AlphaLike = float | Tensor | None

# ---------------------------------------------------------------------------------------------------------------
# f_mix (Eq. 4) and the coefficients of Eq. 3
# ---------------------------------------------------------------------------------------------------------------


def check_f_mix(f_mix: str, alpha_min: float) -> None:
    """Validate the mixing schedule: ``f_mix`` in :data:`F_MIX` and ``alpha_min`` in (0, 1)."""
    if f_mix not in F_MIX:
        raise ConfigError(f"unknown f_mix {f_mix!r}: choose 'softmdp' (CLP Eq. 4) or 'linear' (beta = alpha)")
    if isinstance(alpha_min, bool) or not isinstance(alpha_min, (int, float)) or not 0 < alpha_min < 1:
        raise ConfigError(f"alpha_min must be a number in (0, 1) (the smallest KL strength), got {alpha_min!r}")


def check_alpha(alpha: float | Tensor, alpha_min: float) -> Tensor:
    """``alpha`` as float64, refused unless every value lies in ``[alpha_min, 1]``."""
    try:
        a = torch.as_tensor(alpha, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise WeightsError(f"alpha must be a number in [alpha_min, 1], got {alpha!r}") from None
    if not bool(((a >= alpha_min) & (a <= 1)).all()):  # NaN fails both comparisons
        raise WeightsError(f"alpha (the KL strength) must lie in [alpha_min, 1] = [{alpha_min:g}, 1], got "
                           f"{a.tolist()}; omit it for the least regularised policy")
    return a


def f_mix(alpha: float | Tensor, kind: str, alpha_min: float) -> Tensor:
    """beta = f_mix(alpha): softmdp ``(alpha - alpha_min) / (alpha (1 - alpha_min))`` (CLP Eq. 4), linear ``alpha``."""
    check_f_mix(kind, alpha_min)
    a = check_alpha(alpha, alpha_min)
    if kind == "linear":
        return a.clone()
    return ((a - alpha_min) / (a * (1 - alpha_min))).clamp(0.0, 1.0)  # in [0, 1]; the clamp only meets rounding


def f_mix_inverse(beta: float | Tensor, kind: str, alpha_min: float) -> Tensor:
    """alpha = f_mix^-1(beta): softmdp ``alpha_min / (alpha_min beta + 1 - beta)`` (Appendix A.4), linear ``beta``."""
    check_f_mix(kind, alpha_min)
    b = torch.as_tensor(beta, dtype=torch.float64)
    low = _beta_min(kind, alpha_min)
    if not bool(((b >= low) & (b <= 1)).all()):
        raise WeightsError(f"f_mix^-1 ({kind}) takes beta in [{low:g}, 1], got {b.tolist()}")
    if kind == "linear":
        return b.clone()
    return (alpha_min / (alpha_min * b + (1 - b))).clamp(alpha_min, 1.0)  # exact at beta = 0 and 1


def _beta_min(kind: str, alpha_min: float) -> float:
    """f_mix(alpha_min): the smallest beta (0 for softmdp, alpha_min for linear)."""
    return 0.0 if kind == "softmdp" else float(alpha_min)


_f_mix = f_mix  # parameters below are named f_mix, as in the paper


def mix_coefficients(weights: WeightsLike, alpha: AlphaLike, f_mix: str, alpha_min: float,
                     objectives: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """Eq. 3's coefficients ``(copy_coeffs, ref_coeff) = ((1 - beta) w, beta)``, beta = f_mix(alpha).

    ``weights``: ``[m]`` or ``[B, m]`` on the simplex; ``alpha``: None (= alpha_min), a number, or ``[B]``.
    Returns float64 ``[m]``, ``[]`` for one weighting, ``[B, m]``, ``[B]`` per row.
    """
    w, batched = _simplex_weights(weights, objectives)
    try:
        a = torch.tensor(float(alpha_min), dtype=torch.float64) if alpha is None else torch.as_tensor(
            alpha, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise WeightsError(f"alpha must be a number in [alpha_min, 1], one or one per row, got {alpha!r}") from None
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, w.shape[0])):
        raise WeightsError(f"alpha must be one number or one per row ({w.shape[0]}), got shape {tuple(a.shape)}")
    beta = _f_mix(a, f_mix, alpha_min).expand(w.shape[0])
    copy, ref = (1 - beta)[:, None] * w, beta.clone()
    return (copy, ref) if batched else (copy[0], ref[0])


def _simplex_weights(weights: WeightsLike, objectives: Sequence[str] | None) -> tuple[Tensor, bool]:
    """Weights as float64 ``[B, m]`` checked on the simplex, and whether they came one per row."""
    try:
        raw = torch.as_tensor(weights, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"weights must be numbers on the simplex, one per objective: {exc}") from None
    if raw.ndim not in (1, 2):
        raise WeightsError(f"weights must be one vector [m] or one per row [B, m], got shape {tuple(raw.shape)}")
    names = list(objectives) if objectives is not None else [f"objective {i}" for i in range(raw.shape[-1])]
    rows = raw.shape[0] if raw.ndim == 2 else 1
    return check_weights(raw, rows, names, domain=SIMPLEX), raw.ndim == 2


# ---------------------------------------------------------------------------------------------------------------
# Samplers of Algorithm 1
# ---------------------------------------------------------------------------------------------------------------


def sample_weights(m: int, generator: torch.Generator, concentration: float | Sequence[float] = 1.0) -> Tensor:
    """w ~ Dirichlet(c) (Algorithm 1), float64 ``[m]``, drawn from ``generator`` alone (reproducible, resumable)."""
    c = _concentration(m, concentration)
    return torch.softmax(_log_standard_gamma(c, generator), dim=0)  # normalised gammas, in log space


def _concentration(m: int, concentration: float | Sequence[float]) -> Tensor:
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ConfigError(f"the number of objectives must be a positive integer, got {m!r}")
    c = torch.as_tensor(concentration, dtype=torch.float64)
    c = c.expand(m).clone() if c.ndim == 0 else c
    if c.shape != (m,) or not bool((torch.isfinite(c) & (c > 0)).all()):
        raise ConfigError(f"the Dirichlet concentration must be one positive number or {m} of them, "
                          f"got {c.tolist()}")
    return c


def _log_standard_gamma(shape: Tensor, generator: torch.Generator) -> Tensor:
    """log Gamma(shape, 1) draws by Marsaglia & Tsang (2000); shape < 1 boosted as G(a) = G(a+1) U^(1/a)."""
    boosted = shape < 1
    a = torch.where(boosted, shape + 1, shape)
    d = a - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(a.shape, generator=generator, dtype=torch.float64)
        u = torch.rand(a.shape, generator=generator, dtype=torch.float64)
        v = (1 + c * x) ** 3
        accept = todo & (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v))
        out = torch.where(accept, torch.log(d) + torch.log(v), out)
        todo = todo & ~accept
    u = torch.rand(a.shape, generator=generator, dtype=torch.float64)
    return torch.where(boosted, out + torch.log(u) / shape, out)


def sample_alpha(generator: torch.Generator, f_mix: str, alpha_min: float) -> float:
    """alpha = f_mix^-1(U), U ~ Unif[f_mix(alpha_min), 1] (Algorithm 1, Appendix A.4): beta is uniform.

    For softmdp the range of U is [0, 1], as in the paper.
    """
    check_f_mix(f_mix, alpha_min)
    low = _beta_min(f_mix, alpha_min)
    u = low + (1 - low) * torch.rand((), generator=generator, dtype=torch.float64)
    return float(f_mix_inverse(u, f_mix, alpha_min))


# ---------------------------------------------------------------------------------------------------------------
# Selectors: which parameters S are conditioned
# ---------------------------------------------------------------------------------------------------------------

SELECTOR_HELP = ("full | attn | logit | layers:A-B | attn:A-B | regex:PATTERN | lora | lora:<selector> "
                 "(layer ranges are inclusive, e.g. attn:0-11 for the first 12 attention layers)")
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_ATTN_MODULE = re.compile(r"^(self_attn|attn|attention|self_attention|selfattention|encdecattention|cross_attn|"
                          r"crossattention)$", re.IGNORECASE)


@dataclass(frozen=True)
class Selector:
    """A parsed selector: ``kind`` in full/attn/logit/layers/regex/lora; ``layers`` an inclusive range; ``pattern``
    a regex; ``targets`` the selector whose Linear weights get LoRA adapters."""

    text: str
    kind: str
    layers: tuple[int, int] | None = None
    pattern: re.Pattern[str] | None = None
    targets: Selector | None = None


def parse_selector(text: str) -> Selector:
    """Parse a selector string (see :data:`SELECTOR_HELP`), with an error saying what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a selector must be a non-empty string: {SELECTOR_HELP}; got {text!r}")
    text = text.strip()
    head, sep, rest = text.partition(":")
    if head in ("full", "attn", "logit") and not sep:
        return Selector(text, head)
    if head == "lora":
        return Selector(text, "lora", targets=parse_selector(rest if sep else "attn"))
    if head == "regex" and sep:
        try:
            return Selector(text, "regex", pattern=re.compile(rest))
        except (re.error, OverflowError, RecursionError) as exc:  # huge repeat counts overflow, not re.error
            raise ConfigError(f"selector {text!r}: invalid regular expression ({exc})") from None
    if head in ("layers", "attn") and sep:
        return Selector(text, head, layers=_parse_range(text, rest))
    raise ConfigError(f"unknown selector {text!r}: use {SELECTOR_HELP}")


def _parse_range(text: str, rest: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", rest.strip())
    if match is None:
        raise ConfigError(f"selector {text!r}: the layer range must read A-B or N (inclusive, from 0), "
                          f"e.g. attn:0-11")
    lo, hi = int(match[1]), int(match[2] or match[1])
    if hi < lo:
        raise ConfigError(f"selector {text!r}: the range ends ({hi}) before it starts ({lo})")
    return lo, hi


def select_parameters(model: nn.Module, selector: str | Selector) -> list[str]:
    """Names (``named_parameters(remove_duplicate=False)`` order, tied aliases listed apart) chosen by ``selector``.

    For ``lora[:targets]``: the weights of the ``nn.Linear`` modules among the targets.
    """
    sel = parse_selector(selector) if isinstance(selector, str) else selector
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    chosen = _choose(model, sel, names)
    if not chosen:
        raise ConfigError(f"selector {sel.text!r} matches no parameter of this {type(model).__name__}; its "
                          f"parameters are named like {', '.join(names[:3])}, ... ({len(names)} in all)")
    return chosen


def _choose(model: nn.Module, sel: Selector, names: list[str]) -> list[str]:
    if sel.kind == "lora":
        assert sel.targets is not None
        return [n for n in _choose(model, sel.targets, names) if _is_linear_weight(model, n)]
    if sel.kind == "full":
        return names
    if sel.kind == "logit":
        return _logit_names(model, names)
    if sel.kind == "regex":
        assert sel.pattern is not None
        return [n for n in names if sel.pattern.search(n)]
    chosen = [n for n in names if _in_attention(n)] if sel.kind == "attn" else names
    return chosen if sel.layers is None else _in_layers(sel, chosen, names)


def _in_attention(name: str) -> bool:
    return any(_ATTN_MODULE.match(part) for part in name.split(".")[:-1])


def _in_layers(sel: Selector, chosen: list[str], names: list[str]) -> list[str]:
    assert sel.layers is not None
    indices = {int(m[1]) for n in names if (m := _LAYER.search(n))}
    if not indices:
        raise ConfigError(f"selector {sel.text!r}: this model has no numbered layers (names like "
                          f"model.layers.0.self_attn.q_proj.weight); use full, attn, logit or regex:...")
    lo, hi = sel.layers
    if hi > max(indices):
        raise ConfigError(f"selector {sel.text!r}: the model's layers are numbered 0-{max(indices)}, "
                          f"so the range cannot end at {hi}")
    return [n for n in chosen if (m := _LAYER.search(n)) and lo <= int(m[1]) <= hi]


def _logit_names(model: nn.Module, names: list[str]) -> list[str]:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        raise ConfigError(f"selector 'logit': this {type(model).__name__} has no output embedding (lm_head)")
    prefixes = [n for n, mod in model.named_modules(remove_duplicate=False) if mod is head]
    return [n for n in names if n.rpartition(".")[0] in prefixes]


def _owner(model: nn.Module, name: str) -> tuple[str, nn.Module, str]:
    """(module name, module, local parameter name) of a parameter name."""
    module_name, _, local = name.rpartition(".")
    return module_name, model.get_submodule(module_name), local


def _is_linear_weight(model: nn.Module, name: str) -> bool:
    _, module, local = _owner(model, name)
    return isinstance(module, nn.Linear) and local == "weight"


def _is_affine_owner(module: nn.Module) -> bool:
    """Modules whose output is affine in their own parameters: Linear, Embedding, LayerNorm, RMSNorm (any
    model's, e.g. LlamaRMSNorm ``w * x_hat`` or Gemma's ``(1 + w) * x_hat``)."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm)):
        return True
    return type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


# ---------------------------------------------------------------------------------------------------------------
# Per-row output mixing: patch the forward of the modules holding conditioned parameters for one call
# ---------------------------------------------------------------------------------------------------------------

RowForward = Callable[..., Tensor]


_PATCHING = threading.RLock()


@contextmanager
def _patched(modules: dict[str, nn.Module], make: Callable[[str, nn.Module, RowForward], RowForward]
             ) -> Iterator[set[str]]:
    """Replace each module's forward by ``make(name, module, original)`` for the duration; yields the set of
    module names that actually ran (a parent that reads a weight directly bypasses its module's forward).

    The patched forwards carry one call's coefficients, so two threads must never run inside at once: a lock
    holds for the duration (a second thread's forward waits instead of mixing with the first one's weights)."""
    with _PATCHING:
        saved = {name: module.__dict__.get("forward") for name, module in modules.items()}
        called: set[str] = set()
        try:
            for name, module in modules.items():
                module.forward = _recording(name, called, make(name, module, module.forward))
            yield called
        finally:
            for name, module in modules.items():
                if saved[name] is None:
                    del module.forward
                else:
                    module.forward = saved[name]


def _recording(name: str, called: set[str], forward: RowForward) -> RowForward:
    def run(*args, **kwargs):
        called.add(name)
        return forward(*args, **kwargs)
    return run


def _check_all_ran(modules: dict[str, nn.Module], called: set[str]) -> None:
    missed = sorted(set(modules) - called)
    if missed:
        raise PolyalignError(f"per-row mixing could not reach {missed[0]}: its parent uses the weights without "
                             f"calling the module; condition other parameters or use one weighting per batch")


def _row_scale(column: Tensor, like: Tensor) -> Tensor:
    """A per-row coefficient ``[B]`` (or ``[1]``) shaped to broadcast over an output ``[B, ...]``."""
    if column.shape[0] not in (1, like.shape[0]):
        raise WeightsError(f"got {column.shape[0]} weight vectors for a batch of {like.shape[0]} rows; give one, "
                           f"or one per row")
    return column.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _needed(column: Tensor) -> bool:
    """Under no_grad a term whose coefficient is zero in every row is skipped (exact); with grad it is kept so
    every copy gets a (possibly zero) gradient, as DDP expects."""
    return torch.is_grad_enabled() or bool((column != 0).any())


# ---------------------------------------------------------------------------------------------------------------
# Parameter-copy CLP (full / attn / logit / layers / regex)
# ---------------------------------------------------------------------------------------------------------------


class ConditionedModel(nn.Module):
    """CLP with m copies of theta_S (Algorithm 2): ``model`` keeps the shared parameters; ``copies[i][k]`` is copy i
    of ``names[k]``; ``reference_k`` buffers hold the frozen theta_ref[S]; all start equal to the reference
    (Algorithm 1). Conditioning a tied alias (e.g. lm_head tied to the input embedding) unties it.
    """

    def __init__(self, model: nn.Module, selector: str, objectives: Sequence[str], f_mix: str = "softmdp", *,
                 alpha_min: float, per_row: bool = True, cache_size: int = 4) -> None:
        super().__init__()
        check_f_mix(f_mix, alpha_min)
        sel = parse_selector(selector)
        if sel.kind == "lora":
            raise ConfigError(f"selector {selector!r} asks for LoRA copies: use LoRAConditionedModel (or condition())")
        self.model, self.selector, self.f_mix, self.alpha_min = model, sel.text, f_mix, float(alpha_min)
        self.objectives = _check_objectives(objectives)
        self.names = select_parameters(model, sel)
        self.per_row = per_row
        if per_row:
            _refuse_non_affine(model, self.names)
        params = dict(model.named_parameters(remove_duplicate=False))
        for k, name in enumerate(self.names):
            self.register_buffer(f"reference_{k}", params[name].detach().clone())
        self.copies = nn.ModuleList(
            nn.ParameterList(nn.Parameter(self.reference(k).clone()) for k in range(len(self.names)))
            for _ in self.objectives)
        _freeze_replaced(model, self.names)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, dict[str, Tensor]] = OrderedDict()
        self._cache_state: tuple | None = None

    def reference(self, k: int) -> Tensor:
        """theta_ref of ``names[k]`` (frozen)."""
        return self.get_buffer(f"reference_{k}")

    def coefficients(self, weights: WeightsLike, alpha: AlphaLike = None) -> tuple[Tensor, Tensor]:
        """Eq. 3's ``((1 - beta) w, beta)`` for this model's objectives, f_mix and alpha_min."""
        return mix_coefficients(weights, alpha, self.f_mix, self.alpha_min, self.objectives)

    def mixed_parameters(self, weights: WeightsLike, alpha: AlphaLike = None) -> dict[str, Tensor]:
        """theta_S(alpha, w) = sum_i c_i theta_i + c_ref theta_ref (Eq. 3) for one weighting ``[m]``.

        Differentiable: the gradient reaching copy i is c_i times the gradient at the mixed parameters
        (Appendix A.3). Cached per weighting under no_grad; an update of the copies invalidates the cache.
        """
        copy_c, ref_c = self.coefficients(weights, alpha)
        if copy_c.ndim != 1:
            raise WeightsError("mixed_parameters takes one weighting [m]; for one per row use forward_mixed_outputs")
        return self._mixed(torch.cat([copy_c, ref_c.reshape(1)]))

    def _mixed(self, coefficients: Tensor) -> dict[str, Tensor]:
        """Eq. 3 for one row of coefficients ``[m + 1]`` (copies, then the reference); cached under no_grad."""
        copy_c, ref_c = coefficients[:-1], coefficients[-1]
        if torch.is_grad_enabled():
            return self._mix(copy_c, ref_c)
        state = self._state_key()
        if state != self._cache_state:  # the copies changed (a training step): every entry is stale
            self._cache.clear()
            self._cache_state = state
        key = tuple(coefficients.tolist())
        if key not in self._cache:
            self._cache[key] = self._mix(copy_c, ref_c)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def clear_cache(self) -> None:
        """Drop the cached mixed parameters."""
        self._cache.clear()

    def _state_key(self) -> tuple:
        p = self.copies[0][0]
        return (p.device, p.dtype, *(q._version for copy in self.copies for q in copy),
                *(self.reference(k)._version for k in range(len(self.names))))

    def _mix(self, copy_c: Tensor, ref_c: Tensor) -> dict[str, Tensor]:
        sources = [*self.copies, None]
        coefficients = [*copy_c.tolist(), float(ref_c)]
        alone = [j for j, c in enumerate(coefficients) if c != 0.0]
        if len(alone) == 1 and coefficients[alone[0]] == 1.0:  # one copy, or the reference: itself, no new memory
            source = sources[alone[0]]
            return {name: self.reference(k) if source is None else source[k] for k, name in enumerate(self.names)}
        mixed = {}
        for k, name in enumerate(self.names):
            out = self.reference(k) * float(ref_c)
            for i, copy in enumerate(self.copies):
                out = out + copy[k] * float(copy_c[i])
            mixed[name] = out
        return mixed

    def forward_mixed_parameters(self, *args, weights: WeightsLike, alpha: AlphaLike = None, **kwargs):
        """Run the model once with theta_S(alpha, w) for the whole batch (one weighting ``[m]``)."""
        return functional_call(self.model, self.mixed_parameters(weights, alpha), args, kwargs,
                               tie_weights=False, strict=False)

    def forward_mixed_outputs(self, *args, weights: WeightsLike, alpha: AlphaLike = None, **kwargs):
        """Run the model with one weighting per row (``weights [B, m]``, ``alpha`` None, a number or ``[B]``):
        each module holding S outputs ``sum_i c_i[row] f(x; theta_i) + c_ref[row] f(x; theta_ref)``, which equals
        ``f(x; theta_S(row))`` because f is affine in those parameters and the coefficients sum to one."""
        copy_c, ref_c = self.coefficients(weights, alpha)
        coeffs = torch.cat([copy_c.reshape(-1, len(self.objectives)), ref_c.reshape(-1, 1)], dim=1)
        return self.forward_coefficients(*args, coefficients=coeffs, **kwargs)

    def forward_coefficients(self, *args, coefficients: Tensor, **kwargs):
        """Run the model with Eq. 3's coefficients per row ``[B, m + 1]`` (copies, then the reference; each row
        from :meth:`coefficients`). With grad: mixed outputs (differentiable per row). Without: the rows that
        share a weighting run together through each conditioned module with that weighting's cached mixed
        parameters, so a batch costs one pass per module whatever its weightings."""
        if not self.per_row:
            raise ConfigError("this ConditionedModel was built with per_row=False; use forward_mixed_parameters")
        coefficients = _check_coefficients(coefficients, len(self.objectives))
        owners = self._owners()
        modules = {n: mod for n, (mod, _) in owners.items()}
        with _patched(modules, self._row_forward(owners, coefficients)) as called:
            out = self.model(*args, **kwargs)
        _check_all_ran(modules, called)
        return out

    def forward(self, *args, weights: WeightsLike, alpha: AlphaLike = None, **kwargs):
        """One weighting ``[m]``: mixed parameters; one per row ``[B, m]``: mixed outputs."""
        if torch.as_tensor(weights).ndim == 1:
            return self.forward_mixed_parameters(*args, weights=weights, alpha=alpha, **kwargs)
        return self.forward_mixed_outputs(*args, weights=weights, alpha=alpha, **kwargs)

    def _owners(self) -> dict[str, tuple[nn.Module, list[tuple[str, int]]]]:
        """module name -> (module, [(local parameter name, index k in names)])."""
        owners: dict[str, tuple[nn.Module, list[tuple[str, int]]]] = {}
        for k, name in enumerate(self.names):
            module_name, module, local = _owner(self.model, name)
            owners.setdefault(module_name, (module, []))[1].append((local, k))
        return owners

    def _row_forward(self, owners: dict, coeffs: Tensor) -> Callable[[str, nn.Module, RowForward], RowForward]:
        groups = _row_groups(coeffs)
        # Few weightings (always under no_grad): each group runs once with its mixed parameters, mixed once per
        # forward (differentiable with grad: copy i receives c_i * gamma, Appendix A.3). Many distinct rows with
        # grad: mix the m + 1 outputs instead.
        grouped = not torch.is_grad_enabled() or len(groups) <= len(self.copies) + 1
        mixed: dict[int, dict[str, Tensor]] = {}

        def params_of(g: int) -> dict[str, Tensor]:
            if g not in mixed:
                mixed[g] = self._mixed(groups[g][0])
            return mixed[g]

        def make(module_name: str, module: nn.Module, original: RowForward) -> RowForward:
            locals_ = owners[module_name][1]
            sets = [{local: copy[k] for local, k in locals_} for copy in self.copies]
            sets.append({local: self.reference(k) for local, k in locals_})
            inside = [False]

            def forward(*args, **kwargs):
                if inside[0]:  # the call made by functional_call below
                    return original(*args, **kwargs)
                inside[0] = True
                try:
                    if grouped:
                        return _grouped_outputs(module, groups, lambda g: {
                            local: params_of(g)[self.names[k]] for local, k in locals_}, args, kwargs)
                    return _mix_outputs(module, sets, coeffs, args, kwargs)
                finally:
                    inside[0] = False
            return forward
        return make

    def export_copy(self, i: int) -> dict[str, Tensor]:
        """State dict of a standalone model carrying copy i (= the mix at w = e_i, beta = 0), detached clones.

        Tied aliases of which only some were conditioned get different tensors: save with untied embeddings.
        """
        check_copy_index(i, len(self.objectives))
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for k, name in enumerate(self.names):
            state[name] = self.copies[i][k].detach().clone()
        return state


def _mix_outputs(module: nn.Module, sets: list[dict[str, Tensor]], coeffs: Tensor, args: tuple, kwargs: dict
                 ) -> Tensor:
    """sum_j coeffs[:, j] * module(x; sets[j]) over the m copies and the reference."""
    out = None
    for j, params in enumerate(sets):
        column = coeffs[:, j]
        if not _needed(column):
            continue
        y = functional_call(module, params, args, kwargs, tie_weights=False, strict=False)
        term = _row_scale(column, y) * y
        out = term if out is None else out + term
    assert out is not None  # the coefficients sum to one, so some column is non-zero
    return out


def _check_coefficients(coefficients: Tensor, m: int) -> Tensor:
    """Per-row coefficients ``[B, m + 1]`` (or ``[m + 1]`` for the batch) as float64 ``[B, m + 1]``."""
    c = torch.as_tensor(coefficients, dtype=torch.float64)
    c = c.reshape(1, -1) if c.ndim == 1 else c
    if c.ndim != 2 or c.shape[1] != m + 1:
        raise WeightsError(f"coefficients must be [B, {m + 1}] (the {m} copies, then the reference), got shape "
                           f"{tuple(c.shape)}")
    return c


def _row_groups(coeffs: Tensor) -> list[tuple[Tensor, Tensor | None]]:
    """(coefficient row, the rows holding it or None for all) for each distinct row of ``coeffs [B, K]``."""
    unique, inverse = torch.unique(coeffs, dim=0, return_inverse=True)
    if unique.shape[0] == 1:
        return [(unique[0], None)]
    return [(unique[u], (inverse == u).nonzero().squeeze(-1)) for u in range(unique.shape[0])]


def _grouped_outputs(module: nn.Module, groups: list[tuple[Tensor, Tensor | None]],
                     params_of: Callable[[int], dict[str, Tensor]], args: tuple, kwargs: dict) -> Tensor:
    """module(x[rows]; theta_S(group)) for each group of rows sharing a weighting, put back in row order."""
    if len(groups) == 1:
        return functional_call(module, params_of(0), args, kwargs, tie_weights=False, strict=False)
    x, rest = args[0], args[1:]
    parts = []
    for g, (_, index) in enumerate(groups):
        assert index is not None
        index = index.to(x.device)
        parts.append((index, functional_call(module, params_of(g), (x[index], *rest), kwargs, tie_weights=False,
                                             strict=False)))
    first = parts[0][1]
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    for index, y in parts:  # the groups partition the rows: every row is written once
        out.index_copy_(0, index, y)
    return out


def _refuse_non_affine(model: nn.Module, names: list[str]) -> None:
    for name in names:
        module_name, module, local = _owner(model, name)
        if not _is_affine_owner(module) or local not in module._parameters:
            raise ConfigError(f"cannot condition {name} per row: its module {module_name} "
                              f"({type(module).__name__}) is not one whose output is affine in it (Linear, "
                              f"Embedding, LayerNorm, RMSNorm); narrow the selector, or pass per_row=False")


def _freeze_replaced(model: nn.Module, names: list[str]) -> None:
    """Base parameters whose every alias is conditioned are never used again: stop their gradients."""
    chosen = set(names)
    aliases: dict[int, list[str]] = {}
    params = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
        params[id(p)] = p
    for key, group in aliases.items():
        if all(n in chosen for n in group):
            params[key].requires_grad_(False)


def _check_objectives(objectives: Sequence[str]) -> list[str]:
    names = list(objectives) if not isinstance(objectives, str) else []
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"objectives must be distinct non-empty names, at least one, got {objectives!r}")
    return names


def check_copy_index(i: int, m: int) -> None:
    """Refuse anything but an integer copy index in [0, m)."""
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < m:
        raise ConfigError(f"copy index must be an integer in [0, {m - 1}], got {i!r}")


# ---------------------------------------------------------------------------------------------------------------
# LoRA CLP: m adapters on a frozen base, mixed exactly per row
# ---------------------------------------------------------------------------------------------------------------


class LoRAConditionedModel(nn.Module):
    """CLP with m LoRA adapters on the frozen ``model``: each target ``nn.Linear`` outputs
    ``W x + sum_i c_i[row] * scaling * B_i A_i x`` with ``c = (1 - f_mix(alpha)) w`` (Eq. 3 on the weight deltas;
    the reference's delta is zero). All copies start identical with B = 0, i.e. at the reference (Algorithm 1).
    """

    def __init__(self, model: nn.Module, objectives: Sequence[str], targets: str = "attn", f_mix: str = "softmdp",
                 *, alpha_min: float, rank: int = 8, lora_alpha: float = 16.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_f_mix(f_mix, alpha_min)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}")
        if not math.isfinite(lora_alpha) or lora_alpha <= 0:
            raise ConfigError(f"lora_alpha must be a positive number, got {lora_alpha!r}")
        sel = parse_selector(targets if targets.startswith("lora") else f"lora:{targets}")
        self.model, self.selector, self.f_mix, self.alpha_min = model, sel.text, f_mix, float(alpha_min)
        self.objectives = _check_objectives(objectives)
        self.names = select_parameters(model, sel)  # Linear weights; raises if none
        self.rank, self.scaling = rank, lora_alpha / rank
        for p in model.parameters():
            p.requires_grad_(False)
        a_init = [self._init_a(name, generator) for name in self.names]
        self.lora_A = nn.ModuleList(nn.ParameterList(nn.Parameter(a.clone()) for a in a_init)
                                    for _ in self.objectives)
        self.lora_B = nn.ModuleList(nn.ParameterList(nn.Parameter(self._zeros_b(name)) for name in self.names)
                                    for _ in self.objectives)

    def _init_a(self, name: str, generator: torch.Generator | None) -> Tensor:
        weight = self.model.get_parameter(name)
        a = torch.empty(self.rank, weight.shape[1], dtype=weight.dtype, device=weight.device)
        return nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # peft's and nn.Linear's init

    def _zeros_b(self, name: str) -> Tensor:
        weight = self.model.get_parameter(name)
        return torch.zeros(weight.shape[0], self.rank, dtype=weight.dtype, device=weight.device)

    def coefficients(self, weights: WeightsLike, alpha: AlphaLike = None) -> tuple[Tensor, Tensor]:
        """Eq. 3's ``((1 - beta) w, beta)``; only the copies' part multiplies a delta."""
        return mix_coefficients(weights, alpha, self.f_mix, self.alpha_min, self.objectives)

    def lora_delta(self, i: int, name: str) -> Tensor:
        """Adapter i's weight delta ``scaling * B_i A_i`` for the target weight ``name``."""
        check_copy_index(i, len(self.objectives))
        k = self._index(name)
        return self.scaling * self.lora_B[i][k] @ self.lora_A[i][k]

    def merged_weight(self, name: str, copy_coeffs: Tensor) -> Tensor:
        """``W + sum_i c_i scaling B_i A_i`` for one weighting's copy coefficients ``[m]``."""
        out = self.model.get_parameter(name)
        for i in range(len(self.objectives)):
            out = out + float(copy_coeffs[i]) * self.lora_delta(i, name)
        return out

    def merged_parameters(self, weights: WeightsLike, alpha: AlphaLike = None) -> dict[str, Tensor]:
        """Every target weight merged for one weighting ``[m]`` (for functional_call or export)."""
        copy_c, _ = self.coefficients(weights, alpha)
        if copy_c.ndim != 1:
            raise WeightsError("merged_parameters takes one weighting [m]")
        return {name: self.merged_weight(name, copy_c) for name in self.names}

    def export_copy(self, i: int) -> dict[str, Tensor]:
        """State dict of a standalone model with adapter i merged into its targets (detached clones)."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        with torch.no_grad():
            for name in self.names:
                state[name] = self.model.get_parameter(name) + self.lora_delta(i, name)
        return state

    def forward(self, *args, weights: WeightsLike, alpha: AlphaLike = None, **kwargs):
        """Run the base with every target adding ``sum_i c_i[row] scaling B_i A_i x``; ``weights`` ``[m]`` for the
        batch or ``[B, m]`` per row, ``alpha`` None, a number or ``[B]``."""
        copy_c, ref_c = self.coefficients(weights, alpha)
        coeffs = torch.cat([copy_c.reshape(-1, len(self.objectives)), ref_c.reshape(-1, 1)], dim=1)
        return self.forward_coefficients(*args, coefficients=coeffs, **kwargs)

    def forward_coefficients(self, *args, coefficients: Tensor, **kwargs):
        """Run the base with Eq. 3's coefficients per row ``[B, m + 1]`` (copies, then the reference, whose
        delta is zero): every target adds ``sum_i c_i[row] scaling B_i A_i x``. One forward for any weightings."""
        coeffs = _check_coefficients(coefficients, len(self.objectives))[:, :-1]
        modules = {name.rpartition(".")[0]: _owner(self.model, name)[1] for name in self.names}
        with _patched(modules, self._lora_forward(coeffs)) as called:
            out = self.model(*args, **kwargs)
        _check_all_ran(modules, called)
        return out

    def _lora_forward(self, coeffs: Tensor) -> Callable[[str, nn.Module, RowForward], RowForward]:
        def make(module_name: str, module: nn.Module, original: RowForward) -> RowForward:
            k = self._index(f"{module_name}.weight")

            def forward(x: Tensor) -> Tensor:
                y = original(x)
                for i in range(len(self.objectives)):
                    column = coeffs[:, i]
                    if _needed(column):
                        delta = (x @ self.lora_A[i][k].T) @ self.lora_B[i][k].T
                        y = y + _row_scale(column, y) * (self.scaling * delta)
                return y
            return forward
        return make

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(f"{name} carries no LoRA adapter; targets are {self.names}") from None


def condition(model: nn.Module, selector: str, objectives: Sequence[str], f_mix: str = "softmdp", *,
              alpha_min: float, **options) -> ConditionedModel | LoRAConditionedModel:
    """Build the conditioned policy for a selector: ``lora[:targets]`` -> LoRA copies, anything else -> copies of
    the selected parameters. ``options`` go to the class (rank, lora_alpha, generator / per_row, cache_size)."""
    if parse_selector(selector).kind == "lora":
        return LoRAConditionedModel(model, objectives, selector, f_mix, alpha_min=alpha_min, **options)
    return ConditionedModel(model, selector, objectives, f_mix, alpha_min=alpha_min, **options)
