"""Self-contained HTML reports (every picture embedded as base64): the demo's report.html from the modality
halves' result dicts, and `genpref report RUN [RUN ...]` for any runs side by side. Both name every metric
in a glossary, show settings as tables, say how each interval was computed, and add a one-line reading
where a curve stays flat or a metric gets worse."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path

from genpref.glossary import LN2, term

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
CURVE_KEYS = ("loss", "implicit_acc", "reward", "reward_online", "reward_mean", "open_gate", "e_ratio_w", "margin", "kl")
MAX_CURVES = 8
FLAT = 0.01  # a curve whose late mean is within 1% of its early mean "stays flat"
SMALL_PICTURE = 256  # pictures narrower than this are shown at 2× with square pixels (no blur)

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
h3 { margin-top: 1.6rem; font-size: 1.05rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: right; vertical-align: top; } th { background: #f4f4f4; }
td.l, th.l { text-align: left; } .pos { color: #137333; font-weight: 600; } .neg { color: #b3261e; }
tr.diff td { background: #fff8e1; }
code { font-size: .82rem; color: #555; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figure img.small { image-rendering: pixelated; }
figcaption { font-size: .85rem; color: #555; max-width: 520px; }
.note { color: #555; font-size: .88rem; max-width: 60rem; }
ul.reading li { color: #8a4b00; margin: .2rem 0; }
details { margin: .6rem 0; } summary { cursor: pointer; color: #444; }
"""


# ---------------------------------------------------------------------------------------------- pieces


def _e(x) -> str:
    return html.escape(str(x))


def _data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.3g}"
    return _e(x)


