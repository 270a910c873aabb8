"""Adapter directories: save the trained sparse deltas, load them onto a base model, export merged.

Layout (PEFT spirit)::

    adapter_config.json           method, config, targets, kinds, fingerprint (SHA-256 of every target
                                  weight value, ``fingerprint_version`` 2), task metadata
    adapter_model.safetensors     per target: "<name>.sg_indices" (int32, flat row-major into the
                                  rotated (out, in) weight, or into the (r_out, r_in) block for block
                                  selection; none when the block is stored whole) and
                                  "<name>.sg_delta" (float32);
                                  densely trained tensors (task head, biases...) under their own names
    sparsegrad_bases.safetensors  "<kind>.u_out", "<kind>.u_in" once per projection kind (block
                                  selection: only the leading r_out / r_in columns, and no u_out
                                  where the block spans every output row: the standard basis)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sparsegrad_contract.defaults import MethodType

from .config import SparseGradConfig
from .hosvd import KindBasis, SparseGradBasis
from .layer import SparseGradLinear
from .model import FINGERPRINT_VERSION, apply_sparsegrad, sparsegrad_layers, weight_fingerprint
from .targets import linear_shape, linear_weight

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASES_FILE = "sparsegrad_bases.safetensors"
ADAPTER_FORMAT = "sparsegrad"
"""``adapter_config.json``'s ``format`` of a SparseGrad adapter."""
FORMAT_VERSION = 2
"""2: ``base_fingerprint`` hashes every value of the target weights (``fingerprint_version``); 1 hashed a sample."""


class AdapterMismatchError(ValueError):
    """The adapter was trained on a different base model than the one it is loaded onto."""


