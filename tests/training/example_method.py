"""A method written the way a new one is added: this module plus one ``register_method`` call.

``mlp_bias`` trains the MLP projections' biases only (their weights stay frozen) and exports the whole model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import nn

from sparsegrad_core.methods import TrainingMethod


class MlpBiasMethod(TrainingMethod):
    name: ClassVar[str] = "mlp_bias"

    def trains_in_peft_setting(self, name: str, param: nn.Parameter, targets: Mapping[str, nn.Module]) -> bool:
        biases = {id(m.bias) for m in targets.values() if getattr(m, "bias", None) is not None}
        return super().trains_in_peft_setting(name, param, targets) or id(param) in biases
