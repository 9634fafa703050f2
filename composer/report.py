"""Plain-text tables of a Plan for the CLI and for notebooks."""

from __future__ import annotations

from .plan import EnsemblePlan, Plan
from .spec.units import FFT_GMACS_HEADER, GMACS_HEADER, gmacs_cell, params_cell


def _table(rows: list[list[str]], align: str) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ensemble_table(p: EnsemblePlan) -> str:
    """One row per member (its layout, params, GMACs, FFT GMACs) and the ensemble's totals (their sums)."""
    est = p.estimate()
    has_fft = est.fft_macs > 0
    header = ["member", "spec", "layout", "params", GMACS_HEADER] + ([FFT_GMACS_HEADER] if has_fft else [])

    def row(index, name, layout, e):
        r = [index, name, layout, params_cell(e.params), gmacs_cell(e.macs)]
        return r + ([gmacs_cell(e.fft_macs)] if has_fft else [])

    rows = [header]
    for i, (member, m) in enumerate(zip(p.members, est.members)):
        layout = "-".join(s.mixer_summary for s in m.stages)
        rows.append(row(str(i), member.spec.name or "spec", layout, m))
    rows.append(row("total", "", "", est))
    spec = p.spec
    title = (f"{spec.name or 'ensemble'}  (ensemble of {len(p.members)}: mean of the members' logits, input "
             f"{spec.input_size}x{spec.input_size}, {spec.num_classes} classes)")
    foot = "MACs = multiply-accumulates at batch 1, summed over the members" + (
        " (FFTs apart)" if has_fft else "")
    return f"{title}\n{_table(rows, 'lllrr' + ('r' if has_fft else ''))}\n{foot}"


def stage_table(p: Plan | EnsemblePlan) -> str:
    """Per-stage mixer, depth, width, feature map, params and GMACs, with stem, head and totals (for an
    ensemble: one row per member, see :func:`ensemble_table`)."""
    if isinstance(p, EnsemblePlan):
        return ensemble_table(p)
    est = p.estimate()
    has_fft = est.fft_macs > 0
    header = ["stage", "mixer", "depth", "width", "feature map", "params", GMACS_HEADER] + (
        [FFT_GMACS_HEADER] if has_fft else [])

    def row(stage, mixer, depth, width, fmap, cost):
        r = [stage, mixer, depth, width, fmap, params_cell(cost.params), gmacs_cell(cost.macs)]
        return r + ([gmacs_cell(cost.fft_macs)] if has_fft else [])

    stem = p.node("stem")
    rows = [header, row("stem", "-", "-", str(stem["out_shape"][0]),
                        f"{stem['out_shape'][1]}x{stem['out_shape'][2]}", est.stem)]
    for s in est.stages:
        rows.append(row(str(s.index), s.mixer_summary, str(s.depth), str(s.width),
                        f"{s.feature_map[0]}x{s.feature_map[1]}", s.cost))
    rows.append(row("head", p.spec.head.type if p.spec.num_classes else "none", "-",
                    str(p.spec.num_classes or "-"), "1x1", est.head))
    total = ["total", "", str(sum(p.spec.depths)), "", "", params_cell(est.params), gmacs_cell(est.macs)]
    rows.append(total + ([gmacs_cell(est.fft_macs)] if has_fft else []))
    title = (f"{p.spec.name or 'spec'}  (macro {p.spec.macro}, input {p.spec.input_size}x{p.spec.input_size}, "
             f"{p.spec.num_classes} classes)")
    foot = "MACs = multiply-accumulates at batch 1 (paper 'FLOPs')" + (", FFTs apart" if has_fft else "")
    return f"{title}\n{_table(rows, 'llrrrrr' + ('r' if has_fft else ''))}\n{foot}"
