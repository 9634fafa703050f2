"""The Plan for other eyes and tools: a stage/block diagram (PNG, SVG, PDF), GraphML and DOT.

``composer graph SPEC -o out.png`` draws stem, stages and head as columns; inside a stage, runs of equal
blocks are one box (``A x9``) labelled with the mixer, its main parameter, the block's shape and cost, and
every column ends with the stage's params and MACs. GraphML and DOT carry every Plan node (module paths as
ids, ``kind``, shapes as ``CxHxW``, params / MACs / FFT MACs, the mixer's type and config as JSON) and both
kinds of edge (``relation`` = ``flow`` stem to head, or ``contains`` stage to member). Neither needs graphviz
or pydot: DOT is written here, GraphML by networkx, pictures by matplotlib.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from .cost_types import Cost
from .plan import EnsemblePlan, Plan
from .spec.units import format_count

PICTURE_SUFFIXES = (".png", ".svg", ".pdf")
TEXT_SUFFIXES = (".graphml", ".dot", ".gv")
SUFFIXES = PICTURE_SUFFIXES + TEXT_SUFFIXES


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _flat(name: str, value: Any, out: dict[str, Any]) -> None:
    """Node attributes as GraphML/DOT scalars: costs split into params / macs / fft_macs, shapes as CxHxW,
    a mixer config as its type plus JSON."""
    if value is None or name == "part":
        return
    if isinstance(value, Cost):
        prefix = "" if name == "cost" else name.removesuffix("cost")
        out.update({f"{prefix}params": value.params, f"{prefix}macs": value.macs,
                    f"{prefix}fft_macs": float(value.fft_macs)})
    elif name.endswith("shape"):
        out[name] = _shape(value)
    elif hasattr(value, "model_dump"):
        out[f"{name}_type"] = getattr(value, "type", type(value).__name__)
        out[f"{name}_config"] = json.dumps(value.model_dump(mode="json"), sort_keys=True)
    elif isinstance(value, (list, tuple)):
        out[name] = "-".join(str(v) for v in value)
    elif isinstance(value, (bool, int, float, str)):
        out[name] = value
    else:
        out[name] = str(value)


def export_graph(p: Plan | EnsemblePlan) -> nx.DiGraph:
    """The Plan graph with scalar attributes only (what GraphML and DOT can hold); an ensemble's members are
    prefixed ``members.i.`` as in the built ComposedEnsemble's state dict."""
    if isinstance(p, EnsemblePlan):
        g = nx.DiGraph(name=p.spec.name or "ensemble", input_size=p.spec.input_size)
        for i, member in enumerate(p.members):
            sub = export_graph(member)
            g.add_nodes_from((f"members.{i}.{n}", {**d, "member": i}) for n, d in sub.nodes(data=True))
            g.add_edges_from((f"members.{i}.{u}", f"members.{i}.{v}", d) for u, v, d in sub.edges(data=True))
        return g
    g = nx.DiGraph(name=p.spec.name or "spec", input_size=p.spec.input_size, macro=p.spec.macro)
    for node, data in p.graph.nodes(data=True):
        attrs: dict[str, Any] = {}
        for key, value in data.items():
            _flat(key, value, attrs)
        g.add_node(node, **attrs)
    g.add_edges_from(p.graph.edges(data=True))
    return g


