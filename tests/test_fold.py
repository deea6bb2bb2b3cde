"""normbench.fold: eval-mode norms folded into adjacent Linear / Conv layers, outputs unchanged; refusals that
name the module and say why (NORMS.md "Folding")."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normbench import FoldError, fold
from normbench.families.masked_batchnorm import MaskedBatchNorm
from normbench.fold import Folded, fold_with_report, register_fold_handler

C = 16


class TransformerStyle(nn.Module):
    """Self-attention + FFN over (B, T, C) tokens with a (masked) batch-statistics norm after the attention
    output projection and after the FFN's first Linear, as PowerNorm / UN place them (post-projection)."""

    def __init__(self, c: int, norm: type[nn.Module]) -> None:
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)
        self.norm1 = norm(c)
        self.fc1 = nn.Linear(c, 2 * c)
        self.norm2 = norm(2 * c)
        self.fc2 = nn.Linear(2 * c, c)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / math.sqrt(x.shape[-1])
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[:, None, :], float("-inf"))
        h = x + self.norm1(self.out(torch.softmax(scores, dim=-1) @ v), pad_mask=pad_mask)
        return h + self.fc2(torch.relu(self.norm2(self.fc1(h), pad_mask=pad_mask)))


def _warm(model: nn.Module, make: object, steps: int = 4) -> nn.Module:
    """A few train steps so the running statistics are far from their (0, 1) initial values."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(make())
    return model.eval()


def _tokens(b: int = 4, t: int = 6) -> torch.Tensor:
    return 2.0 * torch.randn(b, t, C) + 0.5


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    a, b = a.detach(), b.detach()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_transformer_style_model_with_masked_bn_after_linears() -> None:
    torch.manual_seed(0)
    model = _warm(TransformerStyle(C, MaskedBatchNorm), _tokens)
    x = _tokens(3, 5)
    folded, report = fold_with_report(model, x)
    assert {(s.norm, s.into, s.side) for s in report.folded} == {("norm1", "out", "output"),
                                                                  ("norm2", "fc1", "output")}
    assert isinstance(folded.norm1, Folded) and isinstance(folded.norm2, Folded)
    assert not folded.training and isinstance(model.norm1, MaskedBatchNorm), "the original must stay untouched"
    _assert_close(folded(x), model(x))
    assert report.verified_rel_error is not None and report.verified_rel_error < 1e-5
    # The eval map applies at every position, pads included, so the fold is exact with a mask too.
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 3:] = True
    _assert_close(folded(x, pad_mask=mask), model(x, pad_mask=mask))


def test_transformer_style_model_with_torch_batchnorm_on_flat_tokens() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(C, 2 * C), nn.BatchNorm1d(2 * C), nn.GELU(),
                                      nn.BatchNorm1d(2 * C), nn.Linear(2 * C, C))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    torch.manual_seed(0)
    model = _warm(Flat(), _tokens)
    x = _tokens()
    folded, report = fold_with_report(model, x)
    assert {(s.norm, s.side) for s in report.folded} == {("body.1", "output"), ("body.3", "input")}
    _assert_close(folded(x), model(x))


def test_conv_output_side_and_unpadded_grouped_input_side() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.BatchNorm1d(6), nn.ReLU(),
                          nn.BatchNorm1d(6), nn.Conv1d(6, 4, 3, groups=2, bias=False))
    _warm(model, lambda: torch.randn(5, 4, 9) * 3 + 1)
    x = torch.randn(2, 4, 9)
    folded, report = fold_with_report(model, x)
    assert {(s.norm, s.into, s.side) for s in report.folded} == {("1", "0", "output"), ("3", "4", "input")}
    assert folded[4].bias is not None, "an input-side fold adds W·t: the conv needs a bias"
    _assert_close(folded(x), model(x))


def test_norm_before_padded_conv_is_kept_not_folded() -> None:
    torch.manual_seed(0)
    model = _warm(nn.Sequential(nn.BatchNorm1d(4), nn.Conv1d(4, 4, 3, padding=1)), lambda: torch.randn(5, 4, 9) + 2)
    x = torch.randn(2, 4, 9)
    folded, report = fold_with_report(model, x)
    assert not report.folded and report.kept and report.kept[0][0] == "0"
    assert isinstance(folded[0], nn.BatchNorm1d)
    _assert_close(folded(x), model(x))


def test_layernorm_is_refused_naming_the_module() -> None:
    model = nn.Sequential(nn.Linear(C, C), nn.Sequential(nn.Linear(C, C), nn.LayerNorm(C))).eval()
    with pytest.raises(FoldError, match=r"1\.1 \(LayerNorm\): LayerNorm normalizes every token with its own "
                                        r"statistics"):
        fold(model)


def test_rmsnorm_refused_and_strict_false_folds_the_rest() -> None:
    torch.manual_seed(0)
    model = _warm(nn.Sequential(nn.Linear(C, C), nn.BatchNorm1d(C), nn.Linear(C, C), nn.RMSNorm(C)),
                  lambda: torch.randn(8, C))
    with pytest.raises(FoldError, match=r"3 \(RMSNorm\)"):
        fold(model)
    x = torch.randn(4, C)
    folded, report = fold_with_report(model, x, strict=False)
    assert [s.norm for s in report.folded] == ["1"] and [p for p, _ in report.refused] == ["3"]
    assert isinstance(folded[3], nn.RMSNorm)
    _assert_close(folded(x), model(x))


def test_train_mode_batchnorm_is_refused_even_when_not_strict() -> None:
    model = nn.Sequential(nn.Linear(C, C), nn.BatchNorm1d(C))  # train mode: batch statistics
    for strict in (True, False):
        with pytest.raises(FoldError, match=r"(?s)1 \(BatchNorm1d\): BatchNorm1d is in train mode.*"
                                            r"call model\.eval\(\) first"):
            fold(model, strict=strict)


def test_batchnorm_without_running_statistics_is_refused() -> None:
    model = nn.Sequential(nn.Linear(C, C), nn.BatchNorm1d(C, track_running_stats=False)).eval()
    with pytest.raises(FoldError, match="track_running_stats=False"):
        fold(model)


class LayerScaledNorm(nn.Module):
    """Stands for PowerNorm with GroupScaling: opts in to the protocol and says why it cannot fold."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError("GroupScaling (layer scale) divides every token by its own rms at run time")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()


