"""Clean-room float64 references, one module per family (shipped as ``normbench.reference``).

They import only torch: the truth shares no code with the checks or the implementations it judges, so a
bug cannot cancel itself out. Each module exposes ``build(num_features, **params) -> nn.Module``; the module
computes internally in float64 whatever its parameter dtype and returns the input's dtype, with affine
parameters named ``weight`` / ``bias`` and state buffers named as in the family's spec.
"""
