"""The trusted process's side of the request protocol: a module that lives in the plugin's process, used here.

`RemoteModule` is an ``nn.Module`` whose parameters and buffers are the trusted process's own copies of the
remote module's. Its forward sends the input tensors (with their strides), the parameters and buffers a check
changed since the last call and the requires-grad flags to the plugin's process (normbench.remote.server), and
returns what came back as fresh tensors it allocated; a backward through it sends the output gradients and
returns the input and parameter gradients the same way (one custom autograd Function per call). So a check runs
here unchanged: it builds, randomizes, calls, differentiates and compares as it would beside the plugin, and every
tensor it compares is data it received and copied.

What the proxy cannot mirror is refused loudly (`Unmirrored`), never approximated: a γ that is not a registered
parameter or buffer, a conversion other than ``.to(dtype / device)``, a third-order gradient, a state_dict entry
that is not a tensor. A second-order gradient is the plugin's double backward, run over there (`_RemoteGrad`). A
deepcopy, ``state_dict`` and ``load_state_dict`` are the plugin's module's own, run over there (module_hygiene
judges exactly that machinery).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normbench import deploy, wire
from normbench.deploy import DeploymentUnavailable
from normbench.deploy.export import ExportedGraph
from normbench.implementation import Implementation
from normbench.item_clock import ItemClock
from normbench.remote import aliases
from normbench.remote import tensors as wire_tensors
from normbench.remote.identity import KeptTensors, ProtocolViolation
from normbench.remote.server import PARAMS_BIAS, PARAMS_WEIGHT, _same, _snapshot, raise_remote


class ChildLost(BaseException):  # noqa: N818 - not an Exception: no check's `except Exception` may swallow it
    """The plugin's process died, hung past the item's deadline or broke the protocol: no verdict."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Unmirrored(BaseException):  # noqa: N818 - not an Exception: the item falls back, never errs on it
    """The item needs something of the module the request protocol does not carry: it is judged beside the
    plugin instead (as every item was before the trusted judge), and its outcome says so."""


class Session:
    """One connection to a plugin's process, with the clock of the item being judged (normbench.item_clock)."""

    def __init__(self, conn: Connection, clock: ItemClock, spill: Path | None = None) -> None:
        self.conn = conn
        self.spill = spill
        self.clock = clock
        self.calls = itertools.count()
        #: calls whose graph the trusted side dropped: the plugin's side may drop theirs (said with the next request;
        #: a finalizer may run in the middle of another request, so it never writes to the pipe itself)
        self.released: list[int] = []
        self.pending: list[dict[str, Any]] = []
        #: the item's inputs and outputs kept over there, by handle: an input's identity across calls
        self.kept = KeptTensors()
        #: the modules built or copied over there, by the handle the plugin's side gave them (weak: a module the
        #: check dropped needs no news), and every handle ever given, to tell a stranger from a module gone here
        self.modules: weakref.WeakValueDictionary[int, RemoteModule] = weakref.WeakValueDictionary()
        self.issued: set[int] = set()
        #: whether a module of this session was deployed over there (torch.compile): only then may a reply say the
        #: deployment is unavailable (a skip), as normbench.deploy says it beside the check
        self.deployed = False

    def request(self, message: dict[str, Any], tensors: list[torch.Tensor | None] = (),  # type: ignore[assignment]
                keep_strides: bool = False) -> tuple[dict[str, Any], list[torch.Tensor | None]]:
        where = f"its reply to {message.get('op')!r}"
        if self.released:
            message = {**message, "release": self.released}
            self.released = []
        forgotten = self.kept.take_forgotten()
        if forgotten:
            message = {**message, "forget": forgotten}
        if self.pending:
            # what needs no reply (a mode switch) goes with the next request, done over there before it
            message = {**message, "before": self.pending}
            self.pending = []
        try:
            wire_tensors.send(self.conn, message, tensors, keep_strides, self.spill)
            if not self.clock.wait(self.conn):
                raise ChildLost("timeout", f"no reply within the item's time limit ({self.clock.describe()})")
            reply, received = wire_tensors.receive(self.conn, where, self.spill)
        except wire.ProtocolError as exc:
            raise ChildLost("protocol", str(exc)) from None
        except (EOFError, OSError) as exc:
            raise ChildLost("died", f"{type(exc).__name__}") from None
        if not isinstance(reply, dict) or len(reply) != 1:
            raise ChildLost("protocol", f"{where}: neither ok nor error")
        if "error" in reply:
            error = reply["error"]
            if not (isinstance(error, list) and len(error) == 3 and all(isinstance(e, str) for e in error)):
                raise ChildLost("protocol", f"{where}: a malformed error")
            kind, text = wire.text(error[0], "the error's type", 100), wire.text(error[1], "the error")
            if kind == DeploymentUnavailable.__name__ and self.deployed:
                # torch.compile failed where the eager forward runs (normbench.deploy.compile): an explained skip, as
                # beside the check. The plugin's side can claim it; a claim skips the item, it never passes it
                raise DeploymentUnavailable(text)
            raise_remote(kind, text, wire.text(error[2], "the traceback"))
        body = reply.get("ok")
        if not isinstance(body, dict):
            raise ChildLost("protocol", f"{where}: a reply without a body")
        if "relatives" in body:
            received = self._take_relatives(body.pop("relatives"), received, where)
        return body, received

    def _take_relatives(self, relatives: Any, received: list[torch.Tensor | None], where: str
                        ) -> list[torch.Tensor | None]:
        """What moved in the modules deep-copied from or into the one the request acted on (their tensors close the
        reply), written into their mirrors; the rest of the reply's tensors. A hostile plugin's side can only write
        here what a module it built or copied for this item holds, as `_take_changes` checks it: what a copy sharing
        state with its original would show beside the check, and no other tensor of the trusted process."""
        try:
            counts = [len(c["listing"]["state"]) if c.get("listing") is not None else len(c.get("changed") or [])
                      for _, c in relatives]
            handles = [int(h) for h, _ in relatives]
        except (TypeError, ValueError, KeyError, AttributeError):
            raise ChildLost("protocol", f"{where}: malformed changes of related modules") from None
        total = sum(counts)
        if total > len(received):
            raise ChildLost("protocol", f"{where}: related modules' changes without their tensors")
        rest, tail = received[:len(received) - total], received[len(received) - total:]
        for handle, (_, changes), n in zip(handles, relatives, counts, strict=True):
            values, tail = tail[:n], tail[n:]
            if handle not in self.issued:
                raise ChildLost("protocol", f"{where}: changes of a module {handle} this item never built")
            module = self.modules.get(handle)
            if module is not None:  # gone here since: nobody can see it change
                module._take_changes(changes, values)
        return rest