def _plain(v) -> str:
    """A settings value for people: floats to 4 significant digits (a learning rate of 1e-4 stays 1e-4)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v) if v else "(none)"
    if v is None:
        return "–"
    return str(v)


def flatten(values: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_table(values: dict) -> str:
    """One row per setting; nested settings as dotted names."""
    rows = "".join(f"<tr><td class='l'><code>{_e(k)}</code></td><td class='l'>{_e(_plain(v))}</td></tr>"
                   for k, v in flatten(values).items())
    return f"<table><tr><th class='l'>setting</th><th class='l'>value</th></tr>{rows}</table>"


def compare_table(columns: dict[str, dict]) -> str:
    """Settings of several runs side by side: the rows that differ first (highlighted), all rows folded."""
    flat = {name: flatten(v) for name, v in columns.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    differ = [k for k in keys if len({_plain(f.get(k)) for f in flat.values()}) > 1]
    head = "<tr><th class='l'>setting</th>" + "".join(f"<th class='l'>{_e(n)}</th>" for n in flat) + "</tr>"

    def rows(ks, cls=""):
        return "".join(f"<tr class='{cls}'><td class='l'><code>{_e(k)}</code></td>"
                       + "".join(f"<td class='l'>{_e(_plain(f.get(k)))}</td>" for f in flat.values()) + "</tr>" for k in ks)

    parts = []
    if len(flat) > 1:
        parts.append(f"<p class='note'>{len(differ)} of {len(keys)} settings differ between the runs:</p>"
                     + (f"<table>{head}{rows(differ, 'diff')}</table>" if differ else ""))
    parts.append(f"<details{' open' if len(flat) == 1 else ''}><summary>all {len(keys)} settings</summary>"
                 f"<table>{head}{rows(keys)}</table></details>")
    return "".join(parts)


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"


def _metric_cell(name: str) -> str:
    t = term(name)
    return f"{_e(t.label)}<br><code>{_e(name)}</code>" if t.label != name else f"<code>{_e(name)}</code>"


def _picture(src_path: Path, alt: str) -> str:
    """An embedded picture; small ones (the shapes task's 64-px renders) are doubled with square pixels,
    large ones (animations with captions drawn in) keep smooth scaling so their text stays readable."""
    width = None
    try:
        from PIL import Image

        with Image.open(src_path) as im:
            width = im.size[0]
    except Exception:  # not a picture PIL reads: show it as it is
        pass
    small = width is not None and width < SMALL_PICTURE
    size = f" width='{2 * width}'" if small else ""
    return f"<img class='{'small' if small else 'large'}'{size} alt='{_e(alt)}' src='{_data_uri(src_path)}'>"


def curves_png(curves: dict[str, dict[str, list]], keys=None) -> bytes | None:
    """Small plots (loss, implicit accuracy, reward, ...), four to a row, with a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(keys) if keys is not None else curve_keys(curves)
    if not keys:
        return None
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for run, series in curves.items():
            points = [(s, v) for s, v in series.get(key, []) if v is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=run, lw=1.2)
        ax.set_title(f"{term(key).label} ({key})" if term(key).label != key else key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def curve_keys(curves: dict[str, dict[str, list]]) -> list[str]:
    present = {k for c in curves.values() for k, v in c.items() if v}
    keys = [k for k in CURVE_KEYS if k in present]
    return keys + sorted(present - set(keys) - {"lr", "step_time", "samples_per_s", "grad_norm"})[: max(0, MAX_CURVES - len(keys))]


# ---------------------------------------------------------------------------------------------- readings


def curve_reading(run: str, key: str, series: list) -> str | None:
    """One line when a watched curve does not move over the run (e.g. a DPO/SoPo loss stuck at ln 2): the
    mean of its last 10% of steps is within 1% of the mean of its first 10% (means, so step noise is no move)."""
    values = [v for _, v in series if v is not None]
    if len(values) < 5 or (key != "loss" and term(key).better is None):
        return None
    k = max(1, len(values) // 10)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    if abs(last - first) > FLAT * max(abs(first), 1e-12):
        return None
    span = f"all {len(values)} logged steps (mean of the first 10% of steps {first:.4g}, of the last 10% {last:.4g})"
    if key == "loss" and abs(last - LN2) <= FLAT * LN2:
        return (f"{run}: the loss stays at ln 2 = 0.693 over {span}: the policy's preference for the winners never "
                "departs from the reference's, so the objective gives almost no signal (check objective.beta, the lr, "
                "and for SoPo open_gate: a closed gate leaves only the winner term).")
    return f"{run}: {term(key).label} ({key}) stays within {FLAT:.0%} over {span}: it does not move."


def _worse(better: str | None, diff: float) -> bool:
    return (better == "higher" and diff < 0) or (better == "lower" and diff > 0)


def result_readings(rows: list[dict], paired: list[dict]) -> list[str]:
    """One line per paired comparison whose interval lies wholly on the bad side of zero, and per metric
    without an interval that is worse for a fine-tuned model than for the base."""
    out = []
    for r in paired:
        t, ci = term(r["metric"]), r.get("ci95")
        if ci and _worse(t.better, ci[0]) and _worse(t.better, ci[1]):
            out.append(f"{r['a']} is worse than {r['b']} on {t.label}: {r['diff']:+.3f} {_ci(ci)}, n = {r.get('n')} "
                       f"({t.better} is better; the 95% interval excludes 0).")
    base = {r["metric"]: r for r in rows if r.get("model") == "base"}
    for r in rows:
        b, t = base.get(r["metric"]), term(r["metric"])
        if r.get("ci95") or not b or r is b or r["value"] is None or b["value"] is None:
            continue
        if _worse(t.better, r["value"] - b["value"]):
            out.append(f"{t.label} is worse for {r['model']} ({r['value']:.3f}) than for the base ({b['value']:.3f}; "
                       f"{t.better} is better). No interval: the value is the mean of n = {r.get('n')} evaluation "
                       "passes, so the size of the change is not established.")
    return out


def _readings(lines: list[str]) -> str:
    if not lines:
        return ""
    return "<p class='note'><b>Readings</b></p><ul class='reading'>" + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul>"


# ---------------------------------------------------------------------------------------------- tables


def results_table(rows: list[dict]) -> str:
    out = ["<table><tr><th class='l'>model</th><th class='l'>metric</th><th>value</th><th>95% CI</th><th>n</th>"
           "<th class='l'>interval</th></tr>"]
    for r in rows:
        how = term(r["metric"]).interval or "–"
        out.append(f"<tr><td class='l'>{_fmt(r['model'])}</td><td class='l'>{_metric_cell(r['metric'])}</td>"
                   f"<td>{_fmt(r['value'])}</td><td>{_ci(r.get('ci95'))}</td><td>{_fmt(r.get('n'))}</td>"
                   f"<td class='l note'>{_e(how)}</td></tr>")
    return "".join(out) + "</table>"


def paired_table(paired: list[dict]) -> str:
    out = ["<table><tr><th class='l'>paired difference</th><th class='l'>metric</th><th>difference</th><th>95% CI</th>"
           "<th>n</th><th>McNemar p</th></tr>"]
    for r in paired:
        ci, better = r.get("ci95"), term(r["metric"]).better
        good = ci and ((better == "higher" and ci[0] > 0) or (better == "lower" and ci[1] < 0))
        bad = ci and _worse(better, ci[0]) and _worse(better, ci[1])
        cls = "pos" if good else ("neg" if bad else "")
        p = r.get("mcnemar_p")
        out.append(f"<tr><td class='l'>{_fmt(r['a'])} − {_fmt(r['b'])}</td><td class='l'>{_metric_cell(r['metric'])}</td>"
                   f"<td class='{cls}'>{r['diff']:+.3f}</td><td class='{cls}'>{_ci(ci)}</td><td>{_fmt(r.get('n'))}</td>"
                   f"<td>{'–' if p is None else f'{p:.3g}'}</td></tr>")
    return "".join(out) + ("</table><p class='note'>Same held-out prompts and the same initial noise for every model. "
                           "Interval: paired percentile bootstrap of the mean difference over the n items; McNemar p: "
                           "exact test on the items where exactly one model is right. Green: better with 95% confidence; "
                           "red: worse with 95% confidence.</p>")


def glossary(names) -> str:
    names = sorted(set(names), key=str.lower)
    rows = []
    for n in names:
        t = term(n)
        rows.append(f"<tr><td class='l'><code>{_e(n)}</code></td><td class='l'>{_e(t.label)}</td><td class='l'>{_e(t.meaning)}</td>"
                    f"<td class='l'>{_e(t.better or '–')}</td><td class='l'>{_e(t.interval or '–')}</td></tr>")
    return ("<h2>Glossary</h2><table><tr><th class='l'>name</th><th class='l'>in words</th><th class='l'>meaning</th>"
            "<th class='l'>better</th><th class='l'>interval (evaluation rows)</th></tr>" + "".join(rows) + "</table>")


def _page(title: str, body: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>")


# ---------------------------------------------------------------------------------------------- the demo report


def _section(name: str, result: dict, root: Path, names: set) -> str:
    parts = [f"<h2>{_e(name)}: {_e(result.get('task', ''))} — recipe {_e(result.get('recipe', ''))}</h2>"]
    if result.get("error"):
        return parts[0] + f"<p class='neg'>failed: {_e(result['error'])}</p>"
    rows, paired, curves = result.get("results", []), result.get("paired", []), result.get("curves", {})
    names.update(r["metric"] for r in rows + paired)
    readings = [x for run, series in curves.items() for k, s in series.items() if (x := curve_reading(run, k, s))]
    parts.append(_readings(result_readings(rows, paired) + readings))
    if rows:
        parts.append("<h3>Evaluation</h3>" + results_table(rows))
    if paired:
        parts.append(paired_table(paired))
    keys = curve_keys(curves)
    names.update(keys)
    png = curves_png(curves, keys)
    if png:
        parts.append("<h3>Training curves</h3><figure><img alt='training curves' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'><figcaption>training curves "
                     "from each run's metrics.jsonl (names in the glossary)</figcaption></figure>")
    figures = [f for f in result.get("figures", []) if (root / f["path"]).is_file()]
    if figures:
        parts.append("<h3>Samples</h3>")
    for fig in figures:
        parts.append(f"<figure>{_picture(root / fig['path'], fig['title'])}<figcaption>{_e(fig['title'])}</figcaption></figure>")
    if result.get("settings"):
        parts.append("<h3>Settings</h3>" + settings_table(result["settings"]))
    return "\n".join(parts)


def write_report(out_dir: Path, results: dict[str, dict], meta: dict) -> Path:
    """metrics.json (everything the halves returned + meta) and a self-contained report.html."""
    out_dir = Path(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps({"meta": meta, **results}, indent=1, default=float))
    names: set = set()
    body = ["<h1>genpref demo</h1>" + settings_table(meta)]
    body += [_section(name, res, out_dir, names) for name, res in results.items()]
    body.append(glossary(names))
    path = out_dir / "report.html"
    path.write_text(_page("genpref demo", body))
    return path


# ---------------------------------------------------------------------------------------------- genpref report


def _step_of(tag: str) -> float:
    m = re.fullmatch(r"step-(\d+)", tag)
    return int(m.group(1)) if m else math.inf  # "final" last


def samples_over_training(run: Path) -> list[tuple[str, Path]]:
    """(tag, picture) in step order: image grids <tag>.png, else each tag's first motion GIF."""
    samples = run / "samples"
    if not samples.is_dir():
        return []
    found = {p.stem: p for p in samples.glob("*.png")}
    for gif in sorted(samples.glob("*_00.gif")):
        found.setdefault(gif.stem[: -len("_00")], gif)
    return sorted(found.items(), key=lambda kv: (_step_of(kv[0]), kv[0]))


def samples_table(runs: dict[str, Path]) -> str:
    """A row per run, a column per sampling point (step-N ..., final): the same prompts and seeds in each cell."""
    pics = {label: dict(samples_over_training(p)) for label, p in runs.items()}
    tags = sorted({t for per in pics.values() for t in per}, key=lambda t: (_step_of(t), t))
    if not tags:
        return "<p class='note'>no samples (train.sample_prompts was empty)</p>"
    head = "<tr><th class='l'>run</th>" + "".join(f"<th>{_e(t.replace('-', ' '))}</th>" for t in tags) + "</tr>"
    rows, captions = [], []
    for label, per in pics.items():
        cells = "".join(f"<td>{_picture(per[t], f'{label} {t}') if t in per else '–'}</td>" for t in tags)
        rows.append(f"<tr><td class='l'>{_e(label)}</td>{cells}</tr>")
        for t, pic in per.items():
            prompts = pic.parent / (f"{t}.txt" if pic.suffix == ".png" else f"{t}_prompts.txt")
            if prompts.is_file():
                captions.append(f"{label}: " + " | ".join(x for x in prompts.read_text().splitlines() if x))
                break
    motion = any(p.suffix == ".gif" for per in pics.values() for p in per.values())
    how = ("each cell animates the first sample of train.sample_prompts (its prompt drawn in)" if motion
           else "one grid row per prompt, one column per seed in train.sample_seeds")
    note = f"<p class='note'>Samples: {how}. Prompts: " + "; ".join(_e(c) for c in captions) + "</p>" if captions else ""
    return f"<table>{head}{''.join(rows)}</table>{note}"


def eval_tables(report: dict, names: set) -> str:
    """The tables of a run's eval/eval.json, image (scores, win rates) or motion (T2M metrics)."""
    parts = []
    if "metrics" in report:  # motion: the T2M protocol
        names.update(report["metrics"])
        parts.append(f"<p class='note'>T2M protocol, {_e(report.get('convention', ''))} convention: "
                     f"{_e(report.get('replications'))} replications over {_e(report.get('rows_used'))} of "
                     f"{_e(report.get('items'))} test items, groups of {_e(report.get('group_size'))}; test split "
                     f"{_e(report.get('root', '(not recorded)'))}. Interval: mean ± 1.96·std/√R over the R replications.</p>")
        rows = "".join(f"<tr><td class='l'>{_metric_cell(k)}</td><td>{v['mean']:.4f} ± {v['ci95']:.4f}</td>"
                       f"<td>{_fmt_pm(report.get('real', {}).get(k))}</td></tr>" for k, v in report["metrics"].items())
        parts.append(f"<table><tr><th class='l'>metric</th><th>generated</th><th>real motions</th></tr>{rows}</table>")
        if report.get("sampler"):
            parts.append(settings_table({"sampler": report["sampler"]}))
    if "scores" in report:  # images: scorers and win rates
        rows = []
        for scorer, per_model in report["scores"].items():
            for model, s in per_model.items():
                rows.append(f"<tr><td class='l'>{_e(scorer)}</td><td class='l'>{_e(model)}</td><td>{s['mean']:.3f}</td>"
                            f"<td>{s['std']:.3f}</td><td>{s['median_mean']:.3f}</td></tr>")
        parts.append("<table><tr><th class='l'>scorer</th><th class='l'>model</th><th>mean</th><th>std</th>"
                     "<th>mean of per-prompt medians</th></tr>" + "".join(rows) + "</table>")
        if report.get("win_rates"):
            names.add("win_rate")
            rows = [f"<tr><td class='l'>{_e(s)}</td><td class='l'>{_e(w['model'])} vs {_e(w['against'])}</td>"
                    f"<td>{w['win_rate']:.3f}</td><td>{_ci(w['ci95'])}</td><td>{w['wins']}/{w['ties']}/{w['losses']}</td>"
                    f"<td>{w['n_prompts']}</td></tr>" for s, w in report["win_rates"].items()]
            parts.append("<table><tr><th class='l'>scorer</th><th class='l'>comparison</th><th>win rate</th><th>95% CI</th>"
                         "<th>wins/ties/losses</th><th>n prompts</th></tr>" + "".join(rows) + "</table><p class='note'>"
                         "Interval: percentile bootstrap over the n prompts of the median-of-K paired win.</p>")
        if report.get("protocol"):
            parts.append(settings_table({"protocol": {k: v for k, v in report["protocol"].items() if k != "seeds"}}))
    return "".join(parts) or "<p class='note'>eval.json in a format this report does not know.</p>"


def _fmt_pm(v) -> str:
    return f"{v['mean']:.4f} ± {v['ci95']:.4f}" if v else "–"


def _run_info(run: Path) -> dict:
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    versions = info.get("versions") or {}
    return {"started": info.get("started"), "processes": info.get("world_size"), "seed": info.get("seed"),
            "resumed from": info.get("resumed_from"), "git commit": (info.get("git_commit") or "")[:10] or None,
            "torch": versions.get("torch"), "diffusers": versions.get("diffusers")}


def write_runs_report(runs, out: str | Path = "genpref-report.html") -> Path:
    """One page for `runs` side by side: curves from metrics.jsonl, samples over training, eval tables,
    settings, readings and a glossary."""
    from genpref.config import read_yaml
    from genpref.errors import UserError
    from genpref.rundir import read_metrics

    paths = [Path(r) for r in runs]
    for p in paths:
        if not (p / "config.yaml").is_file():
            raise UserError(f"{p} is not a run directory: it has no config.yaml (a run's train.output_dir has one)"
                            if p.exists() else f"{p}: not found; expected a run directory (a train.output_dir)")
    labels = []
    for p in paths:  # distinct labels, even for runs with the same directory name
        label = p.name
        while label in labels:
            label = f"{p.parent.name}/{label}"
        labels.append(label)
    names: set = set()
    curves = {}
    for label, p in zip(labels, paths):
        rows = read_metrics(p)
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "step"))
        curves[label] = {k: [[r["step"], r.get(k)] for r in rows if r.get(k) is not None] for k in keys}
    body = [f"<h1>genpref report: {_e(', '.join(labels))}</h1>",
            settings_table({"runs": {label: str(p) for label, p in zip(labels, paths)}})]
    readings = [x for run, series in curves.items() for k, s in series.items() if (x := curve_reading(run, k, s))]
    body.append(_readings(readings))
    keys = curve_keys(curves)
    names.update(keys)
    png = curves_png(curves, keys)
    if png:
        body.append("<h2>Training curves</h2><figure><img alt='training curves' "
                    f"src='data:image/png;base64,{base64.b64encode(png).decode()}'><figcaption>from each run's "
                    "metrics.jsonl; every logged name is in the glossary</figcaption></figure>")
    for series in curves.values():
        names.update(series)
    body.append("<h2>Samples over training</h2>" + samples_table(dict(zip(labels, paths))))
    body.append("<h2>Evaluation</h2>")
    for label, p in zip(labels, paths):
        report = p / "eval" / "eval.json"
        body.append(f"<h3>{_e(label)}</h3>")
        body.append(eval_tables(json.loads(report.read_text()), names) if report.is_file()
                    else f"<p class='note'>not evaluated: <code>genpref eval {_e(p)}</code> writes eval/eval.json</p>")
        grid = p / "eval" / "grid.png"
        if report.is_file() and grid.is_file():
            body.append(f"<figure>{_picture(grid, 'evaluation grid')}<figcaption>each prompt's median-scored image per "
                        "model (eval/grid.png)</figcaption></figure>")
    body.append("<h2>Runs</h2>" + compare_table({label: _run_info(p) for label, p in zip(labels, paths)}))
    body.append("<h2>Settings</h2>" + compare_table({label: read_yaml(p / "config.yaml") for label, p in zip(labels, paths)}))
    body.append(glossary(names))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page("genpref report", body))
    return out
