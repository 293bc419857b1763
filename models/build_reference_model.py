#!/usr/bin/env python3
"""Build edge-guard's embedded reference model: a compact CNN trained on the synthetic camera's scenes.

Renders labelled frames with ``agent.sources.synthetic_scene.SyntheticScene`` (classes
``SCENE_CLASSES``: empty, car, person, ball) over many seeds and frame sizes, trains a small
classifier with PyTorch on the CPU, writes the ONNX graph itself with ``onnx.helper`` (batch-norm
folded into the convolutions; output = logits), checks it with ONNX Runtime through edge-guard's
own model runner on freshly rendered scenes of unseen seeds, and writes the sidecar JSON the agent
reads (preprocessing, labels, provenance).

PyTorch is a build-time tool only; install it in a separate venv, e.g.::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 onnx onnxruntime -e .
    /tmp/torchvenv/bin/python models/build_reference_model.py

Takes about 1-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run from a checkout without installing edge-guard
    sys.path.insert(0, str(_HERE.parent))

from agent.model.config import ModelConfig, PreprocessConfig  # noqa: E402
from agent.model.preprocess import preprocess  # noqa: E402
from agent.sources.synthetic_scene import SCENE_CLASSES, SceneStyle, SyntheticScene  # noqa: E402

__all__ = ["ARCH", "PREPROCESS", "build_dataset", "main"]

U8 = npt.NDArray[np.uint8]

#: Input preprocessing of the reference model (recorded in the sidecar; the agent uses it verbatim).
PREPROCESS = PreprocessConfig(
    size=(96, 64),
    resize="stretch",
    interpolation="area",
    channel_order="bgr",
    scale=1.0 / 255.0,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    layout="nchw",
    dtype="float32",
)

#: (out_channels, stride) of each 3x3 conv + BN + ReLU block; then global average pool and a linear layer.
ARCH: tuple[tuple[int, int], ...] = ((16, 2), (32, 2), (48, 2), (64, 1))

#: Frame sizes (w, h) the scenes are rendered at, so the model does not depend on one resolution.
RENDER_SIZES: tuple[tuple[int, int], ...] = ((640, 360), (480, 270), (320, 240), (768, 432), (400, 300))
STYLES: tuple[SceneStyle, ...] = ("street", "indoor")
OPSET = 13


def _log(msg: str) -> None:
    print(msg, flush=True)


def build_dataset(seeds: range, per_class: int, rng: np.random.Generator) -> tuple[U8, npt.NDArray[np.int64]]:
    """Render ``per_class`` frames of each class for every seed; returns model-size uint8 images and labels.

    Images are (N, H, W, 3) BGR uint8 at the model input size, already resized by the agent's own
    preprocessing (so training sees exactly what inference sees, before normalisation).
    """
    images: list[U8] = []
    labels: list[int] = []
    for n, seed in enumerate(seeds):
        size = RENDER_SIZES[int(rng.integers(len(RENDER_SIZES)))]
        style = STYLES[int(rng.integers(len(STYLES)))]
        scene = SyntheticScene(seed=seed, size_wh=size, style=style)
        candidates = rng.choice(4000, size=400, replace=False)
        by_class: dict[str, list[int]] = {c: [] for c in SCENE_CLASSES}
        for idx in candidates:
            by_class[scene.label(int(idx))].append(int(idx))
        for cls_id, cls in enumerate(SCENE_CLASSES):
            for idx in by_class[cls][:per_class]:
                image, label = scene.render(idx)
                assert label == cls
                images.append(image)
                labels.append(cls_id)
        if (n + 1) % 20 == 0 or n + 1 == len(seeds):
            _log(f"  rendered {n + 1}/{len(seeds)} scenes, {len(images)} frames")
    small = preprocess(
        images,
        PREPROCESS.model_copy(
            update={"dtype": "uint8", "scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "layout": "nhwc"}
        ),
    )
    return np.asarray(small, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _normalise(batch_u8: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(N, H, W, 3) pixel values 0..255 -> (N, 3, H, W) normalised as PREPROCESS says."""
    mean = np.asarray(PREPROCESS.mean, np.float32)
    std = np.asarray(PREPROCESS.std, np.float32)
    x = (batch_u8 * np.float32(PREPROCESS.scale) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _augment(x: U8, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Light augmentation: brightness x[0.85, 1.15], Gaussian noise sigma 0..4, horizontal flip."""
    f = x.astype(np.float32)
    n = f.shape[0]
    f *= rng.uniform(0.85, 1.15, size=(n, 1, 1, 1)).astype(np.float32)
    f += rng.normal(0.0, 1.0, size=f.shape).astype(np.float32) * rng.uniform(0, 4, size=(n, 1, 1, 1)).astype(np.float32)
    flip = rng.random(n) < 0.5
    f[flip] = f[flip, :, ::-1]
    return np.clip(f, 0.0, 255.0)


def _make_net(num_classes: int) -> Any:
    from torch import nn  # noqa: PLC0415 (build-time only)

    layers: list[Any] = []
    cin = 3
    for cout, stride in ARCH:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def train(x: U8, y: npt.NDArray[np.int64], epochs: int, seed: int, threads: int) -> tuple[Any, list[float]]:
    """Train the CNN; returns the model (eval mode) and the per-epoch training loss."""
    import torch  # noqa: PLC0415 (build-time only)

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed + 1)
    net = _make_net(len(SCENE_CLASSES))
    batch = 64
    steps = epochs * ((len(x) + batch - 1) // batch)
    opt = torch.optim.AdamW(net.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses: list[float] = []
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(x))
        total, t0 = 0.0, time.perf_counter()
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            xb = torch.from_numpy(_normalise(_augment(x[idx], rng)))
            yb = torch.from_numpy(y[idx])
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
        _log(f"  epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({time.perf_counter() - t0:.1f} s)")
    net.eval()
    return net, losses


def to_onnx(net: Any, out: Path) -> None:
    """Write the trained network as an ONNX graph (opset 13, dynamic batch, BN folded into conv)."""
    import onnx  # noqa: PLC0415 (build-time only)
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    mods = list(net)
    nodes: list[Any] = []
    inits: list[Any] = []
    cur = "input"
    i = 0
    block = 0
    while i < len(mods) and type(mods[i]).__name__ == "Conv2d":
        conv, bn = mods[i], mods[i + 1]
        w = conv.weight.detach().numpy().astype(np.float64)  # (out, in, 3, 3)
        g = bn.weight.detach().numpy() / np.sqrt(bn.running_var.detach().numpy() + bn.eps)
        wf = (w * g[:, None, None, None]).astype(np.float32)
        bf = (bn.bias.detach().numpy() - bn.running_mean.detach().numpy() * g).astype(np.float32)
        inits += [numpy_helper.from_array(wf, f"conv{block}.weight"), numpy_helper.from_array(bf, f"conv{block}.bias")]
        stride = int(conv.stride[0])
        nodes.append(
            helper.make_node(
                "Conv",
                [cur, f"conv{block}.weight", f"conv{block}.bias"],
                [f"conv{block}"],
                kernel_shape=[3, 3],
                strides=[stride, stride],
                pads=[1, 1, 1, 1],
                name=f"conv{block}",
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{block}"], [f"relu{block}"], name=f"relu{block}"))
        cur = f"relu{block}"
        i += 3
        block += 1
    lin = mods[-1]
    inits += [
        numpy_helper.from_array(lin.weight.detach().numpy().astype(np.float32), "fc.weight"),
        numpy_helper.from_array(lin.bias.detach().numpy().astype(np.float32), "fc.bias"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [cur], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"),
    ]
    w_px, h_px = PREPROCESS.size
    graph = helper.make_graph(
        nodes,
        "edge_guard_reference_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h_px, w_px])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(SCENE_CLASSES)])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-guard build_reference_model"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    model.doc_string = "edge-guard reference scene classifier: " + ", ".join(SCENE_CLASSES)
    onnx.checker.check_model(model)
    out.write_bytes(model.SerializeToString())


def _torch_logits(net: Any, x: U8) -> npt.NDArray[np.float32]:
    import torch  # noqa: PLC0415 (build-time only)

    with torch.no_grad():
        return np.asarray(net(torch.from_numpy(_normalise(x.astype(np.float32)))).numpy(), dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=_HERE / "reference_cnn.onnx", help="ONNX file to write")
    ap.add_argument("--seed", type=int, default=20261101, help="seed of everything (scenes, init, batches)")
    ap.add_argument("--train-scenes", type=int, default=160, help="distinct synthetic scenes (seeds) to train on")
    ap.add_argument("--val-scenes", type=int, default=40, help="unseen scenes for validation")
    ap.add_argument("--per-class", type=int, default=8, help="frames per class per scene")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)

    try:  # build-time tools: imported after argument parsing so --help works without them
        import onnx  # noqa: PLC0415
        import onnxruntime  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as exc:
        print(
            f"error: {exc.name} is not installed; build in a separate venv: "
            "pip install torch==2.13.0 onnx onnxruntime (see models/README.md)",
            file=sys.stderr,
        )
        return 2

    from agent.model.onnx_runner import OnnxRunner  # noqa: PLC0415

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    train_seeds = range(args.seed % 100000, args.seed % 100000 + args.train_scenes)
    val_seeds = range(train_seeds.stop + 100000, train_seeds.stop + 100000 + args.val_scenes)
    _log(f"rendering {args.train_scenes} training scenes ({args.per_class} frames per class each)")
    x_train, y_train = build_dataset(train_seeds, args.per_class, rng)
    _log(f"rendering {args.val_scenes} validation scenes (unseen seeds)")
    val_rng = np.random.default_rng(args.seed + 7)
    x_val, y_val = build_dataset(val_seeds, args.per_class, val_rng)
    _log(f"training on {len(x_train)} frames, {args.epochs} epochs, {args.threads} threads")
    t_train = time.perf_counter()
    net, losses = train(x_train, y_train, args.epochs, args.seed, args.threads)
    train_s = time.perf_counter() - t_train
    torch_acc = float((_torch_logits(net, x_val).argmax(1) == y_val).mean())
    _log(f"validation accuracy (torch): {torch_acc:.4f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    to_onnx(net, args.out)
    onnx_bytes = args.out.read_bytes()
    sha = hashlib.sha256(onnx_bytes).hexdigest()

    # Check the exported file with ONNX Runtime through the agent's own runner (its preprocessing
    # included), on full-size frames of unseen scenes rendered afresh.
    runner = OnnxRunner(
        ModelConfig(path=args.out, providers=["cpu"], batch_size=32, threads=args.threads, preprocess=PREPROCESS),
        labels=SCENE_CLASSES,
    )
    max_diff = float(np.abs(_torch_logits(net, x_val[:64]) - _ort_logits(runner, x_val[:64])).max())
    _log(f"torch vs onnxruntime logits: max abs diff {max_diff:.2e}")
    correct = total = 0
    vrng = np.random.default_rng(args.seed + 11)
    per_class_hits = np.zeros(len(SCENE_CLASSES))
    per_class_n = np.zeros(len(SCENE_CLASSES))
    for seed in val_seeds:
        size = RENDER_SIZES[int(vrng.integers(len(RENDER_SIZES)))]
        style = STYLES[int(vrng.integers(len(STYLES)))]
        scene = SyntheticScene(seed=seed, size_wh=size, style=style)
        frames = [scene.render(int(i)) for i in vrng.choice(4000, size=24, replace=False)]
        outs = runner.infer([f for f, _ in frames])
        for (_, label), o in zip(frames, outs, strict=True):
            k = SCENE_CLASSES.index(label)
            per_class_n[k] += 1
            per_class_hits[k] += o.top1 == k
            correct += o.top1 == k
            total += 1
    ort_acc = correct / total
    _log(
        f"validation accuracy (onnxruntime, full frames of {len(val_seeds)} unseen scenes): {ort_acc:.4f} "
        f"on {total} frames"
    )

    sidecar = {
        "format": "edge-guard reference model sidecar v1",
        "model": args.out.name,
        "sha256": sha,
        "size_bytes": len(onnx_bytes),
        "task": "classifier",
        "labels": list(SCENE_CLASSES),
        "preprocess": json.loads(PREPROCESS.model_dump_json()),
        "input": {"name": "input", "shape": ["batch", 3, PREPROCESS.size[1], PREPROCESS.size[0]]},
        "output": {"name": "logits", "shape": ["batch", len(SCENE_CLASSES)], "softmax_applied": False},
        "architecture": {
            "blocks": [{"conv3x3_out": c, "stride": s, "batchnorm": "folded", "activation": "relu"} for c, s in ARCH],
            "head": "global average pool + linear",
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "opset": OPSET,
        },
        "training": {
            "data": "agent.sources.synthetic_scene.SyntheticScene renders (clean, with the scene's own flicker "
            "and sensor noise)",
            "seed": args.seed,
            "train_seeds": [train_seeds.start, train_seeds.stop - 1],
            "val_seeds": [val_seeds.start, val_seeds.stop - 1],
            "render_sizes": [list(s) for s in RENDER_SIZES],
            "styles": list(STYLES),
            "train_frames": len(x_train),
            "val_frames": len(x_val),
            "epochs": args.epochs,
            "optimizer": "AdamW lr 4e-3 one-cycle, weight decay 1e-4, batch 64",
            "augmentation": "brightness x[0.85, 1.15], Gaussian noise sigma 0..4 (8-bit units), horizontal flip",
            "final_train_loss": round(losses[-1], 5),
            "train_seconds": round(train_s, 1),
            "threads": args.threads,
        },
        "validation": {
            "accuracy_torch": round(torch_acc, 4),
            "accuracy_onnxruntime_full_frames": round(ort_acc, 4),
            "frames_onnxruntime": total,
            "per_class_accuracy": {
                c: round(float(per_class_hits[k] / max(1, per_class_n[k])), 4) for k, c in enumerate(SCENE_CLASSES)
            },
            "torch_vs_onnxruntime_max_abs_logit_diff": float(f"{max_diff:.3g}"),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opencv": __import__("cv2").__version__,
        },
        "licence": "Apache-2.0, project-owned (trained from scratch on the project's synthetic renders)",
        "rebuild": "python models/build_reference_model.py (in a venv with torch, onnx, onnxruntime)",
    }
    side_path = args.out.with_suffix(".json")
    side_path.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    _log(f"wrote {args.out} ({len(onnx_bytes)} bytes, sha256 {sha[:16]}...) and {side_path}")
    _log(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


def _ort_logits(runner: Any, x: U8) -> npt.NDArray[np.float32]:
    """Logits from the ONNX model for model-size images (preprocessing is then a pure normalisation)."""
    outs = runner.infer(list(x))
    return np.stack([o.logits for o in outs]).astype(np.float32)


if __name__ == "__main__":
    raise SystemExit(main())
