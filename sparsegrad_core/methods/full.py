"""Full fine-tuning, and the frozen-MLP lower bound the benchmarks compare against; both export the whole model."""

from __future__ import annotations

from typing import ClassVar

from sparsegrad_contract.defaults import MethodType

from .base import TrainingMethod


class FullMethod(TrainingMethod):
    """Every parameter trains densely with AdamW, whatever the setting."""

    name: ClassVar[str] = MethodType.full.value
    trains_everything = True


FROZEN_MLP = "frozen_mlp"


class FrozenMLP(TrainingMethod):
    """The MLP weights simply frozen: the physical lower bound of any MLP method's cost. Not a method a job can
    ask for (it is not in the job contract's ``MethodType``)."""

    name: ClassVar[str] = FROZEN_MLP
