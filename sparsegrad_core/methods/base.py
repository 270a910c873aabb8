"""What every training method is: the :class:`TrainingMethod` interface, the registry of methods by name, the
:class:`MethodSpec` a run asks for and the :class:`PreparedModel` it gets.

A method owns its options, how it attaches to a model, what trains besides it, how gradients accumulate,
what it exports and how an export merges back into a plain model. Each lives in its own module of this
package and is registered once in ``sparsegrad_core/methods/__init__.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparsegrad_contract import defaults
from sparsegrad_contract.defaults import Setting

from ..config import SparseGradConfig
from ..hosvd import ProgressFn, SparseGradBasis
from ..model import count_trainable
from ..targets import find_target_modules

SETTINGS: tuple[str, ...] = tuple(s.value for s in Setting)
HEAD_PREFIXES = ("classifier", "score", "pooler", "qa_outputs")

LossFn = Callable[[nn.Module, Mapping[str, Any]], torch.Tensor]


def is_head_param(name: str) -> bool:
    parts = name.split(".")
    return any(p in HEAD_PREFIXES for p in parts[:2])


@dataclass
class Attached:
    """What :meth:`TrainingMethod.attach` returns: the model (the same object unless the method wraps it) and
    the method's own state for this run (kept on the :class:`PreparedModel`, never on the modules)."""

    model: nn.Module
    state: Any = None
    basis: SparseGradBasis | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CalibrationInputs:
    """What :meth:`TrainingMethod.attach` may calibrate from: batches (with a progress report and a loss), or the
    bases of an earlier calibration (a resumed run)."""

    batches: Iterable[Mapping[str, Any]] | None = None
    basis: SparseGradBasis | None = None
    progress: ProgressFn | None = None
    loss_fn: LossFn | None = None


