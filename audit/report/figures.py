"""The report's pictures, drawn with matplotlib (Agg) from what the run folder stores:
``samples.npz`` (inputs, clean and attacked maps, perturbation curves of a few images; written
by :mod:`audit.engine.samples`) and the manifest's training curves (``prepared``).

Colour: maps use ``cividis`` (designed for colour-vision deficiency, lightness rising
monotonically, so it reads in greyscale); a clean map and its attacked map share one colour
scale (the pair's min..max, −max..max for signed maps). Curves: the colour-blind-safe
``tableau-colorblind10`` colours, each explainer also with its own line style and marker.
PNG bytes are deterministic (no timestamp or software metadata), so a re-render is identical.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from audit.report.model import Figure

SAMPLES = "samples.npz"
GRID_IMAGES = 3  # images per heatmap grid
CMAP = "cividis"
STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DPI = 72


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_samples(folder: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(index, arrays) of ``folder/samples.npz``; ([], {}) when the run stored none or it is unreadable."""
    path = Path(folder) / SAMPLES
    if not path.is_file():
        return [], {}
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        index = json.loads(str(arrays.pop("index")))
    except Exception:  # a damaged picture file costs the pictures, never the report
        return [], {}
    return [e for e in index if e.get("array") in arrays], arrays


def _shared_scale(a: np.ndarray, b: np.ndarray | None) -> tuple[float, float]:
    """One colour scale for a clean map and its attacked map: −max|·|..max|·| when either is
    signed (0 stays the middle); else their joint min..max (a large common offset, as in RISE
    maps, would otherwise wash the structure out)."""
    both = a.ravel() if b is None else np.concatenate([a.ravel(), b.ravel()])
    low, high = float(both.min()), float(both.max())
    if low < 0:
        top = max(-low, high)
        return (-top, top)
    return (low, high) if high > low else (low, low + 1.0)


TILE = 96  # pixels per image or map in a heatmap grid
GAP = 6  # white pixels between tiles
BAND = 14  # pixels between the input row and the maps, for the "clean map" labels


def _top(r: int) -> int:
    """First pixel row of grid row ``r`` in a heatmap mosaic (row 0: the inputs)."""
    return r * (TILE + GAP) + (BAND if r else 0)


def _place(mosaic: np.ndarray, texts: list, r: int, c: int, tile: np.ndarray | None) -> None:
    """Tile ``tile`` at grid row ``r``, column ``c`` of ``mosaic``; None writes "no map" there."""
    left = c * (TILE + GAP)
    if tile is None:
        texts.append((left + TILE / 2, _top(r) + TILE / 2, "no map", "center", "center"))
    else:
        mosaic[_top(r):_top(r) + TILE, left:left + TILE] = tile


def _tile(picture: np.ndarray) -> np.ndarray:
    """(TILE, TILE, 3) float RGB in [0, 1]: an (H, W, 3) picture resized by nearest neighbour."""
    h, w = picture.shape[:2]
    rows = (np.arange(TILE) * h) // TILE
    cols = (np.arange(TILE) * w) // TILE
    return picture[rows][:, cols]


def _input_tile(img: np.ndarray) -> np.ndarray:
    picture = img.transpose(1, 2, 0).astype(np.float32) / 255.0
    if picture.shape[-1] == 1:
        picture = np.repeat(picture, 3, axis=-1)
    return _tile(np.clip(picture[..., :3], 0.0, 1.0))


