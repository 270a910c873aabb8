"""SparseGradConfig: every knob of the method, validated where it is set."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sparsegrad_contract import defaults
from sparsegrad_contract.defaults import JOB_SELECTION, Selection

SELECTIONS: tuple[str, ...] = tuple(s.value for s in Selection)
__all__ = ["JOB_SELECTION", "SELECTIONS", "Selection", "SparseGradConfig"]


@dataclass
class SparseGradConfig:
    """Configuration of a SparseGrad run.

    The defaults are the paper's method: ~1% of the rotated gradient entries of every MLP
    projection are chosen afresh at every step (``selection="dynamic"``).
    """

    density: float = defaults.DENSITY
    """Share of the entries of each target weight updated per step: ``k = round(density * out * in)``."""

    calibration_steps: int = defaults.CALIBRATION_STEPS
    """Backward passes (never optimizer steps) whose gradients define the HOSVD bases."""

    selection: str = defaults.LIBRARY_SELECTION.value
    """``"dynamic"``: top-k of |G̃| at every step (the paper's method).
    ``"fixed"``: a variant — the support is the top-k of the calibration-time rotated gradient
    energy of each layer and never changes; only G̃ at those entries is computed (faster, LoRA-like
    cost), but it is a different method: check its quality on your task before relying on it.
    ``"block"``: top-k of |G̃| restricted to a leading ``r_out × r_in`` block of the HOSVD bases, chosen
    per projection kind at calibration (see ``block_energy_share``). Only the block is computed, the
    layers keep only the truncated bases, optimizer state is dense over the block (bounded), and the
    trained delta ``u_out[:, :r_out] S u_in[:, :r_in]ᵀ`` is a LoRA of rank ``min(r_out, r_in)``."""

    block_energy_share: float = defaults.BLOCK_ENERGY_SHARE
    """Block selection: the chosen block is the cheapest ``r_out × r_in`` whose exact top-k entries keep
    at least this share of the unrestricted top-k energy, on average over the calibration gradients."""

    block_max_cost: float = defaults.BLOCK_MAX_COST
    """Block selection: the chosen block's per-step cost (block gradient, ``x u_in`` and the push-back into
    ``W``) is at most this multiple of a dense weight gradient ``T·out·in``, with ``T`` the mean token count
    of the calibration batches. When no block within it reaches ``block_energy_share``, the block keeping
    the most energy within it is taken (the share it keeps is reported)."""

    block_sizes: dict[str, tuple[int, int]] | None = None
    """Block selection: ``{kind: (r_out, r_in)}``. ``None`` (default): chosen at calibration by the rule
    above; a model prepared with block selection records the chosen sizes here."""

    recalibrate_every: int = 0
    """Dynamic selection: every this many optimizer steps, recompute the HOSVD bases from
    ``calibration_steps`` backward passes on fresh training batches of the calibration stream (never stepping
    the model) and re-express the trained delta in them (exactly: the dense weight does not change); the sparse
    Adam moments restart. 0 (default): the bases of the first calibration are kept for the whole run. The bases
    drift from the gradients as training goes on (``docs/RESULTS.md``, "Basis drift")."""

    target_modules: list[str] | None = None
    """Module-name suffixes (``"intermediate.dense"``) or regexes (prefix ``re:``) of the linears to
    reparametrize. ``None`` auto-detects the MLP projections of BERT/RoBERTa, LLaMA-family and GPT-2."""

    layer_stride: int = 1
    """Reparametrize only blocks whose index is a multiple of this (the paper used 3 on LLaMA)."""

    projections: list[str] | None = None
    """Restrict auto-detection to these projection names (e.g. ``["up_proj", "down_proj"]``)."""

    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata copied into the adapter config (e.g. the job id)."""

    def __post_init__(self) -> None:
        if not 0.0 < float(self.density) <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density!r}")
        if int(self.calibration_steps) < 1:
            raise ValueError(f"calibration_steps must be >= 1, got {self.calibration_steps!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {self.selection!r}")
        self.selection = Selection(self.selection).value  # a plain string, also when given as the enum
        if not 0.0 < float(self.block_energy_share) <= 1.0:
            raise ValueError(f"block_energy_share must be in (0, 1], got {self.block_energy_share!r}")
        self.block_energy_share = float(self.block_energy_share)
        if float(self.block_max_cost) <= 0:
            raise ValueError(f"block_max_cost must be > 0, got {self.block_max_cost!r}")
        self.block_max_cost = float(self.block_max_cost)
        if self.block_sizes is not None:
            sizes = {}
            for kind, rr in self.block_sizes.items():
                r_out, r_in = (int(r) for r in rr)
                if r_out < 1 or r_in < 1:
                    raise ValueError(f"block_sizes[{kind!r}] must be two positive ranks, got {rr!r}")
                sizes[str(kind)] = (r_out, r_in)
            self.block_sizes = sizes
        if int(self.recalibrate_every) < 0:
            raise ValueError(f"recalibrate_every must be >= 0 (0: never), got {self.recalibrate_every!r}")
        self.recalibrate_every = int(self.recalibrate_every)
        if self.recalibrate_every and self.selection != Selection.dynamic.value:
            raise ValueError(f"recalibrate_every needs selection='dynamic' (the delta of {self.selection!r} "
                             "selection lives in a truncated basis or on a fixed support and cannot be re-expressed "
                             "exactly)")
        if int(self.layer_stride) < 1:
            raise ValueError(f"layer_stride must be >= 1, got {self.layer_stride!r}")
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("target_modules must be None (auto-detect) or a non-empty list")
        b1, b2 = self.adam_betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"adam_betas must be in [0, 1), got {self.adam_betas!r}")
        self.adam_betas = (float(b1), float(b2))
        self.density = float(self.density)

    def k_for(self, out_features: int, in_features: int) -> int:
        """Entries kept per step for an ``out × in`` weight (at least one)."""
        return max(1, min(out_features * in_features, round(self.density * out_features * in_features)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        if self.block_sizes is not None:
            d["block_sizes"] = {kind: list(rr) for kind, rr in self.block_sizes.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SparseGradConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "adam_betas" in known:
            known["adam_betas"] = tuple(known["adam_betas"])
        return cls(**known)
