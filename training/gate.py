"""The quality gate: whether a newly trained model may be published.

The challenger and the champion (the current model) are compared on rows neither
trained on: the held-out rows are drawn with a fixed seed, so models trained on the
same data with the same test fraction share them, whatever their random_state.
Their identity (a sha256) is in each model's metadata. When the two were evaluated
on different rows, scoring the champion on the challenger's rows would credit it
for rows it may have trained on, so the rule is: compare the challenger's held-out
accuracy with the champion's recorded one, each on rows it never saw, and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

# Two-sided 95% normal quantile for the interval of the accuracy difference.
_Z95 = 1.959963984540054


class ExitCode(IntEnum):
    """The training program's exit statuses; a Job's logs and status tell them apart."""

    PUBLISHED = 0
    FAILED = 1
    USAGE = 2
    BELOW_MIN_ACCURACY = 3
    WORSE_THAN_CURRENT = 4
    STORE_ERROR = 5
    # Other trainers kept moving the pointer while this one re-judged; nothing lost.
    CHAMPION_KEPT_CHANGING = 6
    # rollback/promote: the version is missing or fails verification; nothing changed.
    VERSION_UNUSABLE = 7


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion, with a 95% interval of the difference."""

    champion_version: str
    challenger_accuracy: float
    champion_accuracy: float
    low: float
    high: float
    rows: int
    same_rows: bool

    @property
    def difference(self) -> float:
        return self.challenger_accuracy - self.champion_accuracy

    def describe(self) -> str:
        where = (
            f"on the same {self.rows} held-out rows"
            if self.same_rows
            else "each on its own held-out rows (the evaluation sets differ)"
        )
        return (
            f"held-out accuracy {self.challenger_accuracy:.4f} against version "
            f"{self.champion_version}'s {self.champion_accuracy:.4f} {where}, "
            f"difference {self.difference:+.4f} (95% interval "
            f"{self.low:+.4f} to {self.high:+.4f})"
        )


def compare_on_shared_rows(
    challenger_correct: NDArray[np.bool_],
    champion_correct: NDArray[np.bool_],
    champion_version: str,
) -> Comparison:
    """Both models scored on the same rows: a paired difference and its interval.

    Only rows where exactly one model is right carry information (McNemar's
    discordant pairs); the interval is the normal one for the mean paired difference.
    """
    rows = len(challenger_correct)
    gained = int(np.sum(challenger_correct & ~champion_correct))
    lost = int(np.sum(~challenger_correct & champion_correct))
    difference = (gained - lost) / rows
    spread = _Z95 * math.sqrt(max((gained + lost) / rows - difference**2, 0) / rows)
    return Comparison(
        champion_version=champion_version,
        challenger_accuracy=float(np.mean(challenger_correct)),
        champion_accuracy=float(np.mean(champion_correct)),
        low=difference - spread,
        high=difference + spread,
        rows=rows,
        same_rows=True,
    )


def compare_recorded(
    challenger_accuracy: float,
    challenger_rows: int,
    champion_accuracy: float,
    champion_rows: int,
    champion_version: str,
) -> Comparison:
    """Accuracies measured on different rows: an unpaired difference and interval."""
    difference = challenger_accuracy - champion_accuracy
    spread = _Z95 * math.sqrt(
        challenger_accuracy * (1 - challenger_accuracy) / challenger_rows
        + champion_accuracy * (1 - champion_accuracy) / champion_rows
    )
    return Comparison(
        champion_version=champion_version,
        challenger_accuracy=challenger_accuracy,
        champion_accuracy=champion_accuracy,
        low=difference - spread,
        high=difference + spread,
        rows=challenger_rows,
        same_rows=False,
    )


@dataclass(frozen=True)
class Verdict:
    exit_code: ExitCode
    reason: str
    comparison: Comparison | None = None

    @property
    def publish(self) -> bool:
        return self.exit_code is ExitCode.PUBLISHED


def judge(
    accuracy: float,
    min_accuracy: float,
    comparison: Comparison | None,
    force: bool,
    min_improvement: float = 0.0,
) -> Verdict:
    """Decide on a challenger from its held-out accuracy.

    comparison is None when there is no usable published model. The challenger
    must beat the champion by at least min_improvement (0 lets a tie publish).
    force overrides only the comparison with the current model, never the minimum.
    """
    if accuracy < min_accuracy:
        return Verdict(
            ExitCode.BELOW_MIN_ACCURACY,
            f"held-out accuracy {accuracy:.4f} is below the minimum {min_accuracy:.4f}",
        )
    if comparison is None:
        return Verdict(
            ExitCode.PUBLISHED, f"held-out accuracy {accuracy:.4f}, no current model"
        )
    described = comparison.describe()
    # Round so that a tie computed two ways is still a tie.
    if round(comparison.difference, 9) < min_improvement:
        shortfall = f"{described}; it must improve by at least {min_improvement:.4f}"
        if not force:
            return Verdict(
                ExitCode.WORSE_THAN_CURRENT,
                f"{shortfall}; --force true publishes anyway",
                comparison,
            )
        return Verdict(
            ExitCode.PUBLISHED, f"{shortfall}, published because forced", comparison
        )
    return Verdict(ExitCode.PUBLISHED, described, comparison)
