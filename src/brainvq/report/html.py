"""``brainvq report``: one self-contained HTML page for a run folder (figures embedded)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from brainvq.errors import ConfigError
from brainvq.io import atomic_write
from brainvq.report import figures
from brainvq.report.verdict import verdict_lines
from brainvq.runs import RunLayout

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.85em}.note{color:#a33;font-weight:600}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _table(rows: dict[str, Any], header: tuple[str, str] = ("metric", "value")) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>"
        for k, v in rows.items()
        if not isinstance(v, (dict, list))
    )
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _section(title: str, parts: list[str]) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>" if parts else ""


def _run_parts(run: Path, name: str) -> tuple[list[str], list[str]]:
    """Config and curves of one training run folder (``vqvae`` or ``prior``)."""
    config, curves = [], []
    cfg = run / "config.yaml"
    if cfg.is_file():
        doc = yaml.safe_load(cfg.read_text())
        config.append(f"<h3>{name}</h3><pre>{html.escape(yaml.safe_dump(doc, sort_keys=False))}</pre>")
    log = run / "logs" / "metrics.csv"
    if log.is_file():
        out = run / "figures" / f"{name}_training_curves.png"
        if not out.is_file():
            figures.training_curves(
                log,
                out,
                [k for k in figures.read_metrics_csv(log) if k.endswith("_epoch") or k.startswith(("val/", "test/"))],
            )
        curves.append(_img(out, f"{name} training curves"))
    return config, curves


def _pretrained_section(folder: Path) -> str:
    """The demo's opening: what the shipped pretrained model draws (``pretrained/showcase.json``)."""
    shown = _load_json(folder / "showcase.json")
    if not shown:
        return ""
    parts = [f"<p>{html.escape(shown.get('about', ''))}; model card: {html.escape(shown.get('model_card', ''))}</p>"]
    for fig, alt in (
        ("sample_grid.png", f"slices drawn by the pretrained {shown.get('model')} model at 5 positions"),
        ("completions.png", "completions: upper half kept, lower half drawn again by the prior"),
    ):
        if (folder / fig).is_file():
            parts.append(_img(folder / fig, alt))
    return _section(f"The pretrained {shown.get('model')} model (no training, {shown.get('seconds')} s)", parts)


def _training_parts(layout: RunLayout, pr: dict | None) -> tuple[list[str], list[str]]:
    """(config parts, curve parts) of the run's training folders."""
    # prior/top: the top level of a two-level prior trained on its own first (PriorTrainConfig.top_epochs)
    runs = [
        (layout.vqvae_dir, "vqvae"),
        *([(layout.generation_decoder_dir, "generation_decoder")] if layout.generation_decoder_dir.is_dir() else []),
        *([(layout.prior_dir / "top", "prior_top_level")] if pr and "top_level" in pr else []),
        (layout.prior_dir, "prior"),
    ]
    config_parts, curve_parts = [], []
    for folder, name in runs:
        c, k = _run_parts(folder, name)
        config_parts += c
        curve_parts += k
    return config_parts, curve_parts


def _figures(folder: Path, figs: tuple[tuple[str, str], ...]) -> list[str]:
    return [_img(folder / fig, alt) for fig, alt in figs if (folder / fig).is_file()]


def _drawn_by(gm: dict | None) -> str:
    """Which decoder drew a run's generated slices, from ``generation_metrics.json``."""
    decoder = (gm or {}).get("decoder")
    if not decoder:  # written before generation decoders existed
        return "the VQ-VAE's own decoder (this run records no generation decoder)"
    return f"the {decoder['drew']} decoder ({decoder['weights']})"


def _reconstruction_section(layout: RunLayout, ev: dict) -> str:
    weights = html.escape(str(ev.get("weights", layout.vqvae_weights)))
    rec = [f"<p>Reconstructions by the reconstruction decoder (the VQ-VAE's own, trained on pixel MSE): {weights}.</p>"]
    rec.append(_table({k: v for k, v in ev.items() if k not in ("figures",)}))
    rec += _figures(
        layout.vqvae_dir / "figures",
        (
            ("reconstructions.png", "originals vs reconstructions (per-image SSIM)"),
            ("reconstructions_worst.png", "worst reconstructions"),
            ("code_maps.png", "code maps"),
            ("codebook_usage.png", "codebook usage histogram"),
        ),
    )
    return _section("Reconstruction (test split)", rec)


