"""Sinabs / Speck back end (optional: ``pip install flexsnn[sinabs]``).

``to_sinabs(model, input_shape)`` turns a bias-free flexsnn model into a Sinabs
``nn.Sequential`` of ``Conv2d`` / ``SumPool2d`` / ``Flatten`` / ``Linear`` layers, each weighted
layer followed by an ``IAFSqueeze`` neuron, which ``sinabs.backend.dynapcnn.DynapcnnNetwork``
(the Speck / DYNAP-CNN mapper) accepts. ``to_dynapcnn(model, input_shape)`` does both steps.
Sinabs (and, for a chip, samna) is imported only when these functions run.
"""

from flexsnn.backends.sinabs.convert import (
    SinabsUnavailableError,
    require_sinabs,
    sinabs_available,
    to_dynapcnn,
    to_sinabs,
)

__all__ = ["SinabsUnavailableError", "require_sinabs", "sinabs_available", "to_dynapcnn", "to_sinabs"]
