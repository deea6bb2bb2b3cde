"""The plugin's side of the request protocol: it only does what the trusted process asks.

Build the module, deep-copy it, move it to a dtype, set its mode, write the parameters and buffers it is sent, call
forward on the tensors it is sent, differentiate a kept call by the gradients it is sent (and, for a create_graph=True
backward, differentiate those gradients again: double backward), take and load its own
state_dict, list the tensors it holds, and send back the tensors that came out and the state that changed (its
copies' too). It computes no truth, compares nothing and decides nothing: every tolerance and
verdict is the trusted process's (normbench.remote.proxy). It runs in the judging child, beside the plugin, and so
is the plugin's to tamper with; tampering can only change what it sends, which the trusted process checks as data.
"""

from __future__ import annotations

import builtins
import contextlib
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normbench.implementation import Implementation, ImplementationError
from normbench.remote import tensors as wire_tensors
from normbench.remote.aliases import storage_overlaps
from normbench.remote.attributes import tensor_attributes

#: the declared paths under which a ``params=`` declaration's γ and β are mirrored (no attribute reaches them)
PARAMS_WEIGHT, PARAMS_BIAS = "params()[0]", "params()[1]"
#: forward calls whose graphs the child keeps for a later backward: the trusted side releases each one its own graph
#: dropped (gradcheck differentiates a forward after hundreds of numerical ones); this bounds a leak, not a check
KEPT_CALLS = 4096
#: the most tensors a forward may return (a tuple); the trusted side reserves this many handles per call
MAX_OUTPUTS = 8


def _named_state(module: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    out: dict[str, tuple[str, torch.Tensor]] = {n: ("param", p) for n, p in module.named_parameters()}
    out.update({n: ("buffer", b) for n, b in module.named_buffers()})
    return out


def _snapshot(t: torch.Tensor) -> tuple[int, torch.Tensor]:
    """What the trusted process holds of `t`: its identity and a bitwise copy. Versions are not enough: a native
    kernel writes BatchNorm's running statistics in place without bumping the version counter. (A detached clone
    records no graph: no no_grad() around it, whose enter and exit cost more than a small clone, thousands of times
    an implementation.)"""
    return id(t), t.detach().clone()


def _same(t: torch.Tensor, held: tuple[int, torch.Tensor]) -> bool:
    ident, value = held
    if id(t) != ident or t.dtype != value.dtype or t.shape != value.shape:
        return False
    a, b = t.detach(), value
    if torch.equal(a, b):  # the common case, one call (+0.0 and -0.0 read as the same here, harmlessly)
        return True
    if a.dtype.is_floating_point or a.dtype.is_complex:  # bitwise: NaN equals NaN
        # reshape(-1) first: a 0-d tensor (a scalar parameter such as DyT's alpha) cannot be viewed as bytes
        return bool(torch.equal(a.reshape(-1).contiguous().view(torch.uint8),
                                b.reshape(-1).contiguous().view(torch.uint8)))
    return False


def _same_grad(grad: torch.Tensor | None, held: tuple[int, torch.Tensor | None]) -> bool:
    if grad is None or held[1] is None:
        return grad is None and held[1] is None
    return _same(grad, (held[0], held[1]))


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor, replace: bool = False, bump: bool = True
                ) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    current = getattr(owner, attr)
    with torch.no_grad():
        if replace and isinstance(current, nn.Parameter):
            setattr(owner, attr, nn.Parameter(value.to(current.device), requires_grad=current.requires_grad))
        elif replace:
            setattr(owner, attr, value.to(current.device))
        elif current.dtype == value.dtype and current.shape == value.shape and not current.is_inference():
            (current if bump else current.data).copy_(value.to(current.device))
        elif isinstance(current, nn.Parameter):
            current.data = value.to(current.device)
        else:
            setattr(owner, attr, value.to(current.device))


def _exactly_tensors(out: Any) -> tuple[list[torch.Tensor] | None, str]:
    """The output's tensors, or None and what it is instead."""
    items = list(out) if isinstance(out, tuple | list) else [out]
    if isinstance(out, tuple | list) and len(items) > MAX_OUTPUTS:
        return None, f"a {type(out).__name__} of {len(items)} elements"
    for t in items:
        if type(t) is not torch.Tensor:
            if isinstance(t, torch.Tensor):
                return None, (f"a torch.Tensor subclass {type(t).__qualname__} (normbench accepts exactly "
                              "torch.Tensor: a subclass can change how it is compared)")
            return None, type(out).__name__ if not isinstance(out, tuple | list) else (
                f"a {type(out).__name__} holding a {type(t).__name__}")
    return items, ""