def _prior_section(pr: dict | None) -> str:
    if not pr:
        return ""
    rows = {k: v for k, v in pr.items() if "bits" in k or k.startswith("n_") or k == "epochs_run"}
    if "top_level" in pr:  # trained on its own first; epochs_run above is the bottom level's
        rows["top level trained first: epochs_run"] = pr["top_level"].get("epochs_run")
    return _section("Prior", [_table(rows)])


def _generation_section(gen: Path, gm: dict | None, trained: dict | None = None) -> str:
    """Generated slices, their metrics and figures; ``trained``: the generation decoder's training summary."""
    by = _drawn_by(gm)
    parts = [
        f"<p>Generated slices (samples, completions, real vs generated) are drawn by {html.escape(by)}; "
        "the reconstructions above are the reconstruction decoder's.</p>"
    ]
    if trained:
        keys = ("epochs_run", "planned_epochs", "schedule_completed", "best_val_detail_gap")
        parts.append(_table({f"generation decoder training: {k}": trained.get(k) for k in keys}))
    if gm:
        rows = {f"generated: {k}": v for k, v in gm.get("generated", {}).items()}
        rows.update({f"real test (baseline): {k}": v for k, v in gm.get("real_test", {}).items()})
        parts.append(_table(rows))
        extra = gm.get("metrics")
        if extra:
            parts.append("<h3>Generation metrics, each next to its real-data baseline</h3>" + _metric_table(extra))
            parts += _figures(
                gen,
                (
                    ("figures/memorisation.png", "highest SSIM to a training slice: generated vs real test"),
                    ("figures/tissue_fractions.png", "tissue fractions per slice position: generated vs real test"),
                ),
            )
    parts += _figures(
        gen,
        (
            ("samples/real_vs_generated.png", f"real and generated slices at the same positions (drawn by {by})"),
            ("samples/sample_grid.png", f"generated slices (drawn by {by})"),
            ("samples/sample_code_maps.png", f"generated code maps and their drawings (by {by})"),
            ("figures/completions.png", f"completions: top half kept, bottom half sampled (drawn by {by})"),
        ),
    )
    return _section("Generation", parts)


def build_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Collect a demo-style run folder (``vqvae/``, ``prior/``, ``generation/``) into one HTML file."""
    layout = RunLayout(run_dir)
    run = layout.root
    if not run.is_dir():
        raise ConfigError(f"{run}: run folder not found")
    if not layout.vqvae_eval.is_file():
        raise ConfigError(f"{run}: no vqvae/eval_metrics.json (run `brainvq demo` or `brainvq evaluate` first)")
    summary = layout.read_summary()
    data_note = summary.get("data") or (_load_json(layout.vqvae_eval) or {}).get("data", "")
    pr = _load_json(layout.prior_summary)
    config_parts, curve_parts = _training_parts(layout, pr)
    ev = _load_json(layout.vqvae_eval) or {}
    gm = _load_json(layout.generation_metrics)
    lines = verdict_lines({"reconstruction_test": ev, **summary}, gm or {})
    answer = ["<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"]
    if layout.real_vs_generated.is_file():
        alt = f"real (top rows) and generated slices (drawn by {_drawn_by(gm)}), same positions"
        answer.append(_img(layout.real_vs_generated, alt))
    trained_here = summary.get("trained_here")
    sections = [
        _pretrained_section(layout.pretrained_dir),
        _section(f"Verdict ({trained_here})" if trained_here else "Verdict", answer),
    ]
    if gm and gm.get("prior_gap"):
        sections.append(_section("The prior's gap (the generation verdict)", [prior_gap_html(gm["prior_gap"])]))
    if gm and gm.get("judges"):
        sections.append(_section("Judges (generated vs real test: diagnostic)", [judges_html(gm["judges"])]))
    sections += [
        _section("Training curves", curve_parts),
        _reconstruction_section(layout, ev),
        _prior_section(pr),
        _generation_section(
            layout.generation_dir, gm, _load_json(layout.generation_decoder_dir / "train_summary.json")
        ),
    ]
    judges = _load_json(run / "judges" / "judge_table.json")
    if judges:
        sections.append(_section("Power check of the judges", [judge_table_html(judges["rows"])]))
    sections.append(anomaly_section(run / "anomaly_eval"))
    timings = summary.get("timings")
    if timings:
        sections.append(_section("Wall time", [_table(timings, ("stage", "seconds"))]))
    sections.append(_section("Configuration", config_parts))
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>brainvq report</title>"
        f"<style>{_CSS}</style></head><body><h1>brainvq report: {html.escape(str(run))}</h1>"
        f"<p class='note'>Data: {html.escape(str(data_note))}</p>{''.join(sections)}</body></html>"
    )
    out = Path(out_path) if out_path else layout.report
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out


_GAP_SETS = {
    "samples": "samples (the verdict)",
    "bottom_redrawn": "real top grids, bottom grids drawn by the prior (level split)",
    "floor": "reconstructed validation slices (the floor)",
}


def prior_gap_html(gap: dict) -> str:
    """The distribution judges for each set against the drawing decoder's reconstructions of test slices."""
    v, t, guard = gap["verdict"], gap["thresholds"], gap["verdict"].get("decoder_guard")  # None: runs before it
    ok = {
        n: v["accept"] if n == "samples" else r["c2st"]["accept"] and r["frechet"]["accept"]
        for n, r in gap["sets"].items()
    }
    rows = "".join(
        f"<tr><td>{html.escape(_GAP_SETS.get(name, name))}</td><td>{_fmt(r['c2st']['accuracy'])}</td>"
        f"<td>{_fmt(r['frechet']['ratio'])}x</td><td>{'accept' if ok[name] else '<b>reject</b>'}</td></tr>"
        for name, r in gap["sets"].items()
    )
    guarded = guard and (
        f" The samples' verdict counts only while the decoder's own reconstructions read <= {guard['c2st_max']} "
        f"against real slices; they read {_fmt(guard['c2st'])}{'' if guard['accept'] else ', so the samples are rejected'}."
    )
    return (
        f"<p>Each set against the {html.escape(gap['decoder'])} decoder's reconstructions of {gap['n']} real test "
        f"slices (brain region); accepted at classifier accuracy <= {t['c2st_accept']} and Fréchet distance "
        f"<= {t['fd_max_ratio']:g}x its floor.{guarded or ''}</p><table><tr><th>set</th><th>classifier accuracy</th>"
        f"<th>Fréchet / floor</th><th>verdict</th></tr>{rows}</table>"
    )


