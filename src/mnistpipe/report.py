"""The README results table, generated from the committed metrics files (never typed by hand)."""

from __future__ import annotations

import re

# Numbers stated in the seed report ("CNNs and AutoEncoders" on MNIST), quoted for comparison.
REPORT = {
    "baseline": {"test": "98% (report table)", "val": "98.16% (epoch 5)", "time": "≈261 s (5 epochs)"},
    "tuned": {"test": "98.60%", "val": "99.10% (best epoch)", "time": "n/a"},
    "noisy": {"test": "98% (report table)", "val": "97.57%", "time": "≈475 s (5 epochs)"},
    "denoised": {"test": "99% (report table)", "val": "n/a", "time": "n/a"},
}
ROWS = [  # (label, evaluate.json key, training metrics key, report key)
    ("Baseline CNN, clean test", "baseline", "train_baseline", "baseline"),
    ("Tuned CNN, clean test", "tuned", "tune_cnn", "tuned"),
    ("Noisy-trained CNN, noisy test", "noisy", "train_on_noisy", "noisy"),
    ("Denoised-trained CNN, denoised test", "denoised", "train_on_denoised", "denoised"),
    ("Tuned (clean) CNN, noisy test", "tuned_on_noisy", None, None),
    ("Tuned (clean) CNN, denoised test", "tuned_on_denoised", None, None),
]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def results_markdown(metrics: dict) -> str:
    """Markdown tables from a dict of metrics files keyed by stage ('evaluate', 'train_baseline', ...)."""
    ev = metrics.get("evaluate", {})
    lines = [
        "| model | test accuracy (ours) | val accuracy (ours) | training time (ours) | report test | report val |"
        " report time |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, train_key, rep in ROWS:
        tr = metrics.get(train_key, {}) if train_key else {}
        r = REPORT.get(rep, {}) if rep else {}
        secs, epochs = tr.get("train_seconds"), tr.get("epochs")
        time = f"{secs:.0f} s ({epochs} epochs)" if secs is not None else "–"
        lines.append(
            f"| {label} | {_pct(ev.get(key, {}).get('accuracy'))} | {_pct(tr.get('val_acc')) if tr else '–'} | "
            f"{time} | {r.get('test', '–')} | {r.get('val', '–')} | {r.get('time', '–')} |"
        )
    dn, dae, noise = metrics.get("denoise", {}), metrics.get("train_dae", {}), metrics.get("add_awgn", {})
    tune = metrics.get("tune_cnn", {})
    lines += [
        "",
        "| denoising | value |",
        "|---|---|",
        f"| AWGN std | {noise.get('std', '–')} |",
        f"| noisy test PSNR / SSIM | {dn.get('test_psnr_noisy_db', float('nan')):.2f} dB / "
        f"{dn.get('test_ssim_noisy', float('nan')):.3f} |",
        f"| denoised test PSNR / SSIM | {dn.get('test_psnr_denoised_db', float('nan')):.2f} dB / "
        f"{dn.get('test_ssim_denoised', float('nan')):.3f} |",
        f"| autoencoder training time | {dae.get('train_seconds', float('nan')):.0f} s "
        f"({dae.get('epochs', '–')} epochs on {dae.get('train_images', '–')} images) |",
        f"| tuning search time | {tune.get('search_seconds', float('nan')):.0f} s "
        f"({tune.get('n_trials', '–')} trials) |",
    ]
    return "\n".join(lines)


def replace_section(text: str, table: str) -> str:
    """Put `table` between the results markers of a README text."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no {START} ... {END} section")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", text)