class TrainingMethod:
    """One way of training the MLP projections. Subclasses set ``name`` and override what differs."""

    name: ClassVar[str]
    options_type: ClassVar[type | None] = None
    """The dataclass of the method's own options (``MethodSpec.options``); None: it has none."""
    exports_adapter: ClassVar[bool] = False
    """True: the export is an adapter over the base model (folder ``adapter``); False: the whole model (``model``)."""
    trains_target_weights: ClassVar[bool] = False
    """The MLP weights themselves are trainable parameters (dense or sparsified gradients)."""
    trains_everything: ClassVar[bool] = False
    """Every parameter trains, whatever the setting."""
    needs_calibration: ClassVar[bool] = False
    """Attaching needs calibration batches (or a basis from an earlier calibration)."""

    def default_options(self) -> Any:
        return None if self.options_type is None else self.options_type()

    def trains_in_peft_setting(self, name: str, param: nn.Parameter, targets: Mapping[str, nn.Module]) -> bool:
        """In the ``peft`` setting, whether a non-target-weight parameter trains: the task head."""
        return is_head_param(name)

    def attach(
        self, model: nn.Module, spec: MethodSpec, targets: Mapping[str, nn.Module], calibration: CalibrationInputs
    ) -> Attached:
        """Install the method on ``targets`` after trainability is set; the default installs nothing."""
        return Attached(model)

    def accumulating(self, prepared: PreparedModel, active: bool) -> contextlib.AbstractContextManager[None]:
        """Inside this block backward passes only accumulate; the first backward outside it completes the step."""
        return contextlib.nullcontext()

    def export(
        self, prepared: PreparedModel, tokenizer: PreTrainedTokenizerBase, directory: Path, info: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the run's result to ``directory``; returns ``info`` with anything the export adds.
        The default saves the whole model with its tokenizer."""
        model = prepared.model
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"{self.name} export needs a transformers PreTrainedModel")
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return info

    def reads_adapter(self, adapter_config: Mapping[str, Any]) -> bool:
        """Whether an export's ``adapter_config.json`` is this method's adapter."""
        return False

    def merge(self, base_model: nn.Module, directory: Path) -> nn.Module:
        """The base model with this method's exported adapter at ``directory`` merged in (plain modules only)."""
        raise NotImplementedError(f"{self.name} exports whole models; there is no adapter to merge")


_REGISTRY: dict[str, TrainingMethod] = {}


def register_method(method: type[TrainingMethod]) -> type[TrainingMethod]:
    """Make ``method`` available by its ``name`` to :class:`MethodSpec`, preparation, export and merge."""
    name = method.name
    if name in _REGISTRY and type(_REGISTRY[name]) is not method:
        raise ValueError(f"a different method is already registered as {name!r}")
    _REGISTRY[name] = method()
    return method


def unregister_method(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_method(name: str) -> TrainingMethod:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"method type must be one of {', '.join(_REGISTRY)}; got {name!r}") from None


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def registered_methods() -> tuple[TrainingMethod, ...]:
    return tuple(_REGISTRY.values())


@dataclass
class MethodSpec:
    """Which method trains the MLP projections, and what else trains.

    ``sparsegrad`` names the MLP targets and the density every method is compared at (MeProp keeps SparseGrad's
    k entries; LoRA's default rank gives the same trainable parameters) and holds SparseGrad's own settings.
    ``options`` are the method's own options (an instance of its ``options_type``; None: its defaults).
    """

    type: str = defaults.DEFAULT_METHOD.value
    setting: str = defaults.DEFAULT_SETTING.value
    sparsegrad: SparseGradConfig = field(default_factory=SparseGradConfig)
    options: Any = None

    def __post_init__(self) -> None:
        self.type, self.setting = str(self.type), str(self.setting)  # plain strings, also when given as enums
        method = get_method(self.type)
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {', '.join(SETTINGS)}; got {self.setting!r}")
        if isinstance(self.sparsegrad, dict):
            self.sparsegrad = SparseGradConfig.from_dict(self.sparsegrad)
        if self.options is None:
            self.options = method.default_options()
        elif isinstance(self.options, dict) and method.options_type is not None:
            self.options = method.options_type(**self.options)
        elif method.options_type is None or not isinstance(self.options, method.options_type):
            expected = "no options" if method.options_type is None else method.options_type.__name__
            raise ValueError(f"{self.type} takes {expected}; got {type(self.options).__name__}")

    @property
    def method(self) -> TrainingMethod:
        return get_method(self.type)

    def to_dict(self) -> dict[str, Any]:
        options = asdict(self.options) if is_dataclass(self.options) and not isinstance(self.options, type) else None
        return {"type": self.type, "setting": self.setting, "sparsegrad": self.sparsegrad.to_dict(), "options": options}


@dataclass
class PreparedModel:
    """A model ready for the training loop, and what the preparation found."""

    model: nn.Module
    spec: MethodSpec
    targets: list[str]
    trainable_params: int
    basis: SparseGradBasis | None = None
    state: Any = None
    """The method's own state for this run (e.g. LoRA's adapter config, MeProp's gradient hooks)."""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> TrainingMethod:
        return self.spec.method

    @property
    def lora_rank(self) -> int | None:
        return getattr(self.state, "r", None)

    @contextlib.contextmanager
    def accumulating_gradients(self, active: bool = True) -> Iterator[None]:
        """Backward passes inside only accumulate (see :meth:`TrainingMethod.accumulating`)."""
        with self.method.accumulating(self, active):
            yield


def _set_trainability(
    model: nn.Module, spec: MethodSpec, method: TrainingMethod, targets: Mapping[str, nn.Module]
) -> None:
    target_weights = {id(m.weight) for m in targets.values()}
    for name, p in model.named_parameters():
        if method.trains_everything:
            p.requires_grad_(True)
        elif id(p) in target_weights:
            p.requires_grad_(method.trains_target_weights)
        elif spec.setting == Setting.paper:
            p.requires_grad_(True)
        else:
            p.requires_grad_(method.trains_in_peft_setting(name, p, targets))


def prepare_model(
    model: nn.Module,
    spec: MethodSpec,
    calibration_batches: Iterable[Mapping[str, Any]] | None = None,
    *,
    progress: ProgressFn | None = None,
    loss_fn: LossFn | None = None,
    basis: SparseGradBasis | None = None,
) -> PreparedModel:
    """Set trainability for ``spec.setting`` and install the method on the MLP projections.

    SparseGrad calibrates on ``calibration_batches`` unless a ``basis`` from an earlier calibration
    (e.g. a checkpoint being resumed) is given.
    """
    sg = spec.sparsegrad
    method = spec.method
    targets = find_target_modules(model, sg.target_modules, layer_stride=sg.layer_stride, projections=sg.projections)
    _set_trainability(model, spec, method, targets)
    attached = method.attach(model, spec, targets, CalibrationInputs(calibration_batches, basis, progress, loss_fn))
    return PreparedModel(
        model=attached.model, spec=spec, targets=list(targets), trainable_params=count_trainable(attached.model),
        basis=attached.basis, state=attached.state, info=attached.info,
    )