def judges_html(judged: dict) -> str:
    """Each judge's value for generated vs real test, beside its validation-vs-test value and verdict."""
    rows = []
    for name, g in judged["generated_vs_test"].items():
        r = judged["validation_vs_test"].get(name, {})
        ratio = f" ({_fmt(g['ratio'])}x floor)" if g.get("ratio") is not None else ""
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{_fmt(g['value'])}{ratio}</td><td>{_fmt(r.get('value'))}</td>"
            f"<td>{'accept' if g['accept'] else '<b>reject</b>'}</td></tr>"
        )
    head = "<tr><th>judge</th><th>generated vs test</th><th>validation vs test</th><th>verdict</th></tr>"
    table = f"<table>{head}{''.join(rows)}</table>"
    parts = judged.get("feature_breakdown")
    if parts:
        sub = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt(v['c2st'])}</td><td>{_fmt(v['frechet_ratio'])}x</td></tr>"
            for k, v in parts.items()
        )
        table += (
            "<p>What tells them apart (diagnostic, not acceptance): the classifier and the Fréchet distance "
            "on every feature of the whole image, and on the brain region with feature groups left out. "
            "The acceptance judges above see only the brain region (the brain mask dilated by 5 px).</p><table><tr><th>features</th><th>classifier accuracy</th>"
            f"<th>Fréchet / floor</th></tr>{sub}</table>"
        )
    telling = judged.get("telling_features")
    if telling:
        sub = "".join(
            f"<tr><td>{html.escape(r['feature'])}</td><td>{_fmt(r['auc'])}</td><td>{_fmt(r['real_auc'])}</td>"
            f"<td>{r['median_shift']:+.4g}</td></tr>"
            for r in telling
        )
        table += (
            "<p>The features that tell them apart best on their own (diagnostic): each one's ROC AUC between "
            "generated and real test slices (0.5: no difference, 1: every slice apart), beside the same for "
            "real validation slices, and how far the generated median lies from the real one.</p>"
            "<table><tr><th>feature</th><th>AUC, generated vs test</th><th>AUC, validation vs test</th>"
            f"<th>median shift</th></tr>{sub}</table>"
        )
    return table


