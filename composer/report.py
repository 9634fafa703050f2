"""Plain-text tables of a Plan for the CLI and for notebooks."""

from __future__ import annotations

from .plan import Plan
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


def stage_table(p: Plan) -> str:
    """Per-stage mixer, depth, width, feature map, params and GMACs, with stem, head and totals."""
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
