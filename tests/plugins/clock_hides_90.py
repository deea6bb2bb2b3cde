"""A correct LayerNorm whose import patches the clocks to miss 90% of each of its forwards."""

from plugins.clock_forgery import HidingLayerNorm, install, layernorm

install(0.9)
implementation = layernorm("cheat.hides_90", HidingLayerNorm)