class Server:
    """Modules built for the trusted process, by handle, and the forward calls kept for their backward."""

    def __init__(self, impl: Implementation | None, load_error: str | None, findings: list[str],
                 spill: Path | None = None, verify: Callable[[], list[str]] | None = None,
                 prepare: Callable[[str], None] | None = None) -> None:
        self.impl = impl
        self.spill = spill
        #: loads a deployment's lazy imports, as between two items beside the check (the sandbox retakes its
        #: fingerprint after it); normbench.variants.prepare where nothing is fingerprinted (the loopback)
        self.prepare = prepare
        self.prepared: set[str] = set()
        #: what the plugin changed of torch's global state (or normbench) since its import: asked after each item
        self.verify = verify
        self.load_error = load_error
        self.findings = findings
        self.modules: dict[int, nn.Module] = {}
        #: call -> (its module's handle, its inputs then the parameters it was differentiable in, its outputs, how many
        #: of those tensors are inputs)
        self.calls: OrderedDict[int, tuple[int, list[torch.Tensor], list[torch.Tensor], int]] = OrderedDict()
        #: create_graph=True backwards: id -> (its module's handle, the first-order gradients with their graph, what
        #: that graph may be differentiated in: dy, the call's inputs and parameters)
        self.graphs: OrderedDict[int, tuple[int, list[torch.Tensor | None], list[torch.Tensor | None]]] = OrderedDict()
        #: per handle, the state as the trusted process last received or sent it (per handle, not per module object:
        #: a ``__deepcopy__`` may return the very module, and the trusted side then holds two mirrors of it)
        self.held: dict[int, dict[str, tuple[int, torch.Tensor]]] = {}
        #: per handle, the family's statistics the trusted side asked for (kept here, never set on the module)
        self.state_names: dict[int, list[str]] = {}
        #: per handle, the module it was deep-copied from, first to last (itself for a build), and per such root every
        #: live handle of its family: the modules that may share state over there (a copy whose closure still reads
        #: the original's γ); indexed by root, so a module without copies costs a request nothing
        self.family: dict[int, int] = {}
        self.families: dict[int, set[int]] = {}
        self.next_handle = 0
        #: the item's inputs and outputs by the trusted side's handle (normbench.remote.identity), with what the
        #: trusted side holds of each (None: not said yet)
        self.kept: dict[int, tuple[torch.Tensor, tuple[int, torch.Tensor] | None]] = {}
        #: the inference modes forwards switched and left so, entered again after the call (_modes_as_left)
        self.modes_left: list[torch.inference_mode] = []

    # -- replies ------------------------------------------------------------------------------------------

    def handle(self, conn: Connection, envelope: Any) -> None:
        message, received = wire_tensors.frames(conn, envelope, "the trusted process's request", self.spill)
        op = message.get("op") if isinstance(message, Mapping) else None
        for call in message.get("release", ()) if isinstance(message, Mapping) else ():
            self.calls.pop(call, None)
            self.graphs.pop(call, None)
        for handle in message.get("forget", ()) if isinstance(message, Mapping) else ():
            self.kept.pop(handle, None)
        try:
            for early in message.get("before", ()) if isinstance(message, Mapping) else ():
                getattr(self, f"_op_{early['op']}")(early, [])
            if op == "hello":
                reply, out = {"findings": self.findings, "load_error": self.load_error}, []
            elif op == "verify":
                reply, out = {"changed": self.verify() if self.verify is not None else []}, []
            elif self.impl is None:
                raise ImplementationError(self.load_error or "the implementation did not load")
            else:
                subject = self._subject(message)
                reply, out = getattr(self, f"_op_{op}")(message, received)
                if subject is not None:
                    reply, out = self._with_relatives(subject, reply, out)
        except ImplementationError as exc:
            wire_tensors.send(conn, {"error": ["ImplementationError", str(exc), ""]}, spill=self.spill)
            return
        except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit, KeyboardInterrupt included
            frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-3:])).rstrip()
            wire_tensors.send(conn, {"error": [type(exc).__name__, str(exc)[:20_000], frames[-4000:]]},
                              spill=self.spill)
            return
        wire_tensors.send(conn, {"ok": reply}, out, spill=self.spill)

    def _subject(self, message: Mapping[str, Any]) -> int | None:
        """The handle of the module a request acts on (a backward's: its call's), or None."""
        if message.get("op") in ("backward", "grad_backward"):
            kept = (self.calls if message["op"] == "backward" else self.graphs).get(int(message["call"]))
            return kept[0] if kept is not None else None
        handle = message.get("handle")
        return int(handle) if isinstance(handle, int) and not isinstance(handle, bool) else None

    def _with_relatives(self, handle: int, reply: dict[str, Any], out: list) -> tuple[dict[str, Any], list]:
        """The reply, with what moved in the modules deep-copied from or into `handle` (a copy whose closure reads and
        writes the original's tensors): beside the check the original shows it at once, so its mirror must too.
        Their tensors go last; the trusted side strips them before it reads the reply (Session.request)."""
        root = self.family.get(handle)
        relatives = sorted(g for g in self.families.get(root, ()) if g != handle) if root is not None else []
        if not relatives:
            return reply, out
        moved, values = [], []
        for g in relatives:
            changes, tensors = self._changes(g)
            if changes["listing"] is not None or changes["changed"]:
                moved.append([g, changes])
                values += tensors
        return ({**reply, "relatives": moved}, [*out, *values]) if moved else (reply, out)

    def _listing(self, handle: int) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """Every parameter and buffer (name, kind, requires_grad) with its value, and which of them the declaration
        names as γ, β and the family's running statistics."""
        assert self.impl is not None
        module = self.modules[handle]
        named = _named_state(module)
        by_id = {id(t): n for n, (_, t) in named.items()}

        def find(t: Any) -> str | None:
            return by_id.get(id(t)) if isinstance(t, torch.Tensor) else None

        # γ, β and the statistics under the paths the declaration gives them (a `params=` declaration's γ under
        # weight_attr), so the trusted side resolves them, and names them in its messages, as the plugin declared
        impl = self.impl
        weight, bias = impl.affine_tensors(module)  # a wrong params= declaration raises here, naming itself
        if not impl.bias:  # β by its path whatever `bias` declares: the trusted side's undeclared_bias reads it there
            bias = impl.undeclared_bias(module)
        if impl.params is not None:
            declared = impl.declared_params(module)
            targets: dict[str, Any] = {PARAMS_WEIGHT: declared[0], PARAMS_BIAS: declared[1]}
        else:
            targets = {impl.weight_attr: weight, impl.bias_attr: bias}
        for s in self.state_names[handle]:
            targets[f"{impl.state_attr}.{s}" if impl.state_attr else s] = impl.state_tensor(module, s)
        paths = {path: find(t) for path, t in targets.items()}
        unmirrored = [path for path, t in targets.items() if isinstance(t, torch.Tensor) and paths[path] is None]
        entries = [[n, kind, bool(t.requires_grad)] for n, (kind, t) in named.items()]
        self.held[handle] = {n: _snapshot(t) for n, (_, t) in named.items()}
        return {"state": entries, "paths": paths, "unmirrored": unmirrored}, [t for _, t in named.values()]

    # -- operations ---------------------------------------------------------------------------------------

    def _op_build(self, message: Mapping[str, Any], _: list[torch.Tensor | None]) -> tuple[dict[str, Any], list]:
        assert self.impl is not None
        seed = message.get("seed")
        with torch.random.fork_rng(devices=[]):  # the process's own RNG goes on as it was (the loopback shares it)
            if isinstance(seed, int) and not isinstance(seed, bool):
                # the check's seeding reaches the module's initialization (proxy.build_seed). The CPU generator
                # only, as fork_rng(devices=[]) restores only it: torch.manual_seed also queues a lazy seeding of
                # every accelerator, each capturing a formatted stack (1 ms a build, a quarter of this side's CPU)
                torch.default_generator.manual_seed(seed)
            module = self.impl.factory(int(message["num_features"]), **dict(message["params"]))
        if not isinstance(module, nn.Module):
            raise ImplementationError(f"implementation {self.impl.name!r}: factory returned "
                                      f"{type(module).__name__}, not an nn.Module")
        if message.get("to"):  # the conversion the trusted side asks right after the build (CheckContext.build)
            to = message["to"]
            module = module.to(device=to["device"], dtype=wire_tensors.DTYPES[to["dtype"]])
        if message.get("deploy"):
            # the item's deployment (CheckContext.build wraps last; wrapping swaps the class only, so here is the
            # same): every forward and backward of this module over there runs the deployed form
            from normbench import deploy

            self._op_prepare({"variant": message["deploy"]}, [])
            module = deploy.get(str(message["deploy"])).wrap(module)
        return self._register(module, list(message.get("state_names", [])))

    def _op_prepare(self, message: Mapping[str, Any], _: list[torch.Tensor | None]) -> tuple[dict[str, Any], list]:
        """A deployment's lazy imports loaded, once per process: sent before an item's first request (so, as beside
        the check, between two items, after the last one was verified)."""
        variant = str(message["variant"])
        if variant not in self.prepared:
            if self.prepare is not None:
                self.prepare(variant)
            else:
                from normbench.variants import prepare

                prepare(variant)
            self.prepared.add(variant)
            if variant == "compile":
                # this side keeps every call's graph for the backward the trusted side may ask later
                # (retain_graph=True), which a compiled backward with donated buffers refuses ("requires
                # create_graph=False and retain_graph=False"); donating only reuses the saved tensors' memory
                import torch._functorch.config

                torch._functorch.config.donated_buffer = False
        return {}, []

    def _register(self, module: nn.Module, state_names: list[str], copied_from: int | None = None
                  ) -> tuple[dict[str, Any], list]:
        """A module built or copied for the trusted side: its handle and its full listing."""
        handle = self.next_handle
        self.next_handle += 1
        self.modules[handle] = module
        self.state_names[handle] = state_names
        root = handle if copied_from is None else self.family.get(copied_from, copied_from)
        self.family[handle] = root
        self.families.setdefault(root, set()).add(handle)
        listing, values = self._listing(handle)
        return {"handle": handle, **listing, "training": module.training}, values

    def _op_copy(self, message: Mapping[str, Any], _: list[torch.Tensor | None]) -> tuple[dict[str, Any], list]:
        """copy.deepcopy of the remote module, as a check deep-copies the module it was given."""
        import copy

        handle = int(message["handle"])
        return self._register(copy.deepcopy(self.modules[handle]), self.state_names[handle], copied_from=handle)

    def _module(self, message: Mapping[str, Any]) -> nn.Module:
        return self.modules[int(message["handle"])]

    def _op_to(self, message: Mapping[str, Any], _: list[torch.Tensor | None]) -> tuple[dict[str, Any], list]:
        module = self._module(message)
        dtype = wire_tensors.DTYPES[message["dtype"]] if message.get("dtype") else None
        module.to(device=message.get("device"), dtype=dtype)
        return self._listing(int(message["handle"]))

    def _op_state_dict(self, message: Mapping[str, Any], _: list[torch.Tensor | None]
                       ) -> tuple[dict[str, Any], list]:
        """The module's own ``state_dict`` (its overrides and hooks run here), as plain tensors by key: per key, the
        listed tensor it is (keep_vars) or views whole (a detached parameter), so the trusted side can hand out its
        mirror there, as beside the check the entry is that tensor; and the metadata (versions) as plain data."""
        handle = int(message["handle"])
        keep_vars = bool(message.get("keep_vars"))
        state = self.modules[handle].state_dict(keep_vars=keep_vars)
        named = _named_state(self.modules[handle])
        entries, values, unmirrored = [], [], []
        for key, value in state.items():
            if type(value) not in (torch.Tensor, nn.Parameter):
                unmirrored.append(str(key))
                continue
            same = next((n for n, (_, t) in named.items() if value is t or (
                not keep_vars and value.data_ptr() == t.data_ptr() and value.dtype == t.dtype
                and value.shape == t.shape and value.stride() == t.stride())), None)
            entries.append([str(key), same])
            values.append(value.detach())
        metadata = getattr(state, "_metadata", None)
        return {"entries": entries, "unmirrored": unmirrored,
                "metadata": {str(k): dict(v) for k, v in metadata.items()} if metadata is not None else None}, values

    def _op_load_state_dict(self, message: Mapping[str, Any], received: list[torch.Tensor | None]
                            ) -> tuple[dict[str, Any], list]:
        """The module's own ``load_state_dict`` (its overrides and hooks run here) of the keys and tensors sent;
        replies with the state that moved, as a call does, and the keys it reports missing or unexpected."""
        handle = int(message["handle"])
        keys = list(message["keys"])
        state: OrderedDict[str, Any] = OrderedDict(zip(keys, received, strict=True))
        if message.get("metadata") is not None:
            state._metadata = OrderedDict(dict(message["metadata"]))  # type: ignore[attr-defined]
        result = self.modules[handle].load_state_dict(state, strict=bool(message["strict"]),
                                                      assign=bool(message["assign"]))
        changes, values = self._changes(handle)
        return {**changes, "missing_keys": list(result.missing_keys),
                "unexpected_keys": list(result.unexpected_keys)}, values

    def _op_attributes(self, message: Mapping[str, Any], _: list[torch.Tensor | None]
                       ) -> tuple[dict[str, Any], list]:
        """Every tensor the module and its submodules hold (normbench.remote.attributes), with its dtype."""
        found = tensor_attributes(self.modules[int(message["handle"])])
        return {"attributes": [[prefix, name, wire_tensors.dtype_name(dtype), registered]
                               for prefix, name, dtype, registered in found]}, []

    def _op_exported_graph(self, message: Mapping[str, Any], _: list[torch.Tensor | None]
                           ) -> tuple[dict[str, Any], list]:
        """What the ONNX graph the module last ran through is made of (normbench.deploy.export.last_export), as plain
        data: its op types, opset and export seconds; None before its first call under the export deployment."""
        from normbench.deploy.export import last_export

        graph = last_export(self._module(message))
        return {"graph": None if graph is None else {"ops": [str(op) for op in graph.ops], "opset": int(graph.opset),
                                                     "seconds": float(graph.seconds)}}, []

    def _op_train(self, message: Mapping[str, Any], _: list[torch.Tensor | None]) -> tuple[dict[str, Any], list]:
        self._module(message).train(bool(message["mode"]))
        return {}, []

    def _op_drop(self, message: Mapping[str, Any], _: list[torch.Tensor | None]) -> tuple[dict[str, Any], list]:
        if message.get("kept") == "all":  # the item is over: its inputs and outputs too
            self.kept.clear()
        for handle in message["handles"]:
            self.modules.pop(int(handle), None)
            self.held.pop(int(handle), None)
            self.state_names.pop(int(handle), None)
            root = self.family.pop(int(handle), None)
            if root is not None:
                self.families[root].discard(int(handle))
                if not self.families[root]:
                    del self.families[root]
            for call in [c for c, (h, *_) in self.calls.items() if h == int(handle)]:
                del self.calls[call]
            for call in [c for c, (h, *_) in self.graphs.items() if h == int(handle)]:
                del self.graphs[call]
        return {}, []

    def _op_sync(self, message: Mapping[str, Any], received: list[torch.Tensor | None]
                 ) -> tuple[dict[str, Any], list]:
        self._write(int(message["handle"]), message, received)
        return {}, []

    def _write(self, handle: int, message: Mapping[str, Any], received: list[torch.Tensor | None]) -> int:
        """Write what the trusted process changed, and the requires-grad flags; the count of tensors used."""
        module = self.modules[handle]
        sync = list(message["set"])
        replace, bump = set(message.get("replace") or ()), set(message.get("bump") or ())
        for name, value in zip(sync, received[:len(sync)], strict=True):
            assert value is not None
            _set_tensor(module, name, value, replace=name in replace, bump=name in bump)
        named = _named_state(module)
        held = self.held[handle]
        for name in sync:
            held[name] = _snapshot(named[name][1])
        for name, flag in dict(message["requires_grad"]).items():
            kind, t = named[name]
            if kind == "param" and t.requires_grad != bool(flag):
                t.requires_grad_(bool(flag))
        return len(sync)

    def _op_call(self, message: Mapping[str, Any], received: list[torch.Tensor | None]
                 ) -> tuple[dict[str, Any], list]:
        module = self._module(message)
        sent = iter(received[self._write(int(message["handle"]), message, received):])
        wants_grad = list(message["input_requires_grad"])
        leaves: list[torch.Tensor] = []
        for i, spec in enumerate(message["inputs"]):
            # the same tensor object as the last time the trusted side passed it, written in place with what the
            # check wrote into it since (normbench.remote.identity): a cache on id(x) or x.data_ptr() sees it as
            # it would beside the check
            handle = spec.get("h")
            if spec.get("new") or handle is None:
                t = next(sent)
                if handle is not None:
                    self.kept[int(handle)] = (t, None)
            else:
                if int(handle) not in self.kept:
                    raise RuntimeError(f"normbench: input {i} names a kept tensor {handle} this side does not hold")
                t = self.kept[int(handle)][0]
                if spec.get("write"):
                    value = next(sent)
                    with torch.no_grad():
                        (t if spec["write"] == "bump" else t.data).copy_(value)
            assert t is not None
            if t.requires_grad != bool(wants_grad[i]) and t.is_leaf:
                t.requires_grad_(bool(wants_grad[i]))
            leaves.append(t)

        def value(spec: Any) -> Any:
            return leaves[spec["t"]] if "t" in spec else spec["v"]

        args = [value(a) for a in message["args"]]
        kwargs = {k: value(v) for k, v in dict(message["kwargs"]).items()}
        # a module that writes into an input (a fused add + norm updating the residual in place) does it to the
        # trusted side's tensor too: each input is compared with what was received
        received_inputs = [(id(t), t.detach().clone()) for t in leaves]
        with self._modes_as_left(bool(message["inference"]), bool(message["grad"])):
            out = module(*args, **kwargs)
        outputs, what = _exactly_tensors(out)
        if outputs is None:
            raise ImplementationError(f"implementation {self.impl.name!r}: forward returned {what}, "  # type: ignore
                                      "not a Tensor")
        differentiable = [bool(o.requires_grad) for o in outputs]
        after = _named_state(module)
        if any(differentiable):
            params = [after[n][1] for n in message["differentiable_params"] if n in after]
            self.calls[int(message["call"])] = (int(message["handle"]), leaves + params, outputs, len(leaves))
            while len(self.calls) > KEPT_CALLS:
                self.calls.popitem(last=False)
        changes, values = self._changes(int(message["handle"]), after)
        written = [i for i, t in enumerate(leaves) if not _same(t, received_inputs[i])]
        # per output, what of the call it shares storage with: only this side can see it (normbench.remote.aliases)
        aliases = [[[i for i, t in enumerate(leaves) if storage_overlaps(o, t)],
                    [n for n, (_, t) in after.items() if storage_overlaps(o, t)]] for o in outputs]
        kept_changed = self._kept_changes(message, outputs)
        return {"tuple": isinstance(out, tuple | list), "differentiable": differentiable, "inputs_written": written,
                "aliases": aliases, "kept_changed": kept_changed,
                "is_input": [next((i for i, t in enumerate(leaves) if o is t), None) for o in outputs], **changes}, [
            *outputs, *values, *(leaves[i] for i in written), *(self.kept[h][0] for h in kept_changed)]

    @contextlib.contextmanager
    def _modes_as_left(self, inference: bool, grad: bool) -> Iterator[None]:
        """The call under the check's inference and grad modes, and after it each mode the forward switched as the
        forward left it.

        A forward that switches one and leaves it so (a torch.inference_mode() entered and kept alive, a bare
        torch.set_grad_enabled(False)) changes it for everything after it beside the check, where the verify after
        the item names it (tampering). The contexts here would undo it unseen on their exit, so what the forward
        switched is set again after them, for the verify to find. A mode it did not switch is left as the check's
        own context would leave it beside the check: as it was before the call (entering inference mode turns grad
        mode off; beside a check's no_grad(), the no_grad's exit turns it back on)."""
        before_grad = torch.is_grad_enabled()
        left = inference, grad
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                try:
                    yield
                finally:
                    left = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
        finally:
            if left[0] != inference and torch.is_inference_mode_enabled() != left[0]:
                # torch's guard restores the mode when it is freed: kept as long as this process (an item that
                # changed torch's state replaces it)
                mode = torch.inference_mode(left[0])
                mode.__enter__()
                self.modes_left.append(mode)
            wanted = left[1] if left[1] != grad else before_grad
            if torch.is_grad_enabled() != wanted:  # after the inference mode, which sets grad mode too
                torch.set_grad_enabled(wanted)

    def _write_kept(self, writes: list[Any], values: list[torch.Tensor | None]) -> None:
        """Kept inputs the check wrote into since, written in place (before a backward: its graph saved them)."""
        for spec, value in zip(writes, values, strict=True):
            handle = int(spec["h"])
            if handle not in self.kept or value is None:
                raise RuntimeError(f"normbench: a write into a kept tensor {handle} this side does not hold")
            t = self.kept[handle][0]
            with torch.no_grad():
                (t if spec.get("write") == "bump" else t.data).copy_(value)
            self.kept[handle] = (t, _snapshot(t))

    def _kept_changes(self, message: Mapping[str, Any], outputs: list[torch.Tensor]) -> list[int]:
        """The kept tensors that changed since the trusted side last heard of them (an output of an earlier call
        overwritten by this one, or one that is this call's input), but this call's inputs under the handles it
        passed them by (`inputs_written` says those); and this call's outputs kept."""
        mine = {int(spec["h"]) for spec in message["inputs"] if spec.get("h") is not None}
        changed = [h for h, (t, held) in self.kept.items()
                   if held is not None and h not in mine and not _same(t, held)]
        base = message.get("outputs_from")
        if base is not None:
            for j, o in enumerate(outputs):
                self.kept[int(base) + j] = (o, None)
        for h, (t, held) in self.kept.items():
            if held is None or h in mine or h in changed:
                self.kept[h] = (t, _snapshot(t))
        return changed

    def _changes(self, handle: int, named: dict[str, tuple[str, torch.Tensor]] | None = None
                 ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """The state that differs from what the trusted process holds: a full listing when the names changed
        (a buffer registered in forward), else the changed tensors by name. `named`: the state as just read."""
        named = _named_state(self.modules[handle]) if named is None else named
        held = self.held[handle]
        if list(named) != list(held):
            listing, values = self._listing(handle)
            return {"listing": listing, "changed": []}, values
        changed = [n for n, (_, t) in named.items() if not _same(t, held[n])]
        for n in changed:
            held[n] = _snapshot(named[n][1])
        return {"listing": None, "changed": changed}, [named[n][1] for n in changed]

    def _op_backward(self, message: Mapping[str, Any], received: list[torch.Tensor | None]
                     ) -> tuple[dict[str, Any], list]:
        call = int(message["call"])
        if call not in self.calls:
            raise RuntimeError("the forward call of this backward was released (normbench keeps the graphs of the "
                               f"last {KEPT_CALLS} calls)")
        handle, inputs, outputs, n_inputs = self.calls[call]
        needs = list(message["needs"])
        # `.grad` as the trusted side holds it: a backward that writes into it (BUGS.md: a gradient assigned
        # instead of accumulated, one written into a frozen γ) acts on the same value it would beside the check
        module = self.modules.get(handle)
        named = dict(module.named_parameters()) if module is not None else {}
        grad_names = [n for n in message.get("grad_names", []) if n in named]
        sent_grads = len(message.get("grad_names", []))
        present = received[len(outputs):len(outputs) + sent_grads]
        for name, held in zip(grad_names, present, strict=True):
            named[name].grad = held
        self._write_kept(message.get("inputs") or [], received[len(outputs) + sent_grads:])
        before = {n: (id(named[n].grad), None if named[n].grad is None else named[n].grad.clone())
                  for n in grad_names}
        upstream = received[:len(outputs)]
        graph = message.get("graph")
        if graph is not None:
            # create_graph=True: what the second-order gradients are asked in must be differentiable here (dy is a
            # fresh leaf; gradgradcheck differentiates in it)
            upstream = [g if g is None or not need else g.requires_grad_(True)
                        for g, need in zip(upstream, graph["needs"][:len(outputs)], strict=True)]
        # a backward that writes into the call's input or into the upstream gradient (BUGS.md: dy reused as scratch)
        # does it to the caller's tensors beside the check: written into the trusted side's too
        upstream_before = [None if g is None else (id(g), g.detach().clone()) for g in upstream]
        inputs_before = [(id(t), t.detach().clone()) for t in inputs[:n_inputs]]
        pairs = [(o, g) for o, g in zip(outputs, upstream, strict=True) if o.requires_grad]
        chosen = [t for t, need in zip(inputs, needs, strict=True) if need]
        grads = torch.autograd.grad([o for o, _ in pairs], chosen, [g for _, g in pairs], allow_unused=True,
                                    retain_graph=True, create_graph=graph is not None) if chosen else ()
        extra: dict[str, Any] = {}
        if graph is not None:
            it = iter(grads)
            firsts = [next(it) if need else None for need in needs]
            self.graphs[int(graph["id"])] = (handle, firsts, [*upstream, *inputs])
            while len(self.graphs) > KEPT_CALLS:
                self.graphs.popitem(last=False)
            extra["grad_differentiable"] = [g is not None and bool(g.requires_grad) for g in firsts]
        written = [n for n in grad_names if not _same_grad(named[n].grad, before[n])]
        inputs_written = [i for i, t in enumerate(inputs[:n_inputs]) if not _same(t, inputs_before[i])]
        rewritten = {id(inputs[i]) for i in inputs_written}
        for h, (t, _held) in self.kept.items():
            if id(t) in rewritten:  # sent back below: the trusted side holds it as it is now
                self.kept[h] = (t, _snapshot(t))
        upstream_written = [j for j, g in enumerate(upstream) if g is not None and upstream_before[j] is not None
                            and not _same(g, upstream_before[j])]
        it = iter(grads)
        # a backward may move state too (PowerNorm's gradient EMA): sent back like a forward's
        changes, values = self._changes(handle) if handle in self.modules else (
            {"listing": None, "changed": []}, [])
        return {**changes, **extra, "grads_written": written, "inputs_written": inputs_written,
                "upstream_written": upstream_written}, [
            *(next(it) if need else None for need in needs), *values, *(named[n].grad for n in written),
            *(inputs[i] for i in inputs_written), *(upstream[j] for j in upstream_written)]

    def _op_grad_backward(self, message: Mapping[str, Any], received: list[torch.Tensor | None]
                          ) -> tuple[dict[str, Any], list]:
        """The gradients of a create_graph=True backward's first-order gradients, by the gradients it is sent of
        them (one per first-order gradient): with respect to dy, the call's inputs and parameters, as `needs` asks.
        Written state (.grad, the inputs) is not watched here: no double backward in the wild writes it."""
        call = int(message["call"])
        if call not in self.graphs:
            raise RuntimeError("the create_graph backward of this second-order backward was released (normbench "
                               f"keeps the last {KEPT_CALLS})")
        handle, firsts, wrt = self.graphs[call]
        needs = list(message["needs"])
        pairs = [(f, g) for f, g in zip(firsts, received, strict=True)
                 if f is not None and f.requires_grad and g is not None]
        chosen = [i for i, (t, need) in enumerate(zip(wrt, needs, strict=True))
                  if need and t is not None and t.requires_grad]
        grads = torch.autograd.grad([f for f, _ in pairs], [wrt[i] for i in chosen], [g for _, g in pairs],
                                    allow_unused=True, retain_graph=True) if chosen and pairs else ()
        by_index = dict(zip(chosen, grads, strict=False))
        changes, values = self._changes(handle) if handle in self.modules else ({"listing": None, "changed": []}, [])
        return changes, [*(by_index.get(i) for i in range(len(needs))), *values]


def raise_remote(kind: str, message: str, frames: str) -> None:
    """Re-raise an exception of the plugin's process in the trusted one: the same class name (a built-in's
    subclass where it names a built-in exception), the message and where it happened, so a summary reads as it
    did when the check ran beside the plugin."""
    if kind == "ImplementationError":
        raise ImplementationError(message)
    base = getattr(builtins, kind, None)
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base = RuntimeError
    cls = type(kind if kind.isidentifier() else "PluginError", (RemoteError, base), {})
    raise cls(message, frames)


class RemoteError(Exception):
    """An exception raised by plugin code in the plugin's process; `frames` says where."""

    def __init__(self, message: str, frames: str = "") -> None:
        super().__init__(message)
        self.frames = frames
