"""Every norm class of HF transformers' modeling files, found, classified and declared.

Discovery reads the modeling_*.py sources with `ast` (no import: ~540 files in a few seconds) and keeps every
top-level class whose name ends in Norm (or Norm1P, Norm2d, NormGated). Classes whose source is identical
modulo their own name and docstrings (`# Copied from` / modular copies) share one source hash; one class per
hash, the representative, is imported and classified, and its copies share its declaration and verdict.

Classification of a representative: its family from its name (RMSNorm, LayerNorm, ...); its constructor
mapping from the signature (size, eps and affine keywords); then a float64 probe forward against the family's
formula, with the weight offset (0 or Gemma's 1), the eps (the one passed, or the one it hard-codes) and its
compute precision (float64, or float32 only) as unknowns. A class that fits no family or declaration is listed
with the reason. The result is cached per transformers version and source set (`cache_dir()`), so xdist workers
and later runs do not re-import ~200 modules.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from normbench.ecosystem._catalogue import ClassFactory, Entry, declaration_of, import_class, unavailable
from normbench.implementation import Implementation

LIBRARY = "transformers"
#: bump when the classification rules change, so a stale cache is not reused
CLASSIFIER_VERSION = 6
#: norm classes by name: ...Norm, ...Norm1P, ...Norm2d, ...NormGated, and the norms named with a further suffix
#: (StableLmLayerNormPerHead, Qwen2_5_OmniAdaLayerNormZero, BitGroupNormActivation, PatchTSMixerNormLayer,
#: Phi4MultimodalAudioMeanVarianceNormLayer); not "...ConvNormLayer" (a convolution followed by a norm) nor the
#: model classes of RobertaPreLayerNorm, whose names only contain the word.
NAME_PATTERN = re.compile(r"(Norm(1P|\d*[dD]|Gated|PerHead|Zero(_Final)?|Activation)?"
                          r"|(?<!Conv)(?<!PreLayer)NormLayer)$")
SIZE_NAMES = ("hidden_size", "dim", "normalized_shape", "size", "c_in", "feat_size", "num_channels", "d_model",
              "hidden_dim", "n_embd", "features")
EPS_NAMES = ("eps", "epsilon", "variance_epsilon", "layer_norm_eps")
AFFINE_NAMES = ("elementwise_affine", "affine", "with_scale")
#: the probe's channel count and the eps passed to a constructor that takes one (large, so honouring it shows)
PROBE_C, PROBE_EPS = 8, 0.25
#: eps values a class without an eps argument may hard-code, tried after its own attributes
COMMON_EPS = (1e-5, 1e-6, 1e-12, 1e-8, 1e-3)


def cache_dir() -> Path:
    """Where classifications are cached: $NORMBENCH_CACHE_DIR, else ~/.cache/normbench."""
    return Path(os.environ.get("NORMBENCH_CACHE_DIR") or Path.home() / ".cache" / "normbench")


@dataclass(frozen=True)
class Candidate:
    name: str  # the class name
    module: str  # transformers.models.llama.modeling_llama
    source_hash: str
    generated: bool  # the file is generated from a modular_*.py (its classes are copies of others)


def _normalized_source(node: ast.ClassDef) -> str:
    """The class without its name and docstrings, so copies that differ only there hash the same."""
    node = ast.parse(ast.unparse(node)).body[0]  # a private copy to strip
    for sub in ast.walk(node):
        body = getattr(sub, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            sub.body = body[1:] or [ast.Pass()]
    assert isinstance(node, ast.ClassDef)
    return re.sub(rf"\b{re.escape(node.name)}\b", "<class>", ast.unparse(node))


def scan(root: Path | None = None) -> list[Candidate]:
    """Every norm-named top-level class of transformers/models/**/modeling_*.py, from the source text."""
    if root is None:
        import transformers

        root = Path(transformers.__file__).parent / "models"
    out = []
    for file in sorted(root.rglob("modeling_*.py")):
        text = file.read_text(encoding="utf-8")
        module = "transformers.models." + ".".join(file.relative_to(root).with_suffix("").parts)
        generated = "This file was automatically generated from" in text[:2000]
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef) and NAME_PATTERN.search(node.name):
                digest = hashlib.sha256(_normalized_source(node).encode()).hexdigest()[:16]
                out.append(Candidate(node.name, module, digest, generated))
    return out


# -- classification -------------------------------------------------------------------------------------------

class NotJudged(Exception):
    """Why a class is not judged; the message is the reason listed."""


def _family(name: str) -> str:
    if "Gated" in name:
        raise NotJudged("gated norm: forward takes a gate (norm(x)·act(gate)); no family models a gate input")
    if "FrozenBatchNorm" in name:
        raise NotJudged("frozen BatchNorm: fixed buffers only (no training statistics, no affine or momentum "
                        "arguments); the batchnorm family judges training and running statistics")
    if name.endswith("LayerNorm2d"):
        raise NotJudged("normalizes the channel axis of (B, C, H, W) (channels-first); the layernorm family "
                        "normalizes the last axis")
    if name.endswith("RMSNorm"):
        return "rmsnorm"
    if name.endswith(("LayerNorm", "LayerNorm1P")):
        return "layernorm"
    if name.endswith("GroupNorm"):
        return "groupnorm"
    if name.endswith("BatchNorm"):
        return "batchnorm"
    raise NotJudged(f"no family: {name} is not an RMS, Layer, Group or Batch norm (see its source)")


def _constructor(cls: type) -> dict[str, Any]:
    """The constructor mapping from the signature; raises NotJudged when it cannot take (size, eps, ...)."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if named and (named[0].name == "config" or "Config" in str(named[0].annotation)):
        raise NotJudged("the constructor takes a model config object, not (size, eps)")
    size = named[0].name if named and named[0].name in SIZE_NAMES else None
    eps = next((p.name for p in named if p.name in EPS_NAMES), None)
    affine = next((p.name for p in named if p.name in AFFINE_NAMES), None)
    required = [p.name for p in named if p.default is p.empty and p.name not in (size, eps)]
    if required:
        raise NotJudged(f"the constructor needs {required} without defaults, which no family parameter supplies")
    if size is None and named and named[0].name not in EPS_NAMES:
        raise NotJudged(f"the constructor's first parameter {named[0].name!r} is not a feature size")
    bias_default = next((p.default for p in named if p.name == "bias" and isinstance(p.default, bool)), None)
    return {"size": size, "takes_size": size is not None, "eps": eps, "affine": affine, "bias_kw": bias_default}


