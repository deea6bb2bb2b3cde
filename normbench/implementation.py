"""The public plugin contract: an `Implementation` says how to build a norm module and what it accepts."""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

ALL_DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
ALL_DEVICES: tuple[str, ...] = ("cpu", "cuda")
AFFINE_MODES: tuple[str, ...] = ("optional", "always", "never")


class ImplementationError(ValueError):
    """An Implementation that is malformed; the message names it."""


def name_problem(name: str) -> str | None:
    """Why `name` cannot identify an implementation, or None when it can.

    The name becomes part of test ids (``family[name-property-dtype]``), pytest node ids and record keys,
    so two different names must never render alike: "::" is pytest's node-id separator (``a::b`` and
    ``c::b`` would both end in ``b``), '[' / ']' delimit the parameters, and control, format (zero-width,
    bidi override) and non-space whitespace characters would make names that look equal but are not, or
    split a line of output. A plain inner space is harmless; leading or trailing space is not visible.
    """
    if "::" in name:
        return "name may not contain '::' (pytest's node-id separator: 'a::b' and 'c::b' would collide)"
    if "[" in name or "]" in name:
        return "name may not contain '[' or ']' (it becomes part of test ids)"
    if name != name.strip(" "):
        return "name may not start or end with a space"
    for c in name:
        if c != " " and (c.isspace() or unicodedata.category(c).startswith("C")):
            return (f"name may not contain {c!r} (U+{ord(c):04X}): only printable characters and plain "
                    "inner spaces are allowed (it becomes part of test ids)")
    return None


