"""The demo report: metrics.json and one self-contained report.html (tables with 95% CIs, training curves,
before/after pictures and animations embedded as base64), from the modality halves' result dicts."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
CURVE_KEYS = ("loss", "implicit_acc", "reward", "e_ratio_w")

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .35rem .6rem; text-align: right; } th { background: #f4f4f4; }
td.l, th.l { text-align: left; } .pos { color: #137333; font-weight: 600; } .neg { color: #b3261e; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; }
figcaption { font-size: .85rem; color: #555; max-width: 520px; }
.note { color: #555; font-size: .9rem; }
"""


def _data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return html.escape(str(x))


def _plain(v) -> str:
    """A settings value for people: floats to 4 significant digits (a learning rate of 1e-4 stays 1e-4),
    nested dicts as `key: value` lists."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_plain(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_plain(x) for x in v) + "]"
    return str(v)


def _settings(values: dict) -> str:
    items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(_plain(v))}</li>" for k, v in values.items())
    return f"<ul class='note'>{items}</ul>"


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"


def curves_png(curves: dict[str, dict[str, list]]) -> bytes | None:
    """One row of small plots (loss, implicit accuracy, reward, ...) with a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in CURVE_KEYS if any(k in c for c in curves.values())]
    keys += sorted({k for c in curves.values() for k in c} - set(keys))[: max(0, 4 - len(keys))]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run, series in curves.items():
            if key in series and series[key]:
                steps, values = zip(*[(s, v) for s, v in series[key] if v is not None])
                ax.plot(steps, values, label=run, lw=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _section(name: str, result: dict, root: Path) -> str:
    parts = [f"<h2>{html.escape(name)}: {html.escape(str(result.get('task', '')))} — recipe {html.escape(str(result.get('recipe', '')))}</h2>"]
    if result.get("error"):
        return parts[0] + f"<p class='neg'>failed: {html.escape(result['error'])}</p>"
    settings = result.get("settings", {})
    if settings:
        parts.append(_settings(settings))
    rows = result.get("results", [])
    if rows:
        parts.append("<table><tr><th class='l'>model</th><th class='l'>metric</th><th>value</th><th>95% CI</th><th>n</th></tr>")
        for r in rows:
            parts.append(f"<tr><td class='l'>{_fmt(r['model'])}</td><td class='l'>{_fmt(r['metric'])}</td><td>{_fmt(r['value'])}</td>"
                         f"<td>{_ci(r.get('ci95'))}</td><td>{_fmt(r.get('n'))}</td></tr>")
        parts.append("</table>")
    paired = result.get("paired", [])
    if paired:
        parts.append("<table><tr><th class='l'>paired difference</th><th class='l'>metric</th><th>difference</th><th>95% CI</th><th>n</th></tr>")
        for r in paired:
            ci = r.get("ci95")
            cls = "pos" if ci and ci[0] > 0 else ("neg" if ci and ci[1] < 0 else "")
            parts.append(f"<tr><td class='l'>{_fmt(r['a'])} − {_fmt(r['b'])}</td><td class='l'>{_fmt(r['metric'])}</td>"
                         f"<td class='{cls}'>{r['diff']:+.3f}</td><td class='{cls}'>{_ci(ci)}</td><td>{_fmt(r.get('n'))}</td></tr>")
        parts.append("</table><p class='note'>Same held-out prompts and the same initial noise for every model; "
                     "green: the 95% CI of the paired difference lies above zero.</p>")
    png = curves_png(result.get("curves", {}))
    if png:
        parts.append(f"<figure><img alt='training curves' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                     "<figcaption>training curves</figcaption></figure>")
    for fig in result.get("figures", []):
        path = root / fig["path"]
        if path.is_file():
            parts.append(f"<figure><img alt='{html.escape(fig['title'])}' src='{_data_uri(path)}'>"
                         f"<figcaption>{html.escape(fig['title'])}</figcaption></figure>")
    return "\n".join(parts)


def write_report(out_dir: Path, results: dict[str, dict], meta: dict) -> Path:
    """metrics.json (everything the halves returned + meta) and a self-contained report.html."""
    out_dir = Path(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps({"meta": meta, **results}, indent=1, default=float))
    body = ["<h1>genpref demo</h1>" + _settings(meta)]
    body += [_section(name, res, out_dir) for name, res in results.items()]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>genpref demo</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    path = out_dir / "report.html"
    path.write_text(page)
    return path