def _shape(t: torch.Tensor | None) -> str:
    return "missing tensor" if t is None else f"tensor of shape {list(t.shape)}"


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return -1


def _name(remote: str) -> str:
    """A remote parameter's dotted name as one attribute name of the proxy ('.' cannot be one)."""
    return remote.replace(".", "::")


class _Path:
    """A step of a declared dotted path (``norm.weight``, ``bn.running_mean``) below the proxy."""

    def __init__(self, module: RemoteModule, prefix: str) -> None:
        self._module = module
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._module._step(f"{self._prefix}.{name}")


class RemoteModule(nn.Module):
    """A module built and run in the plugin's process, with its parameters and buffers mirrored here."""

    def __init__(self, session: Session, impl_name: str, request: dict[str, Any]) -> None:
        super().__init__()
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_impl_name", impl_name)
        body, values = session.request(request)
        object.__setattr__(self, "_handle", int(body["handle"]))
        session.issued.add(self._handle)
        session.modules[self._handle] = self
        self._adopt(body, values)
        self.training = bool(body.get("training", True))

    def __deepcopy__(self, memo: dict[int, Any]) -> RemoteModule:
        """The plugin's module deep-copied over there (with what a check wrote here sent first), mirrored anew."""
        self.__dict__.pop("_converted", None)
        self._sync_only()
        copied = RemoteModule(self._session, self._impl_name, {"op": "copy", "handle": self._handle})
        memo[id(self)] = copied
        return copied

    def __repr__(self) -> str:
        return f"RemoteModule({self._impl_name!r}, handle={self._handle})"

    # -- the mirror ---------------------------------------------------------------------------------------

    def _adopt(self, listing: Mapping[str, Any], values: list[torch.Tensor | None]) -> None:
        """Take the remote module's full state: every tensor replaced, aliases and versions recorded."""
        if listing.get("unmirrored"):
            raise Unmirrored(f"implementation {self._impl_name!r}: its {', '.join(listing['unmirrored'])} is not a "
                             "registered parameter or buffer, which the trusted process cannot mirror")
        self._parameters.clear()
        self._buffers.clear()
        remote: dict[str, str] = {}
        for (name, kind, requires_grad), value in zip(listing["state"], values, strict=True):
            assert value is not None
            local = _name(str(name))
            remote[local] = str(name)
            if kind == "param":
                self._parameters[local] = nn.Parameter(value, requires_grad=bool(requires_grad))
            else:
                self._buffers[local] = value
        object.__setattr__(self, "_remote", remote)
        paths = listing.get("paths") or {}
        if not (isinstance(paths, dict) and all(v is None or (isinstance(v, str) and _name(v) in remote)
                                                for v in paths.values())):
            raise ChildLost("protocol", "a listing whose declared paths name tensors it does not list")
        object.__setattr__(self, "_paths", {str(k): v for k, v in paths.items()})
        self._mark_synced()

    def _take_changes(self, body: Mapping[str, Any], values: list[torch.Tensor | None]) -> None:
        """State the remote module moved in a forward or a backward, written into the mirror."""
        if body.get("listing") is not None:
            self._adopt(body["listing"], values)
            return
        changed = body.get("changed") or []
        if len(changed) != len(values):
            raise ChildLost("protocol", "a reply whose changed state does not match its tensors")
        with torch.no_grad():
            for name, value in zip(changed, values, strict=True):
                if value is None or _name(str(name)) not in self._remote:
                    raise ChildLost("protocol", f"a reply that changes an unknown tensor {str(name)[:80]!r}")
                local = self._tensor(str(name))
                if local.dtype == value.dtype and local.shape == value.shape:
                    local.copy_(value)
                else:
                    local.data = value
        self._mark_synced([(_name(str(n)), self._tensor(str(n))) for n in changed])

    def _tensor(self, remote_name: str) -> torch.Tensor:
        local = _name(remote_name)
        return self._parameters.get(local) if local in self._parameters else self._buffers[local]  # type: ignore

    def _step(self, path: str) -> Any:
        paths = self.__dict__.get("_paths", {})
        if path in paths:
            if paths[path] is None:
                raise AttributeError(path)
            return self._tensor(paths[path])
        if any(p.startswith(path + ".") for p in paths):
            return _Path(self, path)
        raise AttributeError(path)

    def __getattr__(self, name: str) -> Any:
        # the declared paths first: the plugin's own names for γ, β and the statistics, resolved on the mirror
        if not name.startswith("_"):
            try:
                return self._step(name)
            except AttributeError:
                pass
        return super().__getattr__(name)

    def _local_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self._parameters.items()  # type: ignore[misc]
        yield from self._buffers.items()  # type: ignore[misc]

    def _mark_synced(self, held: Iterable[tuple[str, torch.Tensor]] | None = None) -> None:
        """Record what the plugin's side now holds: every tensor of the mirror, or the (name, tensor) pairs just sent
        or received (a backward's may be a functional_call's substitutes, which the mirror does not hold)."""
        if held is None:
            object.__setattr__(self, "_synced", {n: _snapshot(t) for n, t in self._local_tensors()})
            object.__setattr__(self, "_versions", {n: _version(t) for n, t in self._local_tensors()})
            return
        for n, t in held:
            self._synced[n] = _snapshot(t)
            self._versions[n] = _version(t)

    def _state_fields(self, held: list[tuple[str, torch.Tensor]], replaced: list[str]) -> dict[str, list[str]]:
        """The fields of a request that write `held` over there (its tensors ride with it, in that order): `replaced`
        by a new object, as a check replaced them here (``module.weight = nn.Parameter(...)``), so a module that
        kept a reference to the old one is caught as it would be here; and bumped, those an in-place op wrote (their
        version moved), written the same way over there. The others were written through ``.data`` (gradcheck's
        perturbations), which a graph that saved them does not notice: over there too."""
        versions = self._versions
        return {"set": [self._remote[n] for n, _ in held], "replace": [self._remote[n] for n in replaced],
                "bump": [self._remote[n] for n, t in held if versions.get(n) != _version(t)]}

    def _dirty(self) -> list[str]:
        """What differs from what the plugin's side holds, bitwise: versions are not enough (gradcheck perturbs
        its inputs through ``.data``, which bumps no version counter)."""
        synced = self._synced
        return [n for n, t in self._local_tensors() if n not in synced or not _same(t, synced[n])]

    def _replaced(self, dirty: list[str]) -> list[str]:
        """Of the dirty tensors, those a check replaced by another object."""
        synced = self._synced
        tensors = dict(self._local_tensors())
        return [n for n in dirty if n in synced and synced[n][0] != id(tensors[n])]

    # -- what a check does to a module --------------------------------------------------------------------

    def to(self, *args: Any, **kwargs: Any) -> RemoteModule:  # type: ignore[override]
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        done = self.__dict__.pop("_converted", None)
        if done is not None and (device is None or torch.device(device) == done[0]) and dtype == done[1] \
                and not self._dirty():
            return self  # built and converted in one request (RemoteFactory.converting), nothing moved since
        self._sync_only()
        body, values = self._session.request({"op": "to", "handle": self._handle,
                                              "dtype": None if dtype is None else wire_tensors.dtype_name(dtype),
                                              "device": None if device is None else str(device)})
        self._adopt(body, values)
        return self

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "",  # type: ignore[override]
                   keep_vars: bool = False) -> dict[str, Any]:
        """The plugin's module's own ``state_dict``, taken over there (its overrides and hooks run, a
        non-persistent buffer is left out), crossing as plain tensors by key. An entry that over there is one of
        the module's listed tensors (keep_vars) or a whole view of one (a detached parameter) is the mirror's here,
        as beside the check it would be that tensor, so ``id`` and in-place writes behave as they would there.

        What a hostile plugin's side can forge: which tensors its module persists. An entry said to be a listed
        tensor must hold that tensor's very bits (else a protocol error); one that lists a tensor the module does
        not persist, or leaves out one it does, describes a module that persists it, and its load into a fresh
        module (load_state_dict, over there) and the outputs after it must then agree: a module that behaves so in
        everything the trusted process observes, the harness-detecting plugin's case, not a forged verdict."""
        if args or destination is not None or prefix:
            raise Unmirrored(f"implementation {self._impl_name!r}: a state_dict into a destination or under a prefix "
                             "is not carried to the plugin's process")
        self._sync_only()
        body, values = self._session.request({"op": "state_dict", "handle": self._handle,
                                              "keep_vars": bool(keep_vars)})
        if body.get("unmirrored"):
            raise Unmirrored(f"implementation {self._impl_name!r}: its state_dict holds "
                             f"{', '.join(str(k)[:80] for k in body['unmirrored'][:8])}, not tensors, which the "
                             "trusted process cannot carry")
        entries = body.get("entries")
        if not (isinstance(entries, list) and len(entries) == len(values) and all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                and (e[1] is None or isinstance(e[1], str)) for e in entries)):
            raise ChildLost("protocol", "a state_dict reply whose entries do not match its tensors")
        out: OrderedDict[str, Any] = OrderedDict()
        for (key, same), value in zip(entries, values, strict=True):
            if value is None:
                raise ChildLost("protocol", f"a state_dict reply without the tensor of {key[:80]!r}")
            if same is not None:
                if _name(same) not in self._remote:
                    raise ChildLost("protocol", f"a state_dict entry {key[:80]!r} said to be a tensor the module "
                                                f"does not list: {same[:80]!r}")
                local = self._tensor(same)
                if not _same(local, (id(local), value)):
                    raise ChildLost("protocol", f"a state_dict entry {key[:80]!r} said to be {same[:80]!r} but not "
                                                "holding its value")
                value = local if keep_vars else local.detach()
            out[key] = value
        metadata = body.get("metadata")
        if metadata is not None:
            out._metadata = _plain_metadata(metadata)  # type: ignore[attr-defined]
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,  # type: ignore[override]
                        assign: bool = False) -> Any:
        """The plugin's module's own ``load_state_dict`` of these tensors, run over there (its overrides and
        hooks run: a module that refreshes a cache on load is judged as it is), after what the check wrote here
        since; the state that moved comes back as a call's does. An error over there is raised here as the check
        would see it beside the plugin. A hostile plugin's side can only send back state of this module, checked
        as every call's (`_take_changes`)."""
        from torch.nn.modules.module import _IncompatibleKeys

        keys, tensors = [], []
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise Unmirrored(f"implementation {self._impl_name!r}: a state_dict entry {str(key)[:80]!r} that is "
                                 f"a {type(value).__name__}, not a tensor, is not carried to the plugin's process")
            keys.append(str(key))
            tensors.append(value.detach())
        metadata = getattr(state_dict, "_metadata", None)
        self._sync_only()
        body, values = self._session.request(
            {"op": "load_state_dict", "handle": self._handle, "keys": keys, "strict": bool(strict),
             "assign": bool(assign), "metadata": None if metadata is None else _plain_metadata(metadata)}, tensors)
        self._take_changes(body, values)
        missing, unexpected = body.get("missing_keys"), body.get("unexpected_keys")
        if not all(isinstance(k, list) and all(isinstance(n, str) for n in k) for k in (missing, unexpected)):
            raise ChildLost("protocol", "a load_state_dict reply whose missing or unexpected keys are not names")
        return _IncompatibleKeys(missing, unexpected)

    def tensor_attributes(self) -> list[tuple[str, str, torch.dtype, str | None]]:
        """normbench.remote.attributes.tensor_attributes of the plugin's module, scanned over there (plain tensor
        attributes are not mirrored). Every registered tensor of the report must be one the mirror lists, with the
        mirror's dtype, and every tensor the mirror lists must be reported: what the report can still leave out is
        a plain attribute (normbench.remote.attributes says what that costs)."""
        self._sync_only()
        body, _ = self._session.request({"op": "attributes", "handle": self._handle})
        found = body.get("attributes")
        if not (isinstance(found, list) and all(
                isinstance(a, list) and len(a) == 4 and all(isinstance(v, str) for v in a[:3])
                and (a[3] is None or isinstance(a[3], str)) for a in found)):
            raise ChildLost("protocol", "an attributes reply that is not [prefix, name, dtype, registered] entries")
        out: list[tuple[str, str, torch.dtype, str | None]] = []
        for prefix, name, dtype_name, registered in found:
            dtype = getattr(torch, dtype_name, None)
            if not isinstance(dtype, torch.dtype):
                raise ChildLost("protocol", f"an attributes reply with a dtype {dtype_name[:40]!r}")
            if registered is not None and _name(registered) in self._remote \
                    and self._tensor(registered).dtype != dtype:
                raise ChildLost("protocol", f"an attributes reply that says {registered[:80]!r} is {dtype_name} while "
                                            f"it lists it as {self._tensor(registered).dtype}")
            out.append((prefix, name, dtype, registered))
        reported = {_name(r) for *_, r in out if r is not None}
        unreported = [self._remote[n] for n in self._remote if n not in reported]
        if unreported:
            raise ChildLost("protocol", f"an attributes reply that leaves out {', '.join(unreported)[:200]}, which "
                                        "the module lists")
        return out

    def exported_graph(self) -> ExportedGraph | None:
        """normbench.deploy.export.last_export of the plugin's module, over there: the op types, opset and export
        seconds of the ONNX graph it last ran through, as plain data (no session crosses). What the reply can forge
        is the graph's description, which export_ops reports and never judges."""
        body, _ = self._session.request({"op": "exported_graph", "handle": self._handle})
        graph = body.get("graph")
        if graph is None:
            return None
        ops, opset, seconds = (graph.get(k) for k in ("ops", "opset", "seconds")) if isinstance(graph, dict) \
            else (None, None, None)
        if not (isinstance(ops, list) and len(ops) <= 10_000 and all(isinstance(op, str) and len(op) <= 200
                                                                     for op in ops)
                and type(opset) is int and 0 < opset < 1000 and type(seconds) is float and 0 <= seconds < 1e6):
            raise ChildLost("protocol", "an exported_graph reply that is not {ops: [op type], opset: int, "
                                        "seconds: float}")
        return ExportedGraph(session=None, input_names=[], state_names=[], ops=tuple(ops), opset=opset,
                             seconds=seconds)

    def _apply(self, fn: Any, recurse: bool = True) -> RemoteModule:  # type: ignore[override]
        raise Unmirrored(f"implementation {self._impl_name!r}: a conversion other than .to(dtype / device) is not "
                         "carried to the plugin's process")

    def train(self, mode: bool = True) -> RemoteModule:
        self.__dict__.pop("_converted", None)
        self._session.pending.append({"op": "train", "handle": self._handle, "mode": bool(mode)})
        self.training = bool(mode)
        return self

    def _sync_only(self) -> None:
        """Send what a check wrote into the mirror (nothing else moves): with the next call, or before `.to`."""
        if self._dirty():
            params = list(self._parameters.items())
            _Call(self, [], {}, [], [n for n, _ in params], False, sync_only=True).run(
                [], [p for _, p in params], needs=None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.__dict__.pop("_converted", None)
        return self._call(list(args), dict(kwargs))

    def _call(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        inputs: list[torch.Tensor] = []

        def spec(value: Any) -> dict[str, Any]:
            if isinstance(value, torch.Tensor):
                inputs.append(value)
                return {"t": len(inputs) - 1}
            return {"v": value}

        arg_specs = [spec(a) for a in args]
        kwarg_specs = {k: spec(v) for k, v in kwargs.items()}
        params = list(self._parameters.items())
        grad = torch.is_grad_enabled()
        differentiable = grad and (any(t.requires_grad for t in inputs) or any(p.requires_grad for _, p in params))
        call = _Call(self, arg_specs, kwarg_specs, inputs, [n for n, _ in params], grad)
        if not differentiable:
            result = call.run(inputs, [p for _, p in params], needs=None)
        else:
            outputs = _RemoteFunction.apply(call, *inputs, *(p for _, p in params))
            result = tuple(outputs) if call.is_tuple else outputs[0]
        with torch.no_grad():
            for i, value in call.written:
                inputs[i].copy_(value)  # what the module wrote into its input, written into the caller's
        self._session.kept.settle(inputs)
        if not differentiable and any(i is not None for i in call.is_input):
            result = self._returned_inputs(result, call, inputs)
        # the outputs are the very objects call.run made (autograd returns a custom Function's new outputs as they are)
        for output, (shared_inputs, shared_state) in zip(result if call.is_tuple else (result,), call.aliases,
                                                          strict=True):
            aliases.record(output, [inputs[i] for i in shared_inputs] + [self._tensor(n) for n in shared_state])
        return result

    def _returned_inputs(self, result: Any, call: _Call, inputs: list[torch.Tensor]) -> Any:
        """Outside autograd, an output that over there is the very tensor passed as an input is that input here too
        (a module that normalizes x in place and returns it): beside the check it would be, so a later in-place
        update of x shows in it at once. Its bytes must be the input's as written back."""
        outputs = list(result) if call.is_tuple else [result]
        for j, i in enumerate(call.is_input):
            if i is None:
                continue
            if not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(inputs)
                    and _same(inputs[i], (id(inputs[i]), outputs[j]))):
                raise ChildLost("protocol", f"a reply whose output {j} is said to be input {str(i)[:20]} but is not "
                                            "that input as written back")
            outputs[j] = inputs[i]
        return tuple(outputs) if call.is_tuple else outputs[0]


def _plain_metadata(metadata: Any) -> OrderedDict[str, dict[str, Any]]:
    """A state_dict's ``_metadata`` (per submodule prefix, its class's version) as plain data, or a protocol error:
    it crosses in both directions, and nothing else may ride on it."""
    plain = (int, float, str, bool, type(None))
    if not (isinstance(metadata, Mapping) and all(
            isinstance(k, str) and isinstance(v, Mapping) and all(isinstance(a, str) and type(b) in plain
                                                                  for a, b in v.items())
            for k, v in metadata.items())):
        raise ChildLost("protocol", "a state_dict whose metadata is not plain names and values")
    return OrderedDict((k, dict(v)) for k, v in metadata.items())


def drop_all(session: Session) -> None:
    """Free every module this item built or copied over there, in one request (an item builds a dozen)."""
    if not session.issued:
        return
    try:
        session.request({"op": "drop", "handles": sorted(session.issued), "kept": "all"})
    except (ChildLost, RuntimeError):
        pass


class _Call:
    """One forward request, and the backward of the same call."""

    def __init__(self, module: RemoteModule, args: list[Any], kwargs: dict[str, Any], inputs: list[torch.Tensor],
                 param_names: list[str], grad: bool, sync_only: bool = False) -> None:
        self.module = module
        self.args = args
        self.kwargs = kwargs
        self.n_inputs = len(inputs)
        self.param_names = param_names
        self.grad = grad
        self.sync_only = sync_only
        self.id = next(module._session.calls)
        self.is_tuple = False
        self.written: list[tuple[int, torch.Tensor | None]] = []
        #: per output, the inputs (by index) and the state (by remote name) it shared storage with over there
        self.aliases: list[tuple[list[int], list[str]]] = []
        #: per output, the index of the input it is over there (the same tensor object), or None
        self.is_input: list[Any] = []
        #: the caller's inputs, for what a backward writes into them over there (weak: the graph must not keep them)
        self.inputs = [weakref.ref(t) for t in inputs]
        #: the parameters the call used (a functional_call's substitutes among them), for what the check writes into
        #: them before the call's backward (weak, as the inputs)
        self.params: list[weakref.ref[torch.Tensor]] = []

    def run(self, inputs: list[torch.Tensor], params: list[torch.Tensor], needs: list[bool] | None) -> list[Any]:
        module = self.module
        self.params = [weakref.ref(p) for p in params]
        dirty = module._dirty()
        tensors = dict(module._local_tensors())
        kept = module._session.kept
        # each input by its handle: sent once, then only what the check wrote into it (normbench.remote.identity)
        passed = [kept.input(t) for t in inputs]
        base = None if self.sync_only else kept.reserve_outputs()
        held = [(n, tensors[n]) for n in dirty]
        message = {"op": "call", "inputs": [spec for spec, _ in passed], "outputs_from": base,
                   "handle": module._handle, "call": self.id, **module._state_fields(held, module._replaced(dirty)),
                   "requires_grad": {module._remote[n]: bool(p.requires_grad) for n, p in zip(
                       self.param_names, params, strict=True)},
                   "input_requires_grad": [bool(needs[i]) if needs is not None else False
                                           for i in range(self.n_inputs)],
                   "differentiable_params": [module._remote[n] for n in self.param_names],
                   "args": self.args, "kwargs": self.kwargs, "grad": self.grad,
                   "inference": torch.is_inference_mode_enabled()}
        if self.sync_only:
            message["op"] = "sync"
        sent = [t.detach() for _, t in held] + [t.detach() for t, (_, send) in zip(inputs, passed, strict=True) if send]
        body, received = module._session.request(message, sent, keep_strides=True)
        module._mark_synced(held)
        if self.sync_only:
            return []
        outputs = received[:len(body["differentiable"])]
        self.is_tuple = bool(body["tuple"])
        self.differentiable = [bool(d) for d in body["differentiable"]]
        written = [int(i) for i in body.get("inputs_written") or []]
        changed_kept = body.get("kept_changed") or []
        cut = len(received) - len(written) - (len(changed_kept) if isinstance(changed_kept, list) else 0)
        if cut < len(outputs) or any(not 0 <= i < self.n_inputs for i in written):
            raise ChildLost("protocol", "a reply whose written inputs do not match its tensors")
        module._take_changes(body, received[len(outputs):cut])
        self.written = list(zip(written, received[cut:cut + len(written)], strict=True))
        try:
            kept.take_changes(changed_kept, received[cut + len(written):])
        except ProtocolViolation as exc:
            raise ChildLost("protocol", str(exc)) from None
        assert base is not None
        kept.adopt_outputs(base, [o for o in outputs if o is not None])
        self.aliases = self._aliases(body.get("aliases"), len(outputs))
        is_input = body.get("is_input") or [None] * len(outputs)
        if not (isinstance(is_input, list) and len(is_input) == len(outputs)):
            raise ChildLost("protocol", "a reply that does not say, per output, whether it is an input")
        self.is_input = is_input
        if needs is None and not self.is_tuple:
            return outputs[0]  # type: ignore[return-value]
        return tuple(outputs) if needs is None else outputs  # type: ignore[return-value]

    def _aliases(self, reported: Any, n_outputs: int) -> list[tuple[list[int], list[str]]]:
        """The reply's `aliases`, checked: per output, indices of this call's inputs and names of the module's state
        (normbench.remote.aliases says why a plugin gains nothing by lying here)."""
        known = self.module._remote.values()
        if not (isinstance(reported, list) and len(reported) == n_outputs and all(
                isinstance(a, list) and len(a) == 2 and isinstance(a[0], list) and isinstance(a[1], list)
                for a in reported)):
            raise ChildLost("protocol", f"a reply whose aliases are not one [inputs, state] pair per output "
                                        f"({n_outputs})")
        out = []
        for shared_inputs, shared_state in reported:
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.n_inputs
                       for i in shared_inputs):
                raise ChildLost("protocol", f"a reply whose aliases name an input the call did not have: "
                                            f"{str(shared_inputs)[:80]} of {self.n_inputs}")
            if not all(isinstance(n, str) and n in known for n in shared_state):
                raise ChildLost("protocol", f"a reply whose aliases name a tensor the module does not list: "
                                            f"{str(shared_state)[:80]}")
            out.append((list(shared_inputs), list(shared_state)))
        return out

    def carry_param_writes(self) -> None:
        """Before a backward of this call: what the check wrote since into the parameters the call used, where the
        plugin's side still holds them as the same objects. gradcheck perturbs γ through ``.data`` and restores it
        after its last forward: beside the check the graph saved that very tensor, so its backward reads the restored
        γ, and over there the saved γ must be written back too (without this, a float64 backward read γ + eps·u,
        a 1e-6 relative error that only the full-mode tolerance hid)."""
        module = self.module
        synced = module._synced
        used = [(n, ref()) for n, ref in zip(self.param_names, self.params, strict=True)]
        written = [(n, t) for n, t in used
                   if t is not None and n in synced and synced[n][0] == id(t) and not _same(t, synced[n])]
        if not written:
            return
        # `_op_sync` writes each named tensor in place (``.data`` where the version did not move, as here), never
        # replacing it: the graph over there saved the object the plugin's module holds under that name
        module._session.request({"op": "sync", "handle": module._handle, **module._state_fields(written, []),
                                 "requires_grad": {}}, [t.detach() for _, t in written], keep_strides=True)
        module._mark_synced(written)

    def backward(self, grads: tuple[torch.Tensor, ...], needs: list[bool], graph: dict[str, Any] | None = None
                 ) -> list[torch.Tensor | None]:
        """The plugin's backward of this call. `graph` (a create_graph=True backward): the gradients are kept over
        there with their graph, under `graph["id"]`, for a later `_RemoteGrad.backward`; `graph["needs"]` says which
        of dy, the inputs and the parameters that graph must reach. Which returned gradient is differentiable over
        there is left in `self.grad_differentiable`."""
        module = self.module
        self.carry_param_writes()
        params = dict(module._parameters)
        held = [(module._remote[n], params[n].grad) for n in self.param_names if n in params]
        # what the check wrote into the call's inputs since (gradcheck restores x after its perturbations, through
        # .data): beside the check the graph's saved x is that very tensor, so over there it is written first too
        kept = module._session.kept
        live = [t for t in (ref() for ref in self.inputs) if t is not None]
        writes = [(t, w) for t, w in ((t, kept.written_since(t)) for t in live) if w is not None]
        body, received = module._session.request(
            {"op": "backward", "call": self.id, "needs": needs, "grad_names": [n for n, _ in held],
             "inputs": [w for _, w in writes], "graph": graph},
            [*grads, *(None if g is None else g.detach() for _, g in held), *(t.detach() for t, _ in writes)],
            keep_strides=True)
        kept.settle([t for t, _ in writes])
        if graph is not None:
            flags = body.get("grad_differentiable")
            if not (isinstance(flags, list) and len(flags) == len(needs) and all(isinstance(f, bool) for f in flags)):
                raise ChildLost("protocol", "a create_graph backward reply that does not say, per gradient, whether "
                                            "it is differentiable")
            self.grad_differentiable = flags
        written = [str(n) for n in body.get("grads_written") or []]
        inputs_written, upstream_written = body.get("inputs_written") or [], body.get("upstream_written") or []
        if not (all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.n_inputs for i in inputs_written)
                and all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < len(grads)
                        for j in upstream_written)):
            raise ChildLost("protocol", "a backward reply that writes into an input or an upstream gradient the call "
                                        "did not have")
        extra = len(written) + len(inputs_written) + len(upstream_written)
        if len(received) < len(needs) + extra:
            raise ChildLost("protocol", "a backward reply with the wrong number of gradients")
        cut = len(received) - extra
        module._take_changes(body, received[len(needs):cut])
        rest = received[cut + len(written):]
        with torch.no_grad():
            # what the plugin's backward wrote into the call's input or into dy, written into the caller's tensors
            for i, value in zip(inputs_written, rest[:len(inputs_written)], strict=True):
                target = self.inputs[i]()
                if value is None or (target is not None and target.shape != value.shape):
                    raise ChildLost("protocol", f"a backward reply that writes a {_shape(value)} into input {i}")
                if target is not None:
                    target.copy_(value)
                    module._session.kept.resnap(target)
            for j, value in zip(upstream_written, rest[len(inputs_written):], strict=True):
                if value is None or grads[j].shape != value.shape:
                    raise ChildLost("protocol", f"a backward reply that writes a {_shape(value)} into upstream "
                                                f"gradient {j}")
                grads[j].copy_(value)
        for name, grad in zip(written, received[cut:cut + len(written)], strict=True):
            # what the plugin's backward wrote into `.grad`, written here (before autograd accumulates)
            local = _name(name)
            if local not in params:
                raise ChildLost("protocol", f"a backward that writes the gradient of an unknown {name[:80]!r}")
            params[local].grad = grad
        return received[:len(needs)]


