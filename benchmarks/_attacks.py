"""White-box L-inf attacks on a small ONNX CNN without a deep-learning framework.

``NumpyCNN`` interprets a plain feed-forward ONNX graph (Conv, Relu, MaxPool, Concat,
Dropout, GlobalAveragePool, Softmax — e.g. SqueezeNet 1.0/1.1) in NumPy, forward and
backward, so the gradient of the cross-entropy with respect to the input pixels can be
taken from the model's own weights (no torch in the project). ``fgsm`` and ``pgd`` craft
untargeted L-inf attacks on uint8 frames at the model's input size; the results are uint8
images (rounding keeps |delta| <= eps for integer eps in code values).

Convolutions are im2col + matmul (float32); the backward pass computes input gradients
only (no weight gradients). Checked against ONNX Runtime (forward) and finite differences
(backward) in tests/test_adversarial.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["NumpyCNN", "fgsm", "pgd"]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


@dataclass
class _Node:
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any]


def _pad(x: F32, pads: Sequence[int]) -> F32:
    t, left, b, r = pads[0], pads[1], pads[2], pads[3]
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))


def _windows(x: F32, k: int, s: int) -> F32:
    """(N, C, Ho, Wo, k, k) strided view of the k x k windows with stride s."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, H-k+1, W-k+1, k, k)
    return np.asarray(win[:, :, ::s, ::s])


class NumpyCNN:
    """Forward/backward of a feed-forward ONNX CNN in NumPy (see the module docstring)."""

    SUPPORTED = frozenset({"Conv", "Relu", "MaxPool", "Concat", "Dropout", "GlobalAveragePool", "Softmax"})

    def __init__(self, path: str | Path) -> None:
        import onnx  # noqa: PLC0415  (build-time tool, benchmarks only)
        from onnx import numpy_helper  # noqa: PLC0415

        model = onnx.load(str(path))
        self.weights = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in model.graph.initializer}
        self.input = next(i.name for i in model.graph.input if i.name not in self.weights)
        self.nodes: list[_Node] = []
        for n in model.graph.node:
            if n.op_type not in self.SUPPORTED:
                raise ValueError(f"NumpyCNN supports {sorted(self.SUPPORTED)}, but the graph has {n.op_type}")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            self.nodes.append(_Node(n.op_type, list(n.input), n.output[0], attrs))
        self.output = self.nodes[-1].output

    # --- forward ------------------------------------------------------------------------------
    def forward(self, x: F32) -> tuple[F32, dict[str, Any]]:
        """Probabilities (N, C) (or the last output) and the cache for ``backward``."""
        vals: dict[str, F32] = {self.input: x.astype(np.float32)}
        cache: dict[str, Any] = {}
        for node in self.nodes:
            a = vals[node.inputs[0]]
            if node.op == "Conv":
                vals[node.output], cache[node.output] = self._conv(a, node)
            elif node.op == "Relu":
                vals[node.output] = np.maximum(a, 0.0)
            elif node.op == "MaxPool":
                vals[node.output], cache[node.output] = self._maxpool(a, node)
            elif node.op == "Concat":
                vals[node.output] = np.concatenate([vals[i] for i in node.inputs], axis=node.attrs.get("axis", 1))
            elif node.op == "Dropout":
                vals[node.output] = a
            elif node.op == "GlobalAveragePool":
                vals[node.output] = a.mean(axis=(2, 3), keepdims=True)
            else:  # Softmax over the flattened channels
                z = a.reshape(a.shape[0], -1)
                z = z - z.max(axis=1, keepdims=True)
                e = np.exp(z)
                vals[node.output] = (e / e.sum(axis=1, keepdims=True)).reshape(a.shape)
        cache["_vals"] = vals
        out = vals[self.output]
        return out.reshape(out.shape[0], -1), cache

    def _conv(self, x: F32, node: _Node) -> tuple[F32, tuple[F32, tuple[int, ...]]]:
        w = self.weights[node.inputs[1]]  # (O, C, k, k)
        b = self.weights[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(w.shape[0], np.float32)
        k, s = int(w.shape[2]), int(node.attrs.get("strides", [1, 1])[0])
        xp = _pad(x, node.attrs.get("pads", [0, 0, 0, 0]))
        n, c = xp.shape[:2]
        if k == 1 and s == 1:
            ho, wo = xp.shape[2:]
            y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], xp, optimize=True)
        else:
            win = _windows(xp, k, s)  # (N, C, Ho, Wo, k, k)
            ho, wo = win.shape[2:4]
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
            y = (cols @ w.reshape(w.shape[0], -1).T).reshape(n, ho, wo, -1).transpose(0, 3, 1, 2)
        return (y + b[None, :, None, None]).astype(np.float32), (w, xp.shape)

    @staticmethod
    def _maxpool(x: F32, node: _Node) -> tuple[F32, tuple[npt.NDArray[np.intp], tuple[int, ...]]]:
        k = int(node.attrs["kernel_shape"][0])
        s = int(node.attrs.get("strides", [1, 1])[0])
        xp = _pad(x, node.attrs.get("pads", [0, 0, 0, 0]))
        win = _windows(xp, k, s)  # (N, C, Ho, Wo, k, k)
        flat = win.reshape(*win.shape[:4], k * k)
        arg = flat.argmax(axis=-1)  # (N, C, Ho, Wo)
        return np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0], (arg, xp.shape)

    # --- backward -----------------------------------------------------------------------------
    def input_gradient(self, x: F32, labels: npt.ArrayLike) -> tuple[F32, F32]:
        """(d loss / d x, probabilities) for the cross-entropy -log p[label], summed over the batch."""
        probs, cache = self.forward(x)
        vals: dict[str, F32] = cache["_vals"]
        y = np.asarray(labels, dtype=np.int64)
        grads: dict[str, F32] = {}
        last = self.nodes[-1]
        g = probs.copy()
        g[np.arange(g.shape[0]), y] -= 1.0  # softmax + cross-entropy
        grads[last.inputs[0]] = g.reshape(vals[last.inputs[0]].shape).astype(np.float32)
        for node in reversed(self.nodes[:-1]):
            g_out = grads.pop(node.output, None)
            if g_out is None:
                continue
            for name, g_in in self._backward(node, g_out, vals, cache):
                grads[name] = grads[name] + g_in if name in grads else g_in
        return grads[self.input], probs

    def _backward(
        self, node: _Node, g: F32, vals: dict[str, F32], cache: dict[str, Any]
    ) -> list[tuple[str, F32]]:
        a = node.inputs[0]
        if node.op == "Relu":
            return [(a, g * (vals[node.output] > 0))]
        if node.op == "Dropout":
            return [(a, g)]
        if node.op == "GlobalAveragePool":
            h, w = vals[a].shape[2:]
            return [(a, np.broadcast_to(g / (h * w), vals[a].shape).astype(np.float32))]
        if node.op == "Concat":
            sizes = [vals[i].shape[1] for i in node.inputs]
            parts = np.split(g, np.cumsum(sizes)[:-1], axis=1)
            return list(zip(node.inputs, parts, strict=True))
        if node.op == "MaxPool":
            return [(a, self._maxpool_back(g, node, cache[node.output], vals[a].shape))]
        return [(a, self._conv_back(g, node, cache[node.output], vals[a].shape))]

    @staticmethod
    def _unpad(gp: F32, pads: Sequence[int], shape: tuple[int, ...]) -> F32:
        t, left = pads[0], pads[1]
        return gp[:, :, t : t + shape[2], left : left + shape[3]]

    def _conv_back(self, g: F32, node: _Node, saved: tuple[F32, tuple[int, ...]], shape: tuple[int, ...]) -> F32:
        w, pshape = saved
        k, s = int(w.shape[2]), int(node.attrs.get("strides", [1, 1])[0])
        pads = node.attrs.get("pads", [0, 0, 0, 0])
        if k == 1 and s == 1:
            gp = np.einsum("oc,nohw->nchw", w[:, :, 0, 0], g, optimize=True)
            return self._unpad(gp.astype(np.float32), pads, shape)
        n, _, ho, wo = g.shape
        c = w.shape[1]
        gcols = g.transpose(0, 2, 3, 1).reshape(n * ho * wo, -1) @ w.reshape(w.shape[0], -1)  # (NHW, C k k)
        gcols = gcols.reshape(n, ho, wo, c, k, k)
        gp = np.zeros(pshape, dtype=np.float32)
        for i in range(k):
            for j in range(k):
                gp[:, :, i : i + s * ho : s, j : j + s * wo : s] += gcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return self._unpad(gp, pads, shape)

    def _maxpool_back(
        self, g: F32, node: _Node, saved: tuple[npt.NDArray[np.intp], tuple[int, ...]], shape: tuple[int, ...]
    ) -> F32:
        arg, pshape = saved
        k = int(node.attrs["kernel_shape"][0])
        s = int(node.attrs.get("strides", [1, 1])[0])
        ho, wo = arg.shape[2:]
        gp = np.zeros(pshape, dtype=np.float32)
        for i in range(k):
            for j in range(k):
                hit = arg == i * k + j
                gp[:, :, i : i + s * ho : s, j : j + s * wo : s] += np.where(hit, g, 0.0)
        return self._unpad(gp, node.attrs.get("pads", [0, 0, 0, 0]), shape)


