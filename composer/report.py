"""Plain-text tables of a Plan for the CLI and for notebooks."""

from __future__ import annotations

from .plan import EnsemblePlan, Plan
from .spec.units import format_count


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
    header = ["member", "spec", "layout", "params", "GMACs"] + (["FFT GMACs"] if has_fft else [])

    def row(index, name, layout, e):
        r = [index, name, layout, f"{e.params:,}", f"{e.macs / 1e9:.3f}"]
        return r + ([f"{e.fft_macs / 1e9:.3f}"] if has_fft else [])

    rows = [header]
    for i, (member, m) in enumerate(zip(p.members, est.members)):
        layout = "-".join(s.mixer_summary for s in m.stages)
        rows.append(row(str(i), member.spec.name or "spec", layout, m))
    rows.append(row("total", "", "", est))
    spec = p.spec
    title = (f"{spec.name or 'ensemble'}  (ensemble of {len(p.members)}: mean of the members' logits, input "
             f"{spec.input_size}x{spec.input_size}, {spec.num_classes} classes)")
    foot = (f"MACs = multiply-accumulates at batch 1, summed over the members: {format_count(est.macs)}"
            + (f" + {format_count(est.fft_macs)} in FFTs" if has_fft else ""))
    return f"{title}\n{_table(rows, 'lllrr' + ('r' if has_fft else ''))}\n{foot}"


def stage_table(p: Plan | EnsemblePlan) -> str:
    """Per-stage mixer, depth, width, feature map, params and GMACs, with stem, head and totals (for an
    ensemble: one row per member, see :func:`ensemble_table`)."""
    if isinstance(p, EnsemblePlan):
        return ensemble_table(p)
    est = p.estimate()
    has_fft = est.fft_macs > 0
    header = ["stage", "mixer", "depth", "width", "feature map", "params", "GMACs"] + (["FFT GMACs"] if has_fft else [])

    def row(stage, mixer, depth, width, fmap, cost):
        r = [stage, mixer, depth, width, fmap, f"{cost.params:,}", f"{cost.macs / 1e9:.3f}"]
        return r + ([f"{cost.fft_macs / 1e9:.3f}"] if has_fft else [])

    stem = p.node("stem")
    rows = [header, row("stem", "-", "-", str(stem["out_shape"][0]),
                        f"{stem['out_shape'][1]}x{stem['out_shape'][2]}", est.stem)]
    for s in est.stages:
        rows.append(row(str(s.index), s.mixer_summary, str(s.depth), str(s.width),
                        f"{s.feature_map[0]}x{s.feature_map[1]}", s.cost))
    rows.append(row("head", p.spec.head.type if p.spec.num_classes else "none", "-",
                    str(p.spec.num_classes or "-"), "1x1", est.head))
    total = ["total", "", str(sum(p.spec.depths)), "", "", f"{est.params:,}", f"{est.macs / 1e9:.3f}"]
    rows.append(total + ([f"{est.fft_macs / 1e9:.3f}"] if has_fft else []))
    title = (f"{p.spec.name or 'spec'}  (macro {p.spec.macro}, input {p.spec.input_size}x{p.spec.input_size}, "
             f"{p.spec.num_classes} classes)")
    foot = (f"MACs = multiply-accumulates at batch 1 (paper 'FLOPs'): {format_count(est.macs)}"
            + (f" + {format_count(est.fft_macs)} in FFTs" if has_fft else ""))
    return f"{title}\n{_table(rows, 'llrrrrr' + ('r' if has_fft else ''))}\n{foot}"