class _RemoteFunction(torch.autograd.Function):
    """The call as one node of the trusted process's graph: its backward is the plugin's, run over there."""

    @staticmethod
    def forward(ctx: Any, call: _Call, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore
        needs = list(ctx.needs_input_grad[1:])
        inputs, params = list(tensors[:call.n_inputs]), list(tensors[call.n_inputs:])
        outputs = call.run(inputs, params, needs=needs)
        weakref.finalize(ctx, call.module._session.released.append, call.id)
        ctx.call = call
        ctx.needs = needs
        ctx.shapes = [tuple(t.shape) for t in tensors]
        # the graph's leaves for a create_graph=True backward (the inputs are weak in `call`: the graph must not
        # keep them, and a parameter is the module's anyway)
        ctx.params = list(tensors[call.n_inputs:])
        ctx.mark_non_differentiable(*(o for o, d in zip(outputs, call.differentiable, strict=True) if not d))
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        if not any(ctx.call.differentiable):
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if torch.is_grad_enabled():  # create_graph=True: the gradients keep their graph, over there
            call = ctx.call
            inputs = [ref() for ref in call.inputs]
            if any(t is None and need for t, need in zip(inputs, ctx.needs, strict=False)):
                raise Unmirrored("a create_graph=True backward through an input the check no longer holds (an "
                                 "intermediate tensor) is not carried to the plugin's process")
            received = list(_RemoteGrad.apply(call, ctx.needs, len(grads), *grads, *inputs, *ctx.params))
        else:
            received = ctx.call.backward(grads, ctx.needs)
        out: list[Any] = [None]
        for need, shape, g in zip(ctx.needs, ctx.shapes, received, strict=True):
            if need and g is not None and tuple(g.shape) != shape:
                raise ChildLost("protocol", f"a gradient of shape {tuple(g.shape)} for an input of shape {shape}")
            out.append(g if need else None)
        return tuple(out)


class _RemoteGrad(torch.autograd.Function):
    """A create_graph=True backward of a call as one node of the trusted process's graph: its outputs are the
    plugin's first-order gradients (dX, dγ, dβ), kept over there with their graph; its backward sends the gradients
    of those (a gradient penalty's v, gradgradcheck's probes) and gets the plugin's second-order gradients back,
    with respect to dy, the call's inputs and its parameters. Third order is not carried (Unmirrored).

    What a hostile plugin's side can forge with it: the second-order numbers and which first-order gradient it
    calls differentiable. Neither is a verdict: second_order_gradients compares the numbers with the float64
    truth it computes here, and gradgradcheck compares them with the numerical derivative of first-order gradients
    the same side sent, so numbers that pass are a double backward that is right in everything observed. A
    gradient said not to be differentiable makes double backward raise here, which is what a once_differentiable
    module does: it passes only where the module declares double_backward=False, where raising is conforming; a
    side could as well send that error itself. So it can only make its module behave, where normbench looks, as a
    conforming one (the harness detector's case), never write a pass for numbers it sent."""

    @staticmethod
    def forward(ctx: Any, call: _Call, needs: list[bool], n_upstream: int,  # type: ignore[override]
                *tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        wrt_needs = [bool(n) for n in ctx.needs_input_grad[3:]]
        session = call.module._session
        graph_id = next(session.calls)
        received = call.backward(tuple(tensors[:n_upstream]), needs,  # type: ignore[arg-type]
                                 graph={"id": graph_id, "needs": wrt_needs})
        weakref.finalize(ctx, session.released.append, graph_id)
        ctx.call, ctx.graph_id, ctx.wrt_needs = call, graph_id, wrt_needs
        ctx.shapes = [None if t is None else tuple(t.shape) for t in tensors]
        outputs = [g if need else None for g, need in zip(received, needs, strict=True)]
        ctx.mark_non_differentiable(*(g for g, d in zip(outputs, call.grad_differentiable, strict=True)
                                      if g is not None and not d))
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *ggs: torch.Tensor | None) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            raise Unmirrored("a second-order backward with create_graph=True (the graph of a third-order gradient) "
                             "is not carried to the plugin's process")
        session = ctx.call.module._session
        ctx.call.carry_param_writes()  # gradgradcheck perturbs γ as gradcheck does (_Call.carry_param_writes)
        body, received = session.request(
            {"op": "grad_backward", "call": ctx.graph_id, "needs": ctx.wrt_needs},
            [None if g is None else g.detach() for g in ggs], keep_strides=True)
        n = len(ctx.wrt_needs)
        if len(received) < n:
            raise ChildLost("protocol", "a second-order backward reply with the wrong number of gradients")
        ctx.call.module._take_changes(body, received[n:])
        out: list[Any] = [None, None, None]
        for need, shape, g in zip(ctx.wrt_needs, ctx.shapes, received[:n], strict=True):
            if need and g is not None and tuple(g.shape) != shape:
                raise ChildLost("protocol", f"a second-order gradient of shape {tuple(g.shape)} for a tensor of "
                                            f"shape {shape}")
            out.append(g if need else None)
        return tuple(out)


def build_seed() -> int:
    """The seed a remote build initializes its module with: a digest of this process's torch RNG state, so a check
    that seeds before it builds (init_scaling averages the norms of initial weights over seeds) gets the same module
    every run, wherever the item ran before in the plugin's process. The state is read, not advanced."""
    return zlib.crc32(torch.get_rng_state().numpy().tobytes()) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class RemoteFactory:
    """The factory of the trusted process's view of an implementation: each module it builds is remote."""

    session: Session
    name: str
    state_names: tuple[str, ...]
    built: list[RemoteModule] = dataclasses.field(default_factory=list, hash=False, compare=False)
    conversion: list[tuple[torch.device, torch.dtype, str]] = dataclasses.field(default_factory=list, hash=False,
                                                                                 compare=False)

    def __call__(self, num_features: int, **params: Any) -> RemoteModule:
        request: dict[str, Any] = {"op": "build", "num_features": num_features, "params": dict(params),
                                   "state_names": list(self.state_names), "seed": build_seed()}
        conversion = self.conversion[0] if self.conversion else None
        if conversion is not None:
            request["to"] = {"device": str(conversion[0]), "dtype": wire_tensors.dtype_name(conversion[1])}
            if conversion[2] != deploy.DEFAULT.name:
                request["deploy"] = conversion[2]
                self.session.deployed = True
        module = RemoteModule(self.session, self.name, request)
        if conversion is not None:
            object.__setattr__(module, "_converted", conversion[:2])
        self.built.append(module)
        return module

    @contextlib.contextmanager
    def converting(self, device: torch.device, dtype: torch.dtype, deployment: str = deploy.DEFAULT.name
                   ) -> Iterator[None]:
        """A module built inside is converted right after, over there, in the build's request, and deployed there as
        `deployment` (its forward and backward run the deployed form over there); the `.to` that follows
        (CheckContext.build) then finds it done, and CheckContext.build wraps nothing here."""
        self.conversion.append((torch.device(device), dtype, deployment))
        try:
            yield
        finally:
            self.conversion.pop()


def remote_implementation(impl: Implementation, session: Session, state_names: tuple[str, ...]
                          ) -> tuple[Implementation, RemoteFactory]:
    """`impl` as the trusted process sees it: built remotely, γ / β / statistics at their declared paths."""
    factory = RemoteFactory(session, impl.name, state_names)
    # `params=` is resolved over there, and checked there; here it returns the mirror's copies of what it found
    view = dataclasses.replace(impl, factory=factory, params=None if impl.params is None else mirrored_params)
    return view, factory


def mirrored_params(module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A ``params=`` declaration as the trusted side sees it: the mirror's γ and β the plugin's declaration named."""
    if not isinstance(module, RemoteModule):
        raise TypeError(f"a remote implementation's module is a RemoteModule, not {type(module).__name__}")
    found = [module.__dict__["_paths"].get(key) for key in (PARAMS_WEIGHT, PARAMS_BIAS)]
    weight, bias = (None if name is None else module._tensor(name) for name in found)
    return weight, bias
