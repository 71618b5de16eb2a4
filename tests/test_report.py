"""The HTML report renders in headless Chromium with every image loaded and no console errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brainvq.cli import main
from brainvq.data.errors import ConfigError
from brainvq.data.sources import DataConfig
from brainvq.evaluate import evaluate_generation
from brainvq.report.html import build_report
from tests.test_metrics_generation import FAST
from tests.test_prior_pipeline import trained  # noqa: F401  (module-scoped fixture)


@pytest.fixture(scope="module")
def report_run(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    data, vq, prior_dir = trained
    run = tmp_path_factory.mktemp("report_run")
    shutil.copytree(vq.parent, run / "vqvae")
    shutil.copytree(prior_dir, run / "prior")
    weights = run / "vqvae" / "vqvae.safetensors"
    assert (
        main(["evaluate", "--data", str(data), "--image-size", "64", "--weights", str(weights), "--no-progress"]) == 0
    )
    evaluate_generation(
        weights,
        run / "prior" / "prior.safetensors",
        DataConfig(root=str(data), image_size=64),
        run / "generation",
        n_samples=4,
        progress=False,
        metrics=FAST,
    )
    return run


def test_report_contents(report_run: Path):
    page = build_report(report_run).read_text()
    assert page.count("<img") >= 8 and "data:image/png;base64," in page
    metrics = json.loads((report_run / "generation" / "generation_metrics.json").read_text())["metrics"]
    assert {"c2st", "frechet_position_features", "memorisation", "diversity", "tissue"} <= set(metrics)
    for text in (
        "Reconstruction (test split)",
        "ssim_mean",
        "bits_per_code",
        "fraction_brain_shaped",
        "real test (baseline)",
        "Configuration",
        "two-sample classifier accuracy",
        "tissue fractions per position",
        "highest SSIM to a training slice",
    ):
        assert text in page, text


def test_report_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="run folder not found"):
        build_report(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no vqvae/eval_metrics.json"):
        build_report(tmp_path)


def test_report_renders_in_headless_chromium(report_run: Path):
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("Debian chromium/chromium-driver not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    page = build_report(report_run)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={report_run / 'chrome-profile'}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_bin)
    browser = webdriver.Chrome(options=opts, service=service)
    try:
        browser.get(page.as_uri())
        assert browser.title == "brainvq report"
        images = browser.find_elements("tag name", "img")
        assert len(images) >= 6
        for img in images:
            loaded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            assert loaded, img.get_attribute("alt")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.quit()