def test_protocol_refusal_carries_the_modules_reason() -> None:
    model = nn.Sequential(nn.Linear(C, C), LayerScaledNorm(C)).eval()
    with pytest.raises(FoldError, match=r"1 \(LayerScaledNorm\): LayerScaledNorm: GroupScaling"):
        fold(model)


class LyingNorm(nn.Module):
    """Mutant: its folding_affine does not describe what forward computes; verification must catch it."""

    folding_channel_axis = -1

    def __init__(self, c: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, c))

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale.detach(), torch.zeros_like(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + 1.0  # the +1 shift is missing from folding_affine


def test_verification_refuses_a_fold_that_changes_the_outputs() -> None:
    model = nn.Sequential(nn.Linear(C, C), LyingNorm(C)).eval()
    with pytest.raises(FoldError, match="differs from the original"):
        fold(model, torch.randn(3, C))


def test_registered_handler_for_a_foreign_class() -> None:
    class Foreign(nn.Module):  # a norm class the user cannot change
        def __init__(self, c: int) -> None:
            super().__init__()
            self.s = torch.linspace(0.5, 1.5, c)
            self.t = torch.linspace(-1.0, 1.0, c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.s + self.t

    register_fold_handler(Foreign, lambda m: (m.s.double(), m.t.double(), -1))
    model = nn.Sequential(nn.Linear(C, C), Foreign(C), nn.Tanh()).eval()
    x = torch.randn(3, C)
    folded, report = fold_with_report(model, x)
    assert [s.norm for s in report.folded] == ["1"]
    _assert_close(folded(x), model(x))


def test_a_layer_applied_twice_is_not_folded_into() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(C, C)
            self.norm = nn.BatchNorm1d(C)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.norm(self.lin(x)))

    torch.manual_seed(0)
    model = _warm(Shared(), lambda: torch.randn(8, C) + 1)
    x = torch.randn(4, C)
    folded, report = fold_with_report(model, x)
    assert not report.folded and report.kept
    _assert_close(folded(x), model(x))


def test_untraceable_model_falls_back_to_sequential_order() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(C, C), nn.BatchNorm1d(C))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.seq(x)
            return self.seq(-x)

    torch.manual_seed(0)
    model = _warm(Branchy(), lambda: torch.randn(8, C) + 1)
    x = torch.randn(4, C)
    folded, report = fold_with_report(model, x)
    assert "<model>" in report.untraced and [s.norm for s in report.folded] == ["seq.1"]
    _assert_close(folded(x), model(x))


