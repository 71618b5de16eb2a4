"""The short answer a run report opens with: headline numbers against their real baselines, and warnings."""

from __future__ import annotations


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def verdict_lines(summary: dict, generation: dict | None = None) -> list[str]:
    """Plain-text lines: reconstruction, prior, generated slices per judge (with the real
    validation-vs-test value beside each), and every warning (e.g. training cut short).

    ``summary`` is a run summary (``summary.json``); ``generation`` defaults to its
    ``generation`` entry (``generation/generation_metrics.json``)."""
    lines: list[str] = []
    lines += [f"WARNING: {w}" for w in summary.get("warnings", [])]
    gen = generation if generation is not None else summary.get("generation") or {}
    lines += prior_gap_lines(gen)  # the generation verdict first
    rec = summary.get("reconstruction_test") or {}
    if "ssim_mean" in rec:
        brain = f", brain region {rec['brain_ssim_mean']:.3f}" if "brain_ssim_mean" in rec else ""
        lines.append(
            f"Reconstruction (test split, reconstruction decoder): SSIM {rec['ssim_mean']:.3f} whole image{brain}."
        )
    prior = summary.get("prior") or {}
    if "test_bits_per_code" in prior:
        levels = ""
        if "test_top_bits_per_code" in prior:
            levels = f" (top {prior['test_top_bits_per_code']:.2f}, bottom {prior['test_bottom_bits_per_code']:.2f})"
        done = prior.get("schedule_completed")
        sched = "" if done is None else (" planned schedule completed" if done else " planned schedule NOT completed")
        lines.append(f"Prior: {prior['test_bits_per_code']:.2f} bits/code on test{levels};{sched}.")
    if "generated" in gen:
        lines.append(
            f"Brain-shaped: {_pct(gen['generated']['fraction_brain_shaped'])} of {gen.get('n_samples', '?')} generated "
            f"slices (real test: {_pct(gen['real_test']['fraction_brain_shaped'])}); drawn by the "
            f"{(gen.get('decoder') or {}).get('drew', 'reconstruction')} decoder"
            + (f", top grid sampled at temperature {gen['top_temperature']}." if "top_temperature" in gen else ".")
        )
    judged = gen.get("judges")
    if judged:
        g, r = judged["generated_vs_test"], judged["validation_vs_test"]
        c2 = g["c2st"]
        lines.append(
            f"Against real test slices (diagnostic: the decoder's gap and the prior's together; brain region): "
            f"classifier accuracy {_num(c2['accuracy'], '.2f')} ± {_num(c2['stderr'], '.2f')} (real validation vs "
            f"test {_num(r['c2st']['accuracy'], '.2f')}; retired line for CPU recipes {judged['config']['c2st_accept']})."
        )
        fd = g["frechet"]
        lines.append(
            f"Fréchet distance: {_num(fd['value'], '.1f')}, {_num(fd['ratio'], '.1f')}x its validation-vs-test floor "
            f"{_num(fd['floor'], '.1f')}."
        )
        v = g["ventricles"]
        lines.append(f"Ventricle area per position: {_num(v['ratio'], '.2f')}x the validation-vs-test difference.")
        s = g["symmetry"]
        lines.append(f"Left-right symmetry: {_pct(s['value'])} of generated slices inside the real range.")
        verdicts = ", ".join(f"{k} {'ok' if x['accept'] else 'REJECTS'}" for k, x in g.items())
        lines.append(f"Judges: {verdicts}. {'All accept.' if judged['accepted_by_all'] else 'Not all accept.'}")
        parts = [
            f"{row}: classifier {_num(b['c2st'], '.2f')}, Fréchet {_num(b['frechet_ratio'], '.1f')}x"
            for row, b in (judged.get("feature_breakdown") or {}).items()
            if row != "brain region (acceptance)"
        ]
        if parts:
            lines.append("Diagnostics (not acceptance): " + "; ".join(parts) + ".")
    decoded = gen.get("judges_vs_reconstructions")  # run folders written before the prior's gap was the verdict
    if decoded and "prior_gap" not in gen:
        drawer = (gen.get("decoder") or {}).get("drew", "reconstruction")
        g, r = decoded["generated_vs_test"], decoded["validation_vs_test"]
        lines.append(
            f"Against the {drawer} decoder's reconstructions of real test slices (the best any prior can reach "
            f"with this decoder): two-sample accuracy {_num(g['c2st']['accuracy'], '.2f')} (reconstructed validation "
            f"vs test {_num(r['c2st']['accuracy'], '.2f')}), Fréchet distance {_num(g['frechet']['ratio'], '.1f')}x its floor."
        )
    return lines


def _num(x: float | None, spec: str) -> str:
    """``x`` formatted, or "n/a" where JSON held a non-finite number as null."""
    return "n/a" if x is None else format(x, spec)


def _gap_numbers(v: dict) -> str:
    err = f" ± {v['c2st_stderr']:.2f}" if v.get("c2st_stderr") is not None else ""
    return f"classifier {_num(v['c2st'], '.2f')}{err}, Fréchet {_num(v['frechet_ratio'], '.1f')}x its floor"


def prior_gap_lines(gen: dict) -> list[str]:
    """The generation verdict: the prior's gap (samples vs the drawing decoder's reconstructions
    of real test slices), its level split and the decoder's own gap; [] when not judged."""
    gap = gen.get("prior_gap")
    if not gap:
        return []
    v, t = gap["verdict"], gap["thresholds"]
    lines = [
        f"Prior's gap (the generation verdict; samples vs the {gap['decoder']} decoder's reconstructions of "
        f"real test slices, brain region): {_gap_numbers(v)} (reconstructed validation vs test: classifier "
        f"{_num(gap['floor']['c2st'], '.2f')}; accept <= {t['c2st_accept']} and <= {t['fd_max_ratio']:g}x): "
        f"{'ACCEPTED' if v['accept'] else 'REJECTED'}."
    ]
    guard = v.get("decoder_guard")  # absent in runs written before the decoder guard
    if guard and not guard["accept"]:
        lines[0] = lines[0][:-1] + (
            f" (the decoder's own reconstructions read {_num(guard['c2st'], '.2f')} against real slices, above "
            f"{guard['c2st_max']}: a decoder that draws little detail makes any prior look close to it)."
        )
    if "level_split" in gap:
        split, floor, share = gap["level_split"], gap["floor"]["c2st"], ""
        if None not in (v["c2st"], split["c2st"], floor) and v["c2st"] - floor > 0.02:
            part = (split["c2st"] - floor) / (v["c2st"] - floor)
            share = f" ({100 * part:.0f} % of the samples' excess over the floor)"
        lines.append(
            f"Level split: real top grids with bottom grids drawn by the prior read {_gap_numbers(split)}"
            f"{share}: the bottom level's part of the gap."
        )
    d = gap.get("decoder_gap")
    if d:
        limit = gap["thresholds"].get("decoder_c2st_max")  # absent in runs written before the decoder guard
        role = "diagnostic" if limit is None else f"the prior's gap counts while its classifier reads <= {limit}"
        lines.append(
            f"Decoder's gap ({role}): its reconstructions vs real test slices, classifier "
            f"{_num(d['c2st']['accuracy'], '.2f')}, Fréchet {_num(d['frechet']['ratio'], '.1f')}x its floor."
        )
    return lines
