"""Part C of ``profile_sg.py`` (information only: it would change the method): the share of the true top-k
energy of ``G̃ = u_outᵀ G u_in`` that a top-k restricted to the leading ``block_frac`` of the smaller dimension's
basis would keep, and the FLOPs of computing only that block.
"""

from __future__ import annotations

from typing import Any

import reporting
import torch

import sparsegrad_core.selection as selection


def leading_block_concentration(
    captured: dict[str, dict[str, Any]], block_frac: float
) -> list[dict[str, Any]]:
    """One row per kind, from the ``(g, x)`` captured by ``profile_ab.capture_layer_inputs``; printed and
    returned."""
    conc = []
    for kind, cap in captured.items():
        layer, g, x = cap["layer"], cap["g"], cap["x"]
        rot = selection.rotate_gradient(layer.u_out, layer.u_in, g=g, x=x)
        o, i = layer.out_features, layer.in_features
        energy = rot.square()
        k = layer.k
        top_all = torch.topk(energy.flatten(), k, sorted=False).values.sum()
        t = g.shape[0]
        if i <= o:
            r = max(1, round(block_frac * i))
            block = energy[:, :r]
            block_flops = 2 * (t * i * r + t * o * r + o * o * r)  # uoᵀ (gᵀ (x ui[:, :r]))
        else:
            r = max(1, round(block_frac * o))
            block = energy[:r, :]
            block_flops = 2 * (t * o * r + t * r * i + r * i * i)  # ((g uo[:, :r])ᵀ x) ui
        top_block = torch.topk(block.flatten(), min(k, block.numel()), sorted=False).values.sum()
        conc.append(
            {
                "kind": kind,
                "block": f"leading {r} of the small dim",
                "kept_vs_true_topk": float(top_block / top_all),
                "topk_share_of_total": float(top_all / energy.sum()),
                "block_gflop": block_flops / 1e9,
                "full_gflop": 2 * (t * o * i + o * i * (o + i)) / 1e9,
            }
        )
    print("\n== Part C (information only: restricting the top-k to a leading block changes the method) ==")
    print(
        reporting.fmt_table(
            conc,
            [
                ("kind", "kind"),
                ("block", "candidate block"),
                ("kept_vs_true_topk", "energy kept / true top-k"),
                ("topk_share_of_total", "true top-k share of ‖G̃‖²"),
                ("block_gflop", "block GFLOP"),
                ("full_gflop", "full GFLOP"),
            ],
        )
    )
    return conc
