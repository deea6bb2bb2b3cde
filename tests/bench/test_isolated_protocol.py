"""The data-only boundary of a case timed in the implementation's process (normbench.bench.isolated): what the
benchmark process accepts from it - tensors behind a checked header, copied; a schedule within calibrate's limits;
a block's times - and how each broken reply is refused, naming what was wrong."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import torch

from normbench import wire
from normbench.bench.isolated import _schedule, receive_tensor, send_tensor


@pytest.fixture
def pipe():
    a, b = multiprocessing.Pipe()
    yield a, b
    a.close()
    b.close()


def test_a_tensor_crosses_as_a_copy_of_its_bytes(pipe):
    sender, receiver = pipe
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        t = torch.randn(3, 5).to(dtype)
        send_tensor(sender, t)
        got = receive_tensor(receiver, str(dtype).removeprefix("torch."), (3, 5), "a test tensor", timeout=0)
        assert type(got) is torch.Tensor and got.dtype == dtype and torch.equal(got, t)
        assert got.data_ptr() != t.data_ptr()


@pytest.mark.parametrize("header, what", [
    (["float32", [5, 3]], "shape"),          # another shape than asked for
    (["int64", [3, 5]], "dtype"),            # not a floating dtype the protocol carries
    (["float16", [3, 5]], "dtype"),          # not the dtype asked for
    ({"dtype": "float32"}, "header"),        # not a header at all
])
def test_a_wrong_header_is_refused(pipe, header, what):
    sender, receiver = pipe
    wire.send(sender, header)
    with pytest.raises(wire.ProtocolError, match="a test tensor: expected a float32 tensor of shape"):
        receive_tensor(receiver, "float32", (3, 5), "a test tensor", timeout=0)


def test_the_wrong_number_of_bytes_is_refused(pipe):
    sender, receiver = pipe
    wire.send(sender, ["float32", [3, 5]])
    sender.send_bytes(b"\0" * 59)  # 60 expected
    with pytest.raises(wire.ProtocolError, match="59 bytes for a float32 tensor of shape"):
        receive_tensor(receiver, "float32", (3, 5), "a test tensor", timeout=0)
    wire.send(sender, ["float32", [3, 5]])
    sender.send_bytes(b"\0" * 4096)  # far more than its header says
    with pytest.raises(wire.ProtocolError, match="more than the 60 bytes"):
        receive_tensor(receiver, "float32", (3, 5), "a test tensor", timeout=0)


def test_a_sender_that_stops_halfway_does_not_block_the_receiver(pipe):
    sender, receiver = pipe
    with pytest.raises(TimeoutError, match="nothing arrived"):
        receive_tensor(receiver, "float32", (3, 5), "a test tensor", timeout=0)
    wire.send(sender, ["float32", [3, 5]])  # the header, then nothing
    with pytest.raises(TimeoutError, match="nothing arrived"):
        receive_tensor(receiver, "float32", (3, 5), "a test tensor", timeout=0)


def test_a_schedule_outside_calibrates_limits_is_refused():
    good = {"warmup_rounds": 1, "rounds": 10, "iterations": 7, "flush_l2": False, "per_call_estimate_s": 1e-4,
            "hold_s": 0.0}
    assert _schedule(json.loads(json.dumps(good))).rounds == 10
    for key, value, message in [("rounds", 10**6, "rounds is not an integer"), ("iterations", 0, "no iterations"),
                                ("rounds", True, "rounds is not an integer"), ("per_call_estimate_s", -1.0, "estimate"),
                                ("hold_s", float("nan"), "hold")]:
        with pytest.raises(wire.ProtocolError, match=message):
            _schedule({**good, key: value})
    with pytest.raises(wire.ProtocolError, match="malformed schedule"):
        _schedule({**good, "extra": 1})


@pytest.mark.parametrize("family, pass_name, applies", [
    ("batchnorm", "forward", True),       # train mode: batch statistics only, whatever the running ones
    ("batchnorm", "backward", True),
    ("batchnorm", "inference", True),     # eval: the running statistics, which no eval call moves
    ("powernorm", "forward", False),      # running statistics after its warm-up: every timed call moves them
    ("powernorm", "inference", True),
])
def test_the_output_check_applies_where_one_truth_holds_for_every_round(family, pass_name, applies):
    from normbench.bench.isolated import state_free_truth
    from normbench.checks.toolkit.reference import load_reference
    from normbench.spec import load_specs

    spec = load_specs([], known_checks=None).specs[family]
    shape = (8, 16, 4) if spec.layout.features_axis == 1 else (8, 4, 16)  # 16 features on the family's axis
    ref = load_reference(spec)(16, **spec.default_params())
    x = torch.randn(shape, dtype=torch.float64)
    dy = torch.randn(shape, dtype=torch.float64) if pass_name == "backward" else None
    truth = state_free_truth(ref, ref.state_dict(), spec.state, pass_name, x, dy)
    assert (truth is not None) == applies
    if applies:
        assert truth.shape == shape and torch.isfinite(truth).all()