def attribute_path(obj: Any, path: str) -> Any:
    """``obj.a.b`` for the path "a.b"; None where a step is missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@dataclass(frozen=True, kw_only=True)
class Implementation:
    """A normalization layer to judge.

    The suite builds the module as ``factory(num_features, **params)`` where ``params`` are exactly
    the constructor parameters declared by the spec of ``family`` (every family declares ``eps``
    and ``affine``).
    """

    name: str
    family: str
    factory: Callable[..., nn.Module]
    description: str = ""
    #: dtypes the module accepts for its input (names as in ``torch.<name>``).
    dtypes: tuple[str, ...] = ALL_DTYPES
    #: devices it runs on; a device absent from the machine is skipped with a reason.
    devices: tuple[str, ...] = ALL_DEVICES
    #: keyword under which ``forward`` accepts a padding mask, or None when it takes none.
    mask_kwarg: str | None = None
    #: what True means in that mask: "pad" (fairseq / PowerNorm convention) or "valid".
    mask_true_means: Literal["pad", "valid"] = "pad"
    #: token layout the module's forward expects for rank-3 token inputs: "BTC" (batch first, the harness
    #: default) or "TBC" (fairseq / PowerNorm); the harness transposes at the boundary.
    token_layout: Literal["BTC", "TBC"] = "BTC"
    #: where the module takes its channels: "spec" (where the family's layout puts them), "channels_first"
    #: ((N, C, ...): timm's LayerNorm2d, diffusers' video norms) or "channels_last" ((N, ..., C): speechbrain's
    #: BatchNorm); the harness moves the axis at the boundary for inputs of rank 3 and more.
    layout: Literal["spec", "channels_first", "channels_last"] = "spec"
    #: the dotted path of the submodule that holds the family's state buffers, for nested running statistics
    #: (torch_geometric's BatchNorm keeps them at ``.module.running_mean``); "" when they are the module's own
    state_attr: str = ""
    #: attribute names of the affine weight and bias on the module.
    weight_attr: str = "weight"
    bias_attr: str = "bias"
    #: for a module whose γ / β no attribute path reaches (keras 3's torch backend keeps them as keras Variables
    #: whose torch Parameters sit in ``_torch_params``; a wrapper that builds its inner norm lazily): a callable
    #: ``params(module) -> (γ, β)`` returning the module's own Parameters, β None where it has none. Declared
    #: instead of weight_attr / bias_attr; what it returns is validated on every built module (`affine_tensors`).
    params: Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor | None]] | None = None
    #: the effective gamma is ``weight_offset + weight`` (1.0 for Gemma-style zero-centred weights).
    weight_offset: float = 0.0
    #: keyword under which a fused add + norm ``forward`` takes the residual stream; it then returns
    #: ``(normed, residual_out)`` with residual_out = x + residual (vLLM / Liger / TransformerEngine style).
    residual_kwarg: str | None = None
    #: False when the module has no float64 path, so gradcheck is skipped with that reason.
    supports_gradcheck: bool = True
    #: False when the module supports first-order gradients only (a custom autograd Function marked
    #: ``once_differentiable``): second_order_gradients then requires that double backward *raises*, and a
    #: module declared so that computes second-order gradients after all is a wrong declaration (an error).
    double_backward: bool = True
    #: the input ranks the module takes (a graph norm: (2,)); None: every rank the family's checks feed. A case of
    #: another rank is skipped and counted, and the item says how many of its cases were judged.
    ranks: tuple[int, ...] | None = None
    #: the module takes hidden sizes that are multiples of this only (vLLM's CPU rms_norm: 8); other cases are
    #: skipped and counted, as for ranks
    hidden_multiple: int | None = None
    #: the dtype the module keeps its parameters in whatever the input dtype (open_clip's LayerNormFp32 keeps
    #: float32 γ / β under half inputs): the harness casts the module to the input dtype and then its parameters
    #: to this one, so it is judged in the mixed precision it is written for; None: parameters follow the input
    param_dtype: str | None = None
    #: True for a module that compiles per shape on its first call (torch.compile inside, a JIT kernel): each
    #: item's time limit is then VARIANT_TIMEOUT_FACTOR times --check-timeout, as under a compile variant, and
    #: the outcome says why (Megatron's L2Norm compiles per shape on CPU: 110 s for forward_equivalence).
    compiles: bool = False
    #: True for a kernel without autograd (most serving kernels, vLLM's ``_C.rms_norm``): items whose check calls
    #: backward are skipped with that reason instead of failing, and the leaderboard says "inference only".
    inference_only: bool = False
    #: False when γ / β are deliberately not registered Parameters (a norm that takes them as forward
    #: arguments, or keeps them elsewhere): module_hygiene's registration part is then an explained skip, and the
    #: declaration on a module whose γ / β are registered is an error.
    registered_params: bool = True
    #: where it came from (entry point or --impl-path); filled by the registry.
    source: str = ""
    #: free-form labels shown in listings (e.g. "reference", "torch").
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: False: the affine map is γ only (torch.nn.LayerNorm(bias=False), Cohere, x-transformers). The reference
    #: is built without β and no dβ is expected; a tensor found at ``bias_attr`` is randomized anyway, so a
    #: module that really adds a β fails forward equivalence instead of passing on its zero-initialized β.
    bias: bool = True
    #: which affine settings the factory can build: "optional" (it takes ``affine``), "always" (it always
    #: owns γ/β: HF RMSNorms) or "never" (no parameters: OLMo's LayerNorm). With "always"/"never" the factory
    #: is not passed ``affine`` and items that need the other setting are skipped with that reason.
    affine: Literal["optional", "always", "never"] = "optional"
    #: constructor parameters of the family's spec that the module does not take, with the value it hard-codes
    #: (e.g. ``{"eps": 1e-5}``). The factory is not passed them, the reference uses these values, and checks
    #: that would vary them skip that variation with the reason.
    fixed_params: dict[str, Any] = field(default_factory=dict, hash=False)  # a dict is unhashable

    def __post_init__(self) -> None:
        def bad(message: str) -> ImplementationError:
            return ImplementationError(f"implementation {self.name!r}: {message}")

        if not isinstance(self.name, str) or not self.name.strip():
            raise ImplementationError(f"implementation name must be a non-empty string, got {self.name!r}")
        problem = name_problem(self.name)
        if problem is not None:
            raise bad(problem)
        if not isinstance(self.family, str) or not self.family:
            raise bad(f"family must be a spec name, got {self.family!r}")
        if not callable(self.factory):
            raise bad(f"factory must be callable, got {type(self.factory).__name__}")
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "tags", tuple(self.tags))
        unknown = [d for d in self.dtypes if d not in ALL_DTYPES]
        if unknown:
            raise bad(f"unknown dtypes {unknown}; choose from {list(ALL_DTYPES)}")
        unknown = [d for d in self.devices if d not in ALL_DEVICES]
        if unknown:
            raise bad(f"unknown devices {unknown}; choose from {list(ALL_DEVICES)}")
        if self.ranks is not None:
            object.__setattr__(self, "ranks", tuple(self.ranks))
            if not self.ranks or not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= 8
                                         for r in self.ranks):
                raise bad(f"ranks must be a non-empty tuple of ranks 1..8, got {self.ranks!r}")
        if self.hidden_multiple is not None and not (isinstance(self.hidden_multiple, int)
                                                     and not isinstance(self.hidden_multiple, bool)
                                                     and self.hidden_multiple >= 1):
            raise bad(f"hidden_multiple must be a positive integer, got {self.hidden_multiple!r}")
        if self.param_dtype is not None and self.param_dtype not in ALL_DTYPES:
            raise bad(f"param_dtype must be one of {list(ALL_DTYPES)} or None, got {self.param_dtype!r}")
        if self.token_layout not in ("BTC", "TBC"):
            raise bad(f"token_layout must be 'BTC' or 'TBC', got {self.token_layout!r}")
        if self.layout not in ("spec", "channels_first", "channels_last"):
            raise bad(f"layout must be 'spec', 'channels_first' or 'channels_last', got {self.layout!r}")
        if self.mask_true_means not in ("pad", "valid"):
            raise bad(f"mask_true_means must be 'pad' or 'valid', got {self.mask_true_means!r}")
        self._validate_contract_fields(bad)

    def _validate_contract_fields(self, bad: Callable[[str], ImplementationError]) -> None:
        """The fields that describe code in the wild (bias, affine, fixed_params); spec-dependent checks of
        fixed_params are in `check_fixed_params`, called where the spec is known."""
        if self.state_attr and not all(part.isidentifier() for part in str(self.state_attr).split(".")):
            raise bad(f"state_attr must be a dotted attribute path, got {self.state_attr!r}")
        for attr in ("weight_attr", "bias_attr"):
            value = getattr(self, attr)
            # a dotted path reaches a wrapped module's tensor (speechbrain keeps γ at ``.norm.weight``)
            if not isinstance(value, str) or not all(part.isidentifier() for part in value.split(".")):
                hint = " (a module without β: declare bias=False)" if attr == "bias_attr" else ""
                raise bad(f"{attr} must be an attribute name, got {value!r}{hint}")
        if self.params is not None:
            if not callable(self.params):
                raise bad(f"params must be a callable params(module) -> (weight, bias), got "
                          f"{type(self.params).__name__}")
            if (self.weight_attr, self.bias_attr) != ("weight", "bias"):
                raise bad("declare params= or weight_attr / bias_attr, not both (params= says where γ and β are)")
        for attr in ("bias", "supports_gradcheck", "double_backward", "registered_params", "compiles",
                     "inference_only"):
            if not isinstance(getattr(self, attr), bool):
                raise bad(f"{attr} must be True or False, got {getattr(self, attr)!r}")
        if self.affine not in AFFINE_MODES:
            raise bad(f"affine must be one of {list(AFFINE_MODES)}, got {self.affine!r}")
        if not isinstance(self.fixed_params, Mapping):
            raise bad(f"fixed_params must be a dict of parameter name to value, got {type(self.fixed_params).__name__}")
        object.__setattr__(self, "fixed_params", dict(self.fixed_params))
        for key in self.fixed_params:
            if not isinstance(key, str):
                raise bad(f"fixed_params key {key!r} is not a parameter name")
        if "affine" in self.fixed_params:
            raise bad("fixed_params may not fix 'affine'; declare affine='always' or affine='never' instead")

    def check_fixed_params(self, declared: Iterable[str], family_path: str = "") -> None:
        """Every fixed_params key must be a parameter the family's spec declares (called at judge time, where
        the spec is known); raises ImplementationError naming the implementation and the key."""
        known = set(declared)
        for key in self.fixed_params:
            if key not in known:
                where = f" ({family_path})" if family_path else ""
                raise ImplementationError(
                    f"implementation {self.name!r}: fixed_params key {key!r} is not a parameter of family "
                    f"{self.family!r}{where}; its parameters are {sorted(known)}")

    @property
    def affine_settings(self) -> tuple[bool, ...]:
        """The values of the spec's ``affine`` parameter this implementation can be judged with."""
        return {"optional": (True, False), "always": (True,), "never": (False,)}[self.affine]

    def factory_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The subset of the spec's parameters the factory takes: without the fixed ones, and without
        ``affine`` unless the factory chooses it (affine="optional")."""
        out = {k: v for k, v in params.items() if k not in self.fixed_params}
        if self.affine != "optional":
            out.pop("affine", None)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Implementation:
        """Build from a mapping; an unknown field is an error naming the field, never ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        name = data.get("name", "<unnamed>")
        if unknown:
            raise ImplementationError(
                f"implementation {name!r}: unknown field(s) {unknown}; known fields are {sorted(known)}"
            )
        return cls(**data)

    def build(self, num_features: int, params: dict[str, Any]) -> nn.Module:
        """Call the factory with the spec's parameters it takes (`factory_params`); any exception is re-raised
        naming this implementation."""
        params = self.factory_params(params)
        try:
            module = self.factory(num_features, **params)
        except Exception as exc:  # plugin code: report it, do not crash the suite
            raise ImplementationError(
                f"implementation {self.name!r}: factory({num_features}, **{params}) raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(module, nn.Module):
            raise ImplementationError(
                f"implementation {self.name!r}: factory returned {type(module).__name__}, not an nn.Module"
            )
        return module

    def affine_tensors(self, module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The module's weight and bias tensors (None where absent; the bias is None when declared bias=False)."""
        if self.params is not None:
            weight, bias = self.declared_params(module)
            return weight, (bias if self.bias else None)
        weight = attribute_path(module, self.weight_attr)
        bias = attribute_path(module, self.bias_attr) if self.bias else None
        return (weight if isinstance(weight, torch.Tensor) else None,
                bias if isinstance(bias, torch.Tensor) else None)

    def declared_params(self, module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the `params` declaration returns for `module`, checked: a pair (γ, β) of the module's own
        Parameters (tensors where registered_params=False), β None or γ's shape, γ and β distinct; (None, None)
        for a module built without parameters. A γ the module
        does not own would be randomized while the module computes with its own: an error naming the
        implementation, never a silent run with γ = 1."""
        def bad(message: str) -> ImplementationError:
            return ImplementationError(f"implementation {self.name!r}: its params= declaration {message}")

        try:
            found = self.params(module)  # type: ignore[misc]
        except Exception as exc:  # plugin code
            raise bad(f"raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(found, tuple | list) or len(found) != 2:
            raise bad(f"must return a pair (weight, bias), got {type(found).__name__}")
        weight, bias = found
        if weight is None:
            if bias is not None:
                raise bad("returned a bias without a weight")
            return None, None  # type: ignore[return-value]  # a module built with affine=False
        kind = nn.Parameter if self.registered_params else torch.Tensor
        word = "an nn.Parameter" if self.registered_params else "a tensor"
        for label, value in (("weight", weight), ("bias", bias)):
            if value is None and label == "bias":
                continue
            if not isinstance(value, kind):
                raise bad(f"returned a {label} that is {type(value).__name__}, not {word}")
        if bias is not None and (bias is weight or bias.shape != weight.shape):
            raise bad(f"returned a bias of shape {tuple(bias.shape)} for a weight of shape {tuple(weight.shape)}"
                      if bias is not weight else "returned the same tensor as weight and bias")
        if self.registered_params:
            owned = {id(p) for p in module.parameters()}
            strays = [label for label, value in (("weight", weight), ("bias", bias))
                      if value is not None and id(value) not in owned]
            if strays:
                raise bad(f"returned a {' and a '.join(strays)} that is not one of the module's parameters (the "
                          "module would compute with other tensors than the ones judged)")
        return weight, bias

    def state_tensor(self, module: nn.Module, name: str) -> Any:
        """The module's state buffer `name` of its family's spec (``state_attr.name`` for nested statistics)."""
        return attribute_path(module, f"{self.state_attr}.{name}" if self.state_attr else name)

    def undeclared_bias(self, module: nn.Module) -> torch.Tensor | None:
        """A tensor at ``bias_attr`` on a module declared bias=False: a β the declaration hides."""
        if self.bias:
            return None
        found = attribute_path(module, self.bias_attr)
        return found if isinstance(found, torch.Tensor) else None