def _to_input(images: npt.NDArray[np.generic], mean_bgr: Sequence[float]) -> F32:
    """(N, H, W, 3) BGR pixels -> (N, 3, H, W) float32 minus the per-channel mean."""
    x = images.astype(np.float32) - np.asarray(mean_bgr, np.float32)
    out: F32 = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return out


def fgsm(net: NumpyCNN, images: U8, labels: npt.ArrayLike, eps: int, mean_bgr: Sequence[float]) -> U8:
    """One signed-gradient step of ``eps`` code values (uint8 result)."""
    grad, _ = net.input_gradient(_to_input(images, mean_bgr), labels)
    step = eps * np.sign(grad.transpose(0, 2, 3, 1))
    out: U8 = np.clip(images.astype(np.float32) + step, 0, 255).round().astype(np.uint8)
    return out


def pgd(
    net: NumpyCNN,
    images: U8,
    labels: npt.ArrayLike,
    eps: int,
    mean_bgr: Sequence[float],
    *,
    steps: int = 10,
    step_size: float | None = None,
    seed: int = 0,
) -> U8:
    """Projected gradient ascent on the cross-entropy in the L-inf ball of ``eps`` code values
    (Madry et al. 2018: random start, ``steps`` signed steps of 2.5 eps / steps); uint8 result."""
    rng = np.random.default_rng(seed)
    x0 = images.astype(np.float32)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    x: F32 = np.clip(x0 + rng.uniform(-eps, eps, x0.shape).astype(np.float32), 0, 255)
    for _ in range(steps):
        grad, _ = net.input_gradient(_to_input(x, mean_bgr), labels)
        x = (x + np.float32(alpha) * np.sign(grad.transpose(0, 2, 3, 1))).astype(np.float32)
        x = np.clip(np.clip(x, x0 - eps, x0 + eps), 0, 255)
    out: U8 = np.clip(x.round(), x0 - eps, x0 + eps).astype(np.uint8)
    return out