def combined_fingerprint(per_layer: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(per_layer):
        h.update(f"{name}={per_layer[name]};".encode())
    return h.hexdigest()[:32]


def _dense_trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors outside the sparse path (task head, biases, LayerNorms, paper-setting blocks)."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad and not name.endswith("sg_anchor"):
            out[name] = p.detach().contiguous().cpu()
    return out


def label_maps(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The model config's class names as ``adapter_config.json`` keeps them: ``id2label`` (ids as strings, JSON's
    keys) and ``label2id``; empty for a model without them."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {"id2label": {str(k): v for k, v in id2label.items()}, "label2id": {v: int(k) for k, v in id2label.items()}}


def apply_labels(model: nn.Module, config: dict[str, Any]) -> None:
    """Name ``model``'s classes as the adapter's run named them (its ``id2label``), when the head sizes agree."""
    id2label = config.get("id2label") or {}
    model_config = getattr(model, "config", None)
    if not id2label or model_config is None or getattr(model_config, "num_labels", None) != len(id2label):
        return
    model_config.id2label = {int(k): v for k, v in id2label.items()}
    model_config.label2id = {v: int(k) for k, v in id2label.items()}


def save_adapter(model: nn.Module, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write the adapter directory for a model trained with SparseGrad; returns the path."""
    path = Path(path)
    layers = dict(sparsegrad_layers(model))
    if not layers:
        raise ValueError("model has no SparseGradLinear layers; call apply_sparsegrad first")
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    bases: dict[str, torch.Tensor] = {}
    kinds: dict[str, dict[str, int]] = {}
    fingerprints: dict[str, str] = {}
    for name, layer in layers.items():
        indices, values = layer.export_delta()
        tensors[f"{name}.sg_indices"] = indices.to(torch.int32).cpu().contiguous()
        tensors[f"{name}.sg_delta"] = values.float().cpu().contiguous()
        fingerprints[name] = layer.base_fingerprint
        if layer.kind not in kinds:
            if layer.out_basis is not None:
                bases[f"{layer.kind}.u_out"] = layer.out_basis.cpu().contiguous()
            bases[f"{layer.kind}.u_in"] = layer.u_in.cpu().contiguous()
            kinds[layer.kind] = {"out_features": layer.out_features, "in_features": layer.in_features,
                                 "r_out": layer.r_out, "r_in": layer.r_in}
    dense = _dense_trained_tensors(model)
    clash = set(dense) & set(tensors)
    if clash:
        raise ValueError(f"tensor names clash: {sorted(clash)}")
    tensors.update(dense)
    first = next(iter(layers.values()))
    cfg_meta = first.config
    config: dict[str, Any] = {
        "format": ADAPTER_FORMAT,
        "format_version": FORMAT_VERSION,
        "method": MethodType.sparsegrad.value,
        "selection": first.selection,
        "sparsegrad_config": cfg_meta.to_dict() if isinstance(cfg_meta, SparseGradConfig) else None,
        "target_modules": {name: {"kind": layer.kind, "k": layer.k, "base_layer_type": layer.base_layer_type}
                           for name, layer in layers.items()},
        "kinds": kinds,
        "base_fingerprint": combined_fingerprint(fingerprints),
        "layer_fingerprints": fingerprints,
        "fingerprint_version": FINGERPRINT_VERSION,
        "dense_modules": sorted(dense),
        # The name the run loaded the model by (``metadata["model"]``: the job's model), else its folder.
        "base_model": (metadata or {}).get("model") or getattr(getattr(model, "config", None), "_name_or_path", None),
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "num_labels": getattr(getattr(model, "config", None), "num_labels", None),
        **label_maps(model),
        "metadata": metadata or {},
    }
    tmp_w, tmp_b = path / (ADAPTER_WEIGHTS + ".tmp"), path / (BASES_FILE + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": "pt"})
    save_file(bases, str(tmp_b), metadata={"format": "pt"})
    tmp_w.replace(path / ADAPTER_WEIGHTS)
    tmp_b.replace(path / BASES_FILE)
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    cfg_path = Path(path) / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: not a SparseGrad adapter directory")
    config: dict[str, Any] = json.loads(cfg_path.read_text())
    if config.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{cfg_path}: not a SparseGrad adapter (format={config.get('format')!r})")
    return config


def _check_fits(base_model: nn.Module, modules: dict[str, nn.Module], config: dict[str, Any],
                tensors: dict[str, torch.Tensor]) -> None:
    """Raise :class:`AdapterMismatchError` (``ValueError`` for an adapter already applied) where the adapter cannot be
    applied to ``base_model`` as it is: target shapes, the adapter's own tensors, the densely trained tensors."""
    applied = [n for n, m in modules.items() if isinstance(m, SparseGradLinear)]
    if applied:
        raise ValueError(f"the model already has SparseGrad layers at {applied[:3]}; load the adapter onto the base")
    for n, m in modules.items():
        meta = config["kinds"][config["target_modules"][n]["kind"]]
        want = (meta["out_features"], meta["in_features"])
        if linear_shape(m) != want:
            raise AdapterMismatchError(f"target {n}: adapter has shape {want}, base model {linear_shape(m)}")
    lacking = [f"{n}.{t}" for n in modules for t in ("sg_indices", "sg_delta") if f"{n}.{t}" not in tensors]
    params = dict(base_model.named_parameters())
    dense_names = config.get("dense_modules", [])
    lacking += [n for n in dense_names if n not in tensors]
    if lacking:
        raise AdapterMismatchError(f"adapter {ADAPTER_WEIGHTS} lacks tensors: {lacking[:5]}")
    missing = [n for n in dense_names if n not in params]
    if missing:
        raise AdapterMismatchError(f"base model lacks trained tensors of this adapter: {missing[:5]}")
    for n in dense_names:
        if params[n].shape != tensors[n].shape:
            raise AdapterMismatchError(
                f"tensor {n}: adapter has shape {tuple(tensors[n].shape)}, base model {tuple(params[n].shape)} "
                "(e.g. a classification head with a different number of labels)"
            )


def load_adapter(
    base_model: nn.Module | str | Path, path: str | Path, *, check_fingerprint: bool = True,
) -> nn.Module:
    """Apply a saved adapter to ``base_model`` (in place) and return it.

    The base must be the model the adapter was trained from: its target weights are fingerprinted
    and compared, and a mismatch raises :class:`AdapterMismatchError`. The returned model computes
    the same outputs as the trained one and can keep training, and names its classes as training did
    (``config.id2label`` / ``label2id`` from the adapter).

    ``base_model`` may also be that model's name, as the service's job (its ``model``) or the offline
    CLI used it: a bundled model (``"minilm-l6"``, ``"smollm2-135m"``) loads from its package, a local
    folder from disk, for the adapter's task and labels (:func:`sparsegrad_core.recipe.load_base_for`;
    needs the ``training_info.json`` that every export of a run holds).
    """
    if isinstance(base_model, str | Path):
        from .recipe import load_base_for  # the recipe imports this module

        base_model, _ = load_base_for(base_model, path)
    path = Path(path)
    config = read_adapter_config(path)
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    bases = load_file(str(path / BASES_FILE))
    targets_meta: dict[str, dict[str, Any]] = config["target_modules"]
    names = list(targets_meta)
    try:
        modules = {n: base_model.get_submodule(n) for n in names}
    except AttributeError as exc:
        raise AdapterMismatchError(f"base model lacks a target module of this adapter: {exc}") from exc
    if check_fingerprint:
        # adapters written before ``fingerprint_version`` hashed a strided sample of each weight
        version = int(config.get("fingerprint_version", 1))
        fps = {n: weight_fingerprint(linear_weight(m), version) for n, m in modules.items()}
        got = combined_fingerprint(fps)
        if got != config["base_fingerprint"]:
            bad = [n for n in names if fps[n] != config["layer_fingerprints"].get(n)]
            raise AdapterMismatchError(
                f"adapter {path} was trained on a different base model (fingerprint "
                f"{config['base_fingerprint']} != {got}; {len(bad)} of {len(names)} target weights differ, "
                f"first: {bad[:3]}). Load the base model it was trained from ({config.get('base_model')!r})."
            )
    _check_fits(base_model, modules, config, tensors)  # every refusal comes before anything changes the model
    kinds = {
        kind: KindBasis(
            u_out=bases.get(f"{kind}.u_out"), u_in=bases[f"{kind}.u_in"],
            eig_out=torch.empty(0), eig_in=torch.empty(0), out_features=meta["out_features"],
        )
        for kind, meta in config["kinds"].items()
    }
    supports = {}
    if config["selection"] == "fixed":
        supports = {n: tensors[f"{n}.sg_indices"].long() for n in names}
    basis = SparseGradBasis(kinds=kinds, layers={n: targets_meta[n]["kind"] for n in names}, supports=supports)
    cfg_dict = config.get("sparsegrad_config") or {}
    cfg = SparseGradConfig.from_dict(cfg_dict) if cfg_dict else SparseGradConfig(selection=config["selection"])
    for n, m in modules.items():
        out_f, in_f = linear_shape(m)
        if cfg.k_for(out_f, in_f) != targets_meta[n]["k"]:
            cfg = SparseGradConfig(**{**cfg.to_dict(), "adam_betas": cfg.adam_betas,
                                     "density": targets_meta[n]["k"] / (out_f * in_f)})
            break
    apply_sparsegrad(base_model, basis, cfg)
    with torch.no_grad():
        for n, layer in sparsegrad_layers(base_model):
            layer.load_delta(tensors[f"{n}.sg_indices"], tensors[f"{n}.sg_delta"])
        params = dict(base_model.named_parameters())
        for n in config.get("dense_modules", []):
            params[n].copy_(tensors[n])
    apply_labels(base_model, config)
    return base_model