def _dot_id(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_attrs(attrs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_dot_id(v)}" for k, v in attrs.items())


def _node_label(node: str, d: dict[str, Any]) -> str:
    what = d.get("symbol") or d.get("kind", "")
    if d.get("mixer_type"):
        what = f"{what} ({d['mixer_type']})"
    return (f"{node}\n{what}\n{d.get('in_shape', '')} -> {d.get('out_shape', '')}\n"
            f"{format_count(d.get('params', 0))} params, {format_count(d.get('macs', 0))} MACs")


def to_dot(p: Plan | EnsemblePlan) -> str:
    """DOT text: one cluster per stage (its members inside), data-flow edges, every attribute kept."""
    g = export_graph(p)
    lines = [f"digraph {_dot_id(g.graph.get('name', 'spec'))} {{", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica"];']
    stages = [n for n, d in g.nodes(data=True) if d.get("kind") == "stage"]
    inside = {v for u, v, r in g.edges(data="relation") if r == "contains"}
    for stage in stages:
        d = g.nodes[stage]
        label = (f"{stage}: {d.get('mixers', '')}\n{d.get('out_shape', '')}, {format_count(d.get('params', 0))} "
                 f"params, {format_count(d.get('macs', 0))} MACs")
        lines.append(f"  subgraph {_dot_id('cluster_' + stage)} {{")
        lines.append(f"    {_dot_attrs({'label': label, 'style': 'rounded', 'color': '#888888'})};")
        for _, member, relation in g.out_edges(stage, data="relation"):
            if relation == "contains":
                attrs = {k: v for k, v in g.nodes[member].items()}
                lines.append(f"    {_dot_id(member)} [{_dot_attrs({'label': _node_label(member, attrs), **attrs})}];")
        lines.append("  }")
    for node, d in g.nodes(data=True):
        if node not in inside and d.get("kind") != "stage":
            lines.append(f"  {_dot_id(node)} [{_dot_attrs({'label': _node_label(node, d), **d})}];")
    for u, v, relation in g.edges(data="relation"):
        if relation == "flow":
            lines.append(f"  {_dot_id(u)} -> {_dot_id(v)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# The picture


@dataclass
class Box:
    """A run of equal consecutive modules in a stage (or the stem / downsampling / head)."""

    title: str
    detail: str
    shape: str
    cost: Cost
    count: int = 1
    key: str = ""  # colour key: the mixer type


@dataclass
class Column:
    title: str
    subtitle: str
    boxes: list[Box] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)


def _mixer_detail(mixer: Any) -> str:
    """The mixer's most telling parameters (those set away from nothing): e.g. ``sep_conv k=7``."""
    if mixer is None:
        return ""
    short = {"kernel_size": "k", "head_dim": "head_dim", "num_heads": "heads", "order": "order", "filter": "filter",
             "window_size": "window", "sr_ratio": "sr", "pool_size": "pool", "halo_size": "halo"}
    values = mixer.model_dump()
    bits = [f"{abbr}={values[key]}" for key, abbr in short.items() if values.get(key) is not None][:2]
    return " ".join([mixer.type, *bits])


def columns(p: Plan) -> list[Column]:
    """What the diagram shows: stem, one column per stage (downsampling, then runs of equal blocks), head."""
    g = p.graph
    stem = g.nodes["stem"]
    cols = [Column("stem", f"{_shape(stem['in_shape'])} -> {_shape(stem['out_shape'])}",
                   [Box("stem", "", _shape(stem["out_shape"]), stem["cost"])], stem["cost"])]
    for i in range(p.spec.num_stages):
        stage = g.nodes[f"stages.{i}"]
        col = Column(f"stage {i}", f"{p.spec.depths[i]} blocks, {_shape(stage['out_shape'])}", cost=stage["cost"])
        for member in p.stage_members(i):
            d = g.nodes[member]
            if d["kind"] == "downsample":
                col.boxes.append(Box("downsample", "", _shape(d["out_shape"]), d["cost"]))
                continue
            title = d.get("symbol", "block")
            detail = _mixer_detail(d.get("mixer"))
            last = col.boxes[-1] if col.boxes else None
            if last is not None and (last.title, last.detail, last.cost) == (title, detail, d["cost"]):
                last.count += 1
            else:
                key = getattr(d.get("mixer"), "type", title)
                col.boxes.append(Box(title, detail, _shape(d["out_shape"]), d["cost"], key=key))
        cols.append(col)
    head = g.nodes["head"]
    title = p.spec.head.type if p.spec.num_classes else "pooled features"
    cols.append(Column("head", f"{title}, {p.spec.num_classes or p.spec.widths[-1]} outputs",
                       [Box(title, "", _shape(head["out_shape"]), head["cost"])], head["cost"]))
    return cols


def _cost_text(cost: Cost) -> str:
    fft = f" + {format_count(cost.fft_macs)} FFT" if cost.fft_macs else ""
    return f"{format_count(cost.params)} params, {format_count(cost.macs)} MACs{fft}"


def _draw_plan(ax, p: Plan, colours: dict[str, Any]) -> None:
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    cols = columns(p)
    col_w, gap, box_h, box_gap = 2.6, 0.6, 1.0, 0.25
    rows = max(len(c.boxes) for c in cols)
    top = rows * (box_h + box_gap) + 0.6
    for k, col in enumerate(cols):
        x = k * (col_w + gap)
        ax.text(x + col_w / 2, top, col.title, ha="center", va="bottom", fontsize=10, weight="bold")
        ax.text(x + col_w / 2, top - 0.05, col.subtitle, ha="center", va="top", fontsize=7, color="#444444")
        y = top - 0.55
        for box in col.boxes:
            y -= box_h
            face = colours.get(box.key, "#e8e8e8")
            ax.add_patch(FancyBboxPatch((x + 0.05, y), col_w - 0.1, box_h, boxstyle="round,pad=0.02,rounding_size=0.1",
                                        facecolor=face, edgecolor="#555555", linewidth=0.8))
            count = f" x{box.count}" if box.count > 1 else ""
            each = " each" if box.count > 1 else ""
            lines = [f"{box.title}{count}", box.detail, box.shape, _cost_text(box.cost) + each]
            ax.text(x + col_w / 2, y + box_h / 2, "\n".join(line for line in lines if line), ha="center",
                    va="center", fontsize=6.5)
            y -= box_gap
        ax.text(x + col_w / 2, -0.15, _cost_text(col.cost), ha="center", va="top", fontsize=7, weight="bold")
        if k:
            ax.add_patch(FancyArrowPatch((x - gap + 0.02, top - 0.55 - box_h / 2), (x + 0.03, top - 0.55 - box_h / 2),
                                         arrowstyle="-|>", mutation_scale=10, color="#333333"))
    est = p.estimate()
    ax.set_title(f"{p.spec.name or 'spec'}  (macro {p.spec.macro}, input {p.spec.input_size}x{p.spec.input_size}): "
                 f"{est.params:,} params, {format_count(est.macs)} MACs"
                 + (f" + {format_count(est.fft_macs)} FFT" if est.fft_macs else ""), fontsize=11, loc="left")
    ax.set_xlim(-0.2, len(cols) * (col_w + gap) - gap + 0.2)
    ax.set_ylim(-0.8, top + 0.6)
    ax.set_axis_off()


def draw(p: Plan | EnsemblePlan, path: str | Path) -> Path:
    """Save the stage/block diagram of a Plan (an ensemble: one row per member) to ``path`` (.png/.svg/.pdf)."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op where a backend is already chosen
    import matplotlib.pyplot as plt

    plans = p.members if isinstance(p, EnsemblePlan) else [p]
    keys = sorted({b.key for q in plans for c in columns(q) for b in c.boxes if b.key})
    palette = plt.get_cmap("Pastel1").colors + plt.get_cmap("Pastel2").colors
    colours = {key: palette[i % len(palette)] for i, key in enumerate(keys)}
    width = max(len(q.spec.widths) + 2 for q in plans) * 3.2
    heights = [max(len(c.boxes) for c in columns(q)) * 1.25 + 1.8 for q in plans]
    fig, axes = plt.subplots(len(plans), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    try:
        for ax, q in zip(axes[:, 0], plans):
            _draw_plan(ax, q, colours)
        if isinstance(p, EnsemblePlan):
            est = p.estimate()
            fig.suptitle(f"{p.spec.name or 'ensemble'}: mean of {len(plans)} members' logits, {est.params:,} params, "
                         f"{format_count(est.macs)} MACs in all", fontsize=12, weight="bold")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
    return path


def write(p: Plan | EnsemblePlan, path: str | Path) -> Path:
    """Write the Plan to ``path`` in the format its suffix names (see :data:`SUFFIXES`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        return draw(p, path)
    if suffix == ".graphml":
        nx.write_graphml(export_graph(p), path)
    elif suffix in (".dot", ".gv"):
        path.write_text(to_dot(p))
    else:
        raise ValueError(f"unknown output format {path.suffix or '(none)'!r} for {path}; use one of "
                         f"{', '.join(SUFFIXES)}")
    return path


__all__ = ["Box", "Column", "SUFFIXES", "columns", "draw", "export_graph", "to_dot", "write"]
