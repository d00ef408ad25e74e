#!/usr/bin/env python3
"""Plots a soak CSV as an SVG: RSS per process over time (top) and directory sizes (bottom).

    python3 benches/soak_plot.py SAMPLES.csv OUT.svg [--x seconds|operations] [--title TEXT]

The CSV is what `wharf bench soak --samples` and `benches/soak.sh` write: the columns `seconds`
and `operations`, then `<name>_rss_mib` per process and `<name>_disk_mib` per directory. Only the
standard library is used, so it runs wherever python3 does.
"""

import argparse
import csv
import math
import sys
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
WIDTH, PANEL_HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 240, 40, 45


def nice_ceiling(value):
    """The smallest 1/2/5 x 10^k at or above value (value > 0)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10 ** exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def panel(series, xs, x_label, y_label, top, title):
    """SVG elements of one panel: axes, ticks, a legend and one polyline per series."""
    parts = []
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = PANEL_HEIGHT - TOP - BOTTOM
    x_max = nice_ceiling(max(xs) if xs else 1.0)
    finite = [v for _, values in series for v in values if v is not None]
    y_max = nice_ceiling(max(finite) * 1.05 if finite else 1.0)

    def sx(x):
        return LEFT + plot_w * x / x_max

    def sy(y):
        return top + TOP + plot_h * (1 - y / y_max)

    parts.append(f'<text x="{LEFT}" y="{top + 22}" font-size="15" font-weight="bold">'
                 f'{escape(title)}</text>')
    parts.append(f'<rect x="{LEFT}" y="{top + TOP}" width="{plot_w}" height="{plot_h}" '
                 'fill="none" stroke="#444"/>')
    for i in range(6):
        y = y_max * i / 5
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{y:g}</text>')
        x = x_max * i / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{top + TOP + plot_h + 16}" font-size="11" '
                     f'text-anchor="middle">{x:g}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{top + PANEL_HEIGHT - 8}" font-size="12" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="16" y="{top + TOP + plot_h / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 16 {top + TOP + plot_h / 2})">{escape(y_label)}</text>')
    for index, (name, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in zip(xs, values) if v is not None)
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" '
                         f'points="{points}"/>')
        legend_y = top + TOP + 14 + 18 * index
        parts.append(f'<line x1="{WIDTH - RIGHT + 12}" x2="{WIDTH - RIGHT + 32}" y1="{legend_y - 4}" '
                     f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="3"/>')
        peak = max((v for v in values if v is not None), default=float("nan"))
        parts.append(f'<text x="{WIDTH - RIGHT + 38}" y="{legend_y}" font-size="12">'
                     f'{escape(name)} (peak {peak:.1f})</text>')
    return parts


def number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("svg")
    parser.add_argument("--x", choices=["seconds", "operations"], default="seconds")
    parser.add_argument("--title", default="")
    args = parser.parse_args()

    with open(args.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        sys.exit(f"{args.csv}: no samples")
    xs = [number(row[args.x]) or 0.0 for row in rows]
    rss = [(c[:-len("_rss_mib")], [number(r[c]) for r in rows])
           for c in rows[0] if c.endswith("_rss_mib")]
    disk = [(c[:-len("_disk_mib")], [number(r[c]) for r in rows])
            for c in rows[0] if c.endswith("_disk_mib")]

    x_label = "seconds" if args.x == "seconds" else "operations"
    panels = [(rss, "RSS (MiB)", f"{args.title} RSS per process".strip())]
    if disk:
        panels.append((disk, "disk (MiB)", f"{args.title} disk per directory".strip()))
    height = PANEL_HEIGHT * len(panels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    for index, (series, y_label, title) in enumerate(panels):
        parts += panel(series, xs, x_label, y_label, PANEL_HEIGHT * index, title)
    parts.append("</svg>")
    with open(args.svg, "w") as handle:
        handle.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
