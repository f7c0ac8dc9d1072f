"""The report printed at the end of a training run, for a person to read."""

from __future__ import annotations

from training.data import Dataset
from training.gate import Verdict
from training.store.layout import Metrics


def render_report(
    metrics: Metrics,
    class_names: list[str],
    verdict: Verdict,
    location: str,
    dataset: Dataset,
) -> str:
    """A metrics table, the confusion matrix, the verdict and where the model went."""
    rows = [
        ("accuracy (held out)", metrics.accuracy),
        ("precision (macro)", metrics.precision_macro),
        ("recall (macro)", metrics.recall_macro),
        ("f1 (macro)", metrics.f1_macro),
        (f"cv accuracy mean ({metrics.cv_folds} folds)", metrics.cv_accuracy_mean),
        (f"cv accuracy std ({metrics.cv_folds} folds)", metrics.cv_accuracy_std),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        "",
        f"Classifier of {dataset.source}: {metrics.train_rows} training rows, "
        f"{metrics.test_rows} held out",
        "",
        *(f"  {name:<{width}}  {value:.4f}" for name, value in rows),
        "",
        "  confusion matrix (rows: true class, columns: predicted)",
    ]
    column = max(len(name) for name in class_names)
    lines.append("  " + " " * column + "".join(f"  {n:>{column}}" for n in class_names))
    for name, counts in zip(class_names, metrics.confusion_matrix, strict=True):
        lines.append(
            f"  {name:>{column}}" + "".join(f"  {c:>{column}}" for c in counts)
        )
    lines.append("")
    if verdict.publish:
        lines.append(f"  PUBLISHED to {location}: {verdict.reason}")
    else:
        lines.append(
            f"  NOT PUBLISHED (exit {int(verdict.exit_code)}): {verdict.reason}"
        )
    lines.append("")
    return "\n".join(lines)