def _map_tile(m: np.ndarray, vmin: float, vmax: float, cmap) -> np.ndarray:
    scaled = np.clip((m.astype(np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    return _tile(cmap(scaled)[..., :3])


def heatmap_grids(index: list[dict], arrays: dict) -> list[Figure]:
    """One picture per attack: the first images and, per explainer, clean and attacked maps.

    The grid is composed as one RGB mosaic (numpy) and drawn on a single axes: a grid of one
    axes per tile took ~3 s per attack in matplotlib (a full suite's report spent over a minute
    on it)."""
    plt = _pyplot()
    import matplotlib

    cmap = matplotlib.colormaps[CMAP]
    inputs = {e["attack"]: arrays[e["array"]] for e in index if e["kind"] == "input"}
    clean_entry = next((e for e in index if e["kind"] == "input" and e["attack"] is None), None)
    if clean_entry is None:
        return []
    labels = clean_entry.get("labels", [])
    ids = clean_entry.get("ids", [])
    def restored(e: dict) -> np.ndarray:
        return arrays[e["array"]].astype(np.float32) * float(e.get("scale", 1.0))

    clean_maps = {e["explainer"]: restored(e) for e in index if e["kind"] == "map" and e["attack"] is None}
    attacked = {}
    for e in index:
        if e["kind"] == "map" and e["attack"] is not None:
            attacked.setdefault(e["attack"], {})[e["explainer"]] = restored(e)
    explainers = list(clean_maps)
    figures = []
    groups = list(attacked.items()) or ([(None, {})] if clean_maps else [])
    step = TILE + GAP
    for attack, maps in groups:
        n = min(GRID_IMAGES, inputs[None].shape[0], *(m.shape[0] for m in clean_maps.values()))
        rows, cols = 1 + len(explainers), 2 * n
        mosaic = np.ones((_top(rows) - GAP, cols * step - GAP, 3))
        texts = []  # (x, y, text, horizontal alignment, vertical alignment) in mosaic pixels
        x_att = inputs.get(attack, inputs[None])

        for i in range(n):
            label = labels[i] if i < len(labels) else ""
            _place(mosaic, texts, 0, 2 * i, _input_tile(inputs[None][i]))
            _place(mosaic, texts, 0, 2 * i + 1, _input_tile(x_att[i]))
            texts.append((2 * i * step + TILE / 2, -4, f"#{ids[i] if i < len(ids) else i} {label}\ninput",
                          "center", "bottom"))
            texts.append(((2 * i + 1) * step + TILE / 2, -4,
                          "attacked input" if attack in inputs else "same input", "center", "bottom"))
        for r, explainer in enumerate(explainers, start=1):
            texts.append((-6, _top(r) + TILE / 2, explainer, "right", "center"))
            for i in range(n):
                a = clean_maps[explainer][i]
                b = maps.get(explainer)
                b = None if b is None else b[i]
                vmin, vmax = _shared_scale(a, b)
                _place(mosaic, texts, r, 2 * i, _map_tile(a, vmin, vmax, cmap))
                _place(mosaic, texts, r, 2 * i + 1, None if b is None else _map_tile(b, vmin, vmax, cmap))
        for c in range(cols):  # in the band above the first map row
            texts.append((c * step + TILE / 2, _top(1) - 2, "clean map" if c % 2 == 0 else "attacked map",
                          "center", "bottom"))
        left, top, bottom = 110, 34, 4  # margins in pixels: row labels, two-line titles
        height, width = mosaic.shape[:2]
        fig = plt.figure(figsize=((width + left + 4) / DPI, (height + top + bottom) / DPI), dpi=DPI)
        ax = fig.add_axes([left / (width + left + 4), bottom / (height + top + bottom),
                           width / (width + left + 4), height / (height + top + bottom)])
        ax.imshow(mosaic, interpolation="nearest", extent=(0, width, height, 0))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.axis("off")
        for x, y, text, ha, va in texts:
            ax.text(x, y, text, ha=ha, va=va, fontsize=7, clip_on=False,
                    bbox=dict(facecolor="white", edgecolor="none", pad=0.5) if text == "no map" else None)
        title = "Clean maps" if attack is None else f"Maps under {attack}"
        caption = (f"Top row: the first {n} images (sample id, class) and the input the attacked setting sees. "
                   "Each further row: an explainer's clean map and attacked map side by side, one colour scale "
                   "per pair (cividis; dark = low, bright = high; the scale spans the pair's min..max, or "
                   "−max..max for signed maps).")
        figures.append(Figure(title, caption, _png(fig), f"{title}: inputs and saliency maps of {n} images"))
    return figures


def curve_plots(index: list[dict], arrays: dict) -> list[Figure]:
    plt = _pyplot()
    curves: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for e in index:
        if e["kind"] == "curve":
            curves.setdefault(e["metric"], {}).setdefault(e["attack"], {})[e["explainer"]] = arrays[e["array"]]
    figures = []
    for metric, by_attack in curves.items():
        attacks = list(by_attack)
        cols = min(4, len(attacks))
        rows = -(-len(attacks) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False, sharey=True)
        colours = plt.style.library["tableau-colorblind10"]["axes.prop_cycle"].by_key()["color"]
        explainers = list(dict.fromkeys(e for a in attacks for e in by_attack[a]))
        n_images = 0
        for k, attack in enumerate(attacks):
            ax = axes[k // cols][k % cols]
            for j, explainer in enumerate(explainers):
                curve = by_attack[attack].get(explainer)
                if curve is None:
                    continue
                n_images = max(n_images, curve.shape[0])
                t = np.linspace(0.0, 1.0, curve.shape[1])
                colour = colours[j % len(colours)]
                ax.fill_between(t, curve.min(axis=0), curve.max(axis=0), color=colour, alpha=0.18, linewidth=0)
                ax.plot(t, curve.mean(axis=0), STYLES[j % len(STYLES)], color=colour, marker=MARKERS[j % len(MARKERS)],
                        markevery=max(1, curve.shape[1] // 6), markersize=4, linewidth=1.4, label=explainer)
            ax.set_title(attack, fontsize=9)
            ax.set_xlabel("fraction of the perturbation steps", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for k in range(len(attacks), rows * cols):
            axes[k // cols][k % cols].axis("off")
        axes[0][0].set_ylabel("probability of the class", fontsize=8)
        axes[0][0].legend(fontsize=7, loc="best")
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.5 / (2.4 * rows) + 0.04, top=1 - 0.35 / (2.4 * rows),
                            wspace=0.08, hspace=0.55)
        caption = (f"{metric}: the target class's probability along the metric's perturbation of the attacked "
                   f"setting's input, in the order of its map; line = mean over {n_images} sample images, band = "
                   "their minimum to maximum (the summary's value is over every image).")
        figures.append(Figure(f"{metric} curves", caption, _png(fig), f"{metric} perturbation curves per attack"))
    return figures


def training_plots(manifest: dict) -> list[Figure]:
    """One figure per prepared attack or trained explainer state that recorded curves
    (``{name: {"values": [...]}}``)."""
    plt = _pyplot()
    figures = []
    for attack, summary in sorted((manifest.get("prepared") or {}).items()):
        series = {name: c["values"] for name, c in sorted(summary.items())
                  if isinstance(c, dict) and isinstance(c.get("values"), list) and len(c["values"]) > 1}
        if not series:
            continue
        fig, axes = plt.subplots(1, len(series), figsize=(3.0 * len(series), 2.3), squeeze=False)
        for ax, (name, values) in zip(axes[0], series.items(), strict=True):
            ax.plot(np.arange(len(values)), np.asarray(values, dtype=float), color="#006ba4", linewidth=1.2)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout(pad=0.4)
        figures.append(Figure(f"Training of {attack}", "The curves the attack (or trained explainer) recorded "
                              "while it trained (manifest.json, prepared).", _png(fig), f"training curves of {attack}"))
    return figures


def load_figures(run) -> list[Figure]:
    index, arrays = read_samples(run.folder)
    return heatmap_grids(index, arrays) + curve_plots(index, arrays) + training_plots(run.manifest)