# -- every built-in offline norm of the seed families folds ---------------------------------------------

def _foldable_builtins() -> list[object]:
    """Built-in seed-family implementations whose spec says foldable in eval (BN-like, PN*, UN, MABN)."""
    from helpers import specs

    from normbench.families import implementations

    out = []
    for implementation in implementations():
        spec = specs()[implementation.family]
        prop = next((p for p in spec.properties if p.name == "foldability"), None)
        if "reference" in implementation.tags or prop is None or prop.expect.get("eval") != "holds":
            continue
        out.append(implementation)
    return out


class _Adapted(nn.Module):
    """A seed-family norm behind the harness's layout / mask adapter, opting in to fold through its module."""

    def __init__(self, implementation: object, module: nn.Module) -> None:
        super().__init__()
        self.implementation, self.module = implementation, module

    @property
    def folding_channel_axis(self) -> int:
        return int(getattr(self.module, "folding_channel_axis", -1))

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.folding_affine()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        from normbench.checks.base import call_module

        return call_module(self.implementation, self.module, x, pad_mask)


@pytest.mark.parametrize("implementation", _foldable_builtins(), ids=lambda i: i.name)
def test_seed_family_offline_norms_fold_in_a_transformer_style_model(implementation: object) -> None:
    from helpers import specs

    params = specs()[implementation.family].default_params()
    probe = implementation.build(C, params)
    assert hasattr(probe, "folding_affine"), (
        f"{implementation.name}: its spec says foldable in eval, so it must implement folding_affine() -> (s, t) "
        "for normbench.fold")

    def norm(c: int) -> nn.Module:
        return _Adapted(implementation, implementation.build(c, params))

    torch.manual_seed(0)
    model = _warm(TransformerStyle(C, norm), _tokens, steps=6)
    x = _tokens(3, 5)
    folded, report = fold_with_report(model, x)
    assert {s.norm for s in report.folded} == {"norm1", "norm2"}, report
    _assert_close(folded(x), model(x))


def test_declared_adjacency_folds_what_tracing_cannot_see() -> None:
    class Opaque(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(C, C)
            self.norm = nn.BatchNorm1d(C)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # untraceable, and not a Sequential
                return self.norm(self.lin(x))
            return self.norm(self.lin(-x))

    torch.manual_seed(0)
    model = _warm(Opaque(), lambda: torch.randn(8, C) + 1)
    x = torch.randn(4, C)
    _, report = fold_with_report(model, x)
    assert not report.folded and report.kept[0][0] == "norm"
    folded, report = fold_with_report(model, x, adjacency=[("norm", "lin", "output")])
    assert [str(s) for s in report.folded] == ["norm -> lin (output side)"]
    _assert_close(folded(x), model(x))
    with pytest.raises(FoldError, match="no submodule 'nope'"):
        fold(model, adjacency=[("norm", "nope", "output")])
