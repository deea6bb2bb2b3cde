"""A correct LayerNorm whose import patches the clocks to miss 50% of each of its forwards."""

from plugins.clock_forgery import HidingLayerNorm, install, layernorm

install(0.5)
implementation = layernorm("cheat.hides_50", HidingLayerNorm)