def _metric_table(m: dict) -> str:
    """Rows of (metric, generated, real baseline, what the baseline is) from ``generation_metrics`` output."""
    mem, div = m["memorisation"], m["diversity"]
    rows = [
        (
            "mean highest SSIM to a training slice",
            mem["generated"]["mean"],
            mem["real_test"]["mean"],
            "real test slices",
        ),
        (f"near copies (SSIM >= {mem['near_copy_threshold']})", len(mem["near_copies"]), "", ""),
        (
            f"diversity: mean {div['measure']} of random pairs (lower = more diverse)",
            div["generated"],
            div["real_test"],
            "real test pairs",
        ),
    ]
    tissue = m.get("tissue", {})
    if "generated_vs_test_mean_abs_diff" in tissue:
        rows.append(
            (
                "tissue fractions per position: mean |difference| to test",
                tissue["generated_vs_test_mean_abs_diff"],
                tissue["validation_vs_test_mean_abs_diff"],
                "validation vs test",
            )
        )
        rows.append(
            (
                "segmenter pixel accuracy on test masks",
                "",
                tissue["segmenter_on_test"]["pixel_accuracy"],
                "judge quality",
            )
        )
    else:
        rows.append(("tissue realism", tissue.get("skipped", "n/a"), "", ""))

    body = "".join(
        f"<tr><td>{html.escape(r[0])}</td><td>{_fmt(r[1])}</td><td>{_fmt(r[2])}</td><td>{html.escape(r[3])}</td></tr>"
        for r in rows
    )
    return f"<table><tr><th>metric</th><th>generated</th><th>real baseline</th><th>baseline</th></tr>{body}</table>"


def judge_table_html(rows: list[dict]) -> str:
    """The judge x set table of ``brainvq check-judges`` (its ``rows``) as an HTML table; cells show
    the value (or ratio to the real floor) and the verdict, red where it is not the expected one."""
    judges = list(dict.fromkeys(r["judge"] for r in rows))
    sets = list(dict.fromkeys(r["set"] for r in rows))
    cells = {}
    for r in rows:
        v = r["ratio"] if r.get("ratio") is not None else r["value"]
        text = f"{_fmt(v)}{'x' if r.get('ratio') is not None else ''} {r['verdict']}"
        if r["expected"] == "info":
            text = f"({text})"
        style = "" if r["pass"] else " style='color:#c00;font-weight:600'"
        cells[(r["set"], r["judge"])] = f"<td{style}>{html.escape(text)}</td>"
    head = "<tr><th>set</th>" + "".join(f"<th>{html.escape(j)}</th>" for j in judges) + "</tr>"
    body = "".join(
        f"<tr><td>{html.escape(s)}</td>" + "".join(cells.get((s, j), "<td></td>") for j in judges) + "</tr>"
        for s in sets
    )
    return f"<table>{head}{body}</table><p>(parentheses): the judge is not designed to catch that set.</p>"


def anomaly_section(folder: str | Path) -> str:
    """HTML for an ``evaluate-anomaly`` results folder (metrics table and overlays), or "" when absent."""
    res = _load_json(Path(folder) / "anomaly_results.json")
    if res is None:
        return ""
    names = {"auprc": "pixel AUPRC", "best_dice": "best Dice", "image_auroc": "image AUROC"}
    body = "".join(
        f"<tr><td>{label}</td>"
        + "".join(
            f"<td>{_fmt(res['metrics'][m][key]['mean'])} ± {_fmt(res['metrics'][m][key]['std'])}</td>"
            for m in ("restoration", "baseline")
        )
        + "</tr>"
        for key, label in names.items()
    )
    parts = [
        f"<p>{res['n_lesioned_per_seed']} lesioned slices per seed, seeds {res['seeds']}, "
        f"{res['n_clean']} clean slices of the {html.escape(res['split'])} split of {html.escape(str(res['data']))}; "
        f"{_fmt(res['seconds_per_slice'])} s per slice ({html.escape(res['device'])}).</p>",
        "<table><tr><th>metric (mean ± sd over seeds)</th><th>restoration</th>"
        f"<th>baseline: reconstruction residual</th></tr>{body}</table>",
    ]
    cdr = res.get("cdr_ge1_vs_cdr0", {})
    if "restoration" in cdr:
        rows = {f"CDR>=1 vs CDR 0, {m}: {k}": v for m in ("restoration", "baseline") for k, v in cdr[m].items()}
        parts.append(_table(rows))
    for fig in sorted(Path(folder, "figures").glob("*.png"))[:8]:
        parts.append(_img(fig, fig.stem.replace("_", " ")))
    return _section("Anomaly detection (synthetic lesions)", parts)
