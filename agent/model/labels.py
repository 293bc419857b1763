"""Class labels of a model: read from a text file, and checked against the model's class count.

Both runners (ONNX Runtime and TensorRT) resolve their labels here, so a labels file that does
not belong to the model fails the same way, with the same actionable message, whichever
runtime is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.errors import ModelError

__all__ = ["check_label_count", "read_labels", "resolve_labels"]


def read_labels(path: Path) -> tuple[str, ...]:
    """Class names from a text file, one per line (blank lines at the end ignored)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelError(f"cannot read labels file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected one "
                         "class name per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"labels file {path} is empty; expected one class name per line")
    return tuple(line.strip() for line in lines)


def check_label_count(labels: Sequence[str], num_classes: int | None, *, source: str, model: Path | str) -> None:
    """Raise ModelError when ``labels`` (from ``source``) and the model's class count differ.

    Nothing to check without labels or when the model's class count is not fixed (None).
    """
    if not labels or num_classes is None or len(labels) == num_classes:
        return
    raise ModelError(
        f"{source} has {len(labels)} names but model {model} outputs {num_classes} classes; "
        f"set model.labels to the labels file of this model ({num_classes} class names, one per line), "
        "or remove model.labels to report class indices"
    )


def resolve_labels(
    labels_file: Path | None, given: Sequence[str] | None, num_classes: int | None, model: Path | str
) -> tuple[str, ...]:
    """The labels a runner reports: ``given`` (e.g. the reference model's sidecar), else those of
    ``labels_file``, else none; checked against ``num_classes`` (:func:`check_label_count`)."""
    if given is not None:
        labels, source = tuple(given), "labels list"
    elif labels_file is not None:
        path = labels_file.expanduser()
        labels, source = read_labels(path), f"labels file {path}"
    else:
        return ()
    check_label_count(labels, num_classes, source=source, model=model)
    return labels