def _forward_arity(cls: type) -> None:
    params = [p for p in inspect.signature(cls.forward).parameters.values() if p.name != "self"]
    extra = [p.name for p in params[1:] if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if extra:
        raise NotJudged(f"forward needs {extra} besides the input; no family supplies them")


def _expected(family: str, x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, offset: float,
              eps: float) -> torch.Tensor:
    """The family's formula in float64 (a classification probe; the verdict is the suite's, not this)."""
    if family == "rmsnorm":
        y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    else:
        mu = x.mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    if w is not None:
        y = y * (offset + w)
    if b is not None:
        y = y + b
    return y


def _build(cls: type, ctor: dict[str, Any], **kwargs: Any) -> torch.nn.Module:
    if not ctor["takes_size"]:
        return cls(**kwargs)
    if ctor["size"] in ("hidden_size", "dim") or not ctor["size"]:
        return cls(PROBE_C, **kwargs)
    return cls(**{ctor["size"]: PROBE_C}, **kwargs)


def _probe(family: str, cls: type, ctor: dict[str, Any]) -> dict[str, Any]:
    """Fit (weight offset, eps, precision) so the class computes the family's formula; NotJudged if none does."""
    kwargs = {ctor["eps"]: PROBE_EPS} if ctor["eps"] else {}
    try:
        module = _build(cls, ctor, **kwargs)
    except Exception as exc:
        raise NotJudged(f"constructing it with size {PROBE_C} raised {type(exc).__name__}: {exc}") from exc
    params = dict(module.named_parameters())
    weight_attr = next((n for n in ("weight", "gamma", "scale", "g") if n in params
                        and params[n].shape == (PROBE_C,)), None)
    bias_attr = "bias" if "bias" in params and params["bias"].shape == (PROBE_C,) else None
    others = sorted(set(params) - {weight_attr, bias_attr})
    if others:
        raise NotJudged(f"parameters besides a per-feature γ/β: {others}")
    if set(dict(module.named_buffers())) and family in ("rmsnorm", "layernorm"):
        raise NotJudged(f"per-token norm with buffers {sorted(dict(module.named_buffers()))}: state no family has")
    gen = torch.Generator().manual_seed(0)
    module = module.double()
    with torch.no_grad():
        if weight_attr:
            params[weight_attr].copy_(torch.rand(PROBE_C, generator=gen, dtype=torch.float64) + 0.5)
        if bias_attr:
            params[bias_attr].copy_(torch.randn(PROBE_C, generator=gen, dtype=torch.float64))
    x = torch.randn(3, PROBE_C, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    inputs = (x, x * 1e-3)  # the tiny-scale rows make a hard-coded eps visible
    try:
        with torch.no_grad():
            outputs = [module(v) for v in inputs]
    except Exception as exc:
        # a module that casts its input to float32 but not its parameters cannot run float64 at all; a float32
        # probe still classifies it (and it is declared without float64, like any module with no float64 path)
        try:
            with torch.no_grad():
                outputs = [module.float()(v.float()) for v in inputs]
                module.double()
        except Exception:
            raise NotJudged(f"a float64 forward of shape (3, {PROBE_C}) raised {type(exc).__name__}: "
                            f"{exc}".splitlines()[0]) from exc
    if not all(isinstance(y, torch.Tensor) and y.shape == x.shape for y in outputs):
        raise NotJudged("forward does not return a tensor of the input's shape")
    w = params[weight_attr].detach() if weight_attr else None
    b = params[bias_attr].detach() if bias_attr else None
    if ctor["eps"]:
        eps_candidates: list[float] = [PROBE_EPS]
    else:
        own = [float(v) for k in EPS_NAMES if isinstance(v := getattr(module, k, None), float)]
        eps_candidates = [*own, *COMMON_EPS]
    best = (float("inf"), 0.0, 0.0)
    for offset in (0.0, 1.0):
        for eps in eps_candidates:
            err = max(float((y.double() - _expected(family, v, w, b, offset, eps)).abs().max()
                             / _expected(family, v, w, b, offset, eps).abs().max())
                      for y, v in zip(outputs, inputs, strict=True))
            best = min(best, (err, offset, eps))
    err, offset, eps = best
    if err > 2e-5:
        note = " (it ignores the eps it is given)" if ctor["eps"] else ""
        raise NotJudged(f"its float64 output is not the {family} formula for any weight offset (0, 1) and eps"
                        f"{note}: closest relative error {err:.2g}")
    # The harness casts the whole module to the input dtype: a module that needs float32 parameters under a half
    # input (EsmFold2's "fp32-pinned" LayerNorm) cannot be judged in half precision at all.
    try:
        with torch.no_grad():
            module.half()(x.half())
        half_ok = True
    except Exception:
        half_ok = False
    return {"weight_attr": weight_attr, "bias_attr": bias_attr, "offset": offset, "eps": eps,
            "float64_path": err < 1e-10 and all(y.dtype == torch.float64 for y in outputs), "half": half_ok}


def _affine_mode(cls: type, ctor: dict[str, Any], probe: dict[str, Any]) -> str:
    if not probe["weight_attr"]:
        return "never"
    return "optional" if ctor["affine"] else "always"


def classify(candidate: Candidate) -> dict[str, Any]:
    """A JSON-able classification: {"status": "judged", "family", "fields", "factory"} or {"status": "not judged",
    "reason"}."""
    try:
        family = _family(candidate.name)
        try:
            cls = import_class(candidate.module, candidate.name)
        except Exception as exc:
            raise NotJudged(f"importing {candidate.module} raised {type(exc).__name__}: {exc}") from exc
        if family not in ("rmsnorm", "layernorm"):
            raise NotJudged(f"a {family} class: the catalogue classifies per-token norms (RMS/Layer) only so far")
        ctor = _constructor(cls)
        _forward_arity(cls)
        named = family
        try:
            probe = _probe(family, cls, ctor)
        except NotJudged as first:
            # T5LayerNorm, ImageGPTLayerNorm: named LayerNorm, computing RMSNorm. Judge what the code computes.
            other = {"rmsnorm": "layernorm", "layernorm": "rmsnorm"}[family]
            try:
                probe, family = _probe(other, cls, ctor), other
            except NotJudged:
                raise first from None
    except NotJudged as why:
        return {"status": "not judged", "reason": str(why)}
    affine = _affine_mode(cls, ctor, probe)
    fields: dict[str, Any] = {"affine": affine, "bias": bool(probe["bias_attr"])}
    if probe["weight_attr"] and probe["weight_attr"] != "weight":
        fields["weight_attr"] = probe["weight_attr"]
    if probe["offset"]:
        fields["weight_offset"] = probe["offset"]
    if not ctor["eps"]:
        fields["fixed_params"] = {"eps": probe["eps"]}
    dtypes = ["float64", "float32", "float16", "bfloat16"]
    if not probe["float64_path"]:
        dtypes.remove("float64")
        fields["supports_gradcheck"] = False
    if not probe["half"]:
        dtypes = [d for d in dtypes if d not in ("float16", "bfloat16")]
    if len(dtypes) < 4:
        fields["dtypes"] = dtypes
    renames = []
    if ctor["eps"] and ctor["eps"] != "eps":
        renames.append(["eps", ctor["eps"]])
    if affine == "optional" and ctor["affine"] != "affine":
        renames.append(["affine", ctor["affine"]])
    fixed_kwargs = [["bias", ctor["bias_kw"]]] if ctor["bias_kw"] is not None else []
    factory = {"module": candidate.module, "qualname": candidate.name, "takes_size": ctor["takes_size"],
               "hidden_kw": ctor["size"] if ctor["size"] not in ("hidden_size", "dim", None) else None,
               "renames": renames, "fixed_kwargs": fixed_kwargs}
    note = "computes in float32 (no float64 path)" if not probe["float64_path"] else "has a float64 path"
    if not probe["half"]:
        note += "; raises with float16 parameters (it needs float32 ones, and the harness casts the module to the " \
                "input dtype), so it is judged in float32 only"
    if named != family:
        note += f"; named a {named[:-4]} norm, it computes the {family} formula"
    return {"status": "judged", "family": family, "fields": fields, "factory": factory, "note": note}


# -- the catalogue ----------------------------------------------------------------------------------------------

#: judged in place of their copies when they are in a group: the names people look for (and those the catalogue's
#: findings name)
WELL_KNOWN = ("LlamaRMSNorm", "T5LayerNorm", "MambaRMSNorm", "Qwen2RMSNorm", "GemmaRMSNorm", "MistralRMSNorm",
              "CohereLayerNorm", "OlmoLayerNorm", "NemotronLayerNorm1P")


def _names_a_family(name: str) -> bool:
    try:
        _family(name)
    except NotJudged:
        return False
    return True


def _representatives(candidates: list[Candidate]) -> dict[str, Candidate]:
    """One class per source hash: a well-known name, else one whose name gives a family, else one from a
    hand-written (not generated) file, by name.

    A name that gives no family must not stand for its copies: in transformers 5.0.0 NanoChatRMSNorm is a copy
    of Llama4TextL2Norm, and with the L2Norm first by name the whole group was "no family", unjudged."""
    reps: dict[str, Candidate] = {}
    for c in sorted(candidates, key=lambda c: (c.name not in WELL_KNOWN, not _names_a_family(c.name), c.generated,
                                               c.name, c.module)):
        reps.setdefault(c.source_hash, c)
    return reps


def _cache_key(root: Path, version: str) -> str:
    h = hashlib.sha256(f"{CLASSIFIER_VERSION}|{version}|{torch.__version__}".encode())
    for file in sorted(root.rglob("modeling_*.py")):
        st = file.stat()
        h.update(f"{file}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_classifications(use_cache: bool = True) -> tuple[list[Candidate], dict[str, dict[str, Any]], dict[str, Any]]:
    """(candidates, classification per source hash, timings), from the cache when it matches the installed files."""
    import transformers

    root = Path(transformers.__file__).parent / "models"
    key = _cache_key(root, transformers.__version__)
    cache = cache_dir() / f"ecosystem-transformers-{transformers.__version__}-{key}.json"
    if use_cache and cache.is_file():
        data = json.loads(cache.read_text())
        return [Candidate(**c) for c in data["candidates"]], data["classes"], {**data["timings"], "cached": True}
    t0 = time.perf_counter()
    candidates = scan(root)
    t1 = time.perf_counter()
    classes = {h: classify(c) for h, c in _representatives(candidates).items()}
    t2 = time.perf_counter()
    timings = {"scan_s": round(t1 - t0, 2), "classify_s": round(t2 - t1, 2), "cached": False}
    cache.parent.mkdir(parents=True, exist_ok=True)
    # written atomically: xdist workers may classify at the same time, and a reader never sees half a file
    with tempfile.NamedTemporaryFile("w", dir=cache.parent, delete=False, suffix=".tmp") as tmp:
        json.dump({"candidates": [asdict(c) for c in candidates], "classes": classes, "timings": timings}, tmp)
    os.replace(tmp.name, cache)
    return candidates, classes, timings


def entries(use_cache: bool = True) -> list[Entry]:
    try:
        import transformers  # noqa: F401
        import transformers.modeling_utils  # noqa: F401 - what every modeling file imports; fails when broken
    except Exception as exc:
        return [unavailable(LIBRARY, exc)]
    candidates, classes, _ = load_classifications(use_cache)
    reps = _representatives(candidates)
    out = []
    for c in sorted(candidates, key=lambda c: c.name):
        rep = reps[c.source_hash]
        got = classes[c.source_hash]
        name = f"{LIBRARY}.{c.name}"
        if got["status"] != "judged":
            reason = got["reason"] if rep == c else f"{got['reason']} (identical source to {LIBRARY}.{rep.name})"
            out.append(Entry(name=name, library=LIBRARY, status="not judged", reason=reason, origin=c.module))
            continue
        if rep != c:
            out.append(Entry(name=name, library=LIBRARY, status="copy", family=got["family"], origin=c.module,
                             reason=f"identical source (modulo its name) to {LIBRARY}.{rep.name}, judged once",
                             declaration={"same as": f"{LIBRARY}.{rep.name}"}))
            continue
        f = got["factory"]
        factory = ClassFactory(f["module"], f["qualname"], hidden_kw=f["hidden_kw"], takes_size=f["takes_size"],
                               renames=tuple(map(tuple, f["renames"])),
                               fixed_kwargs=tuple(map(tuple, f["fixed_kwargs"])))
        impl = Implementation(name=name, family=got["family"], factory=factory, tags=("ecosystem", LIBRARY),
                              description=f"HF transformers {c.name} ({c.module}): {got['note']}", **got["fields"])
        out.append(Entry(name=name, library=LIBRARY, status="judged", family=got["family"], origin=c.module,
                         declaration=declaration_of(impl, note=got["note"]), implementation=impl))
    return out
