"""The quality gate: whether a newly trained model may be published."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """The training program's exit statuses; a Job's logs and status tell them apart."""

    PUBLISHED = 0
    FAILED = 1
    USAGE = 2
    BELOW_MIN_ACCURACY = 3
    WORSE_THAN_CURRENT = 4
    STORE_ERROR = 5


@dataclass(frozen=True)
class Verdict:
    exit_code: ExitCode
    reason: str

    @property
    def publish(self) -> bool:
        return self.exit_code is ExitCode.PUBLISHED


def judge(
    accuracy: float,
    min_accuracy: float,
    current_accuracy: float | None,
    force: bool,
) -> Verdict:
    """Decide on a challenger from its held-out accuracy.

    current_accuracy is the published model's accuracy on the same held-out rows,
    or None when there is no usable published model. force overrides only the
    comparison with the current model, never the minimum.
    """
    if accuracy < min_accuracy:
        return Verdict(
            ExitCode.BELOW_MIN_ACCURACY,
            f"held-out accuracy {accuracy:.4f} is below the minimum {min_accuracy:.4f}",
        )
    if current_accuracy is not None and accuracy < current_accuracy:
        comparison = (
            f"held-out accuracy {accuracy:.4f} is below the current model's "
            f"{current_accuracy:.4f} on the same rows"
        )
        if not force:
            return Verdict(
                ExitCode.WORSE_THAN_CURRENT,
                f"{comparison}; --force true publishes anyway",
            )
        return Verdict(ExitCode.PUBLISHED, f"{comparison}, published because forced")
    if current_accuracy is None:
        return Verdict(
            ExitCode.PUBLISHED, f"held-out accuracy {accuracy:.4f}, no current model"
        )
    return Verdict(
        ExitCode.PUBLISHED,
        f"held-out accuracy {accuracy:.4f} >= current model's {current_accuracy:.4f}",
    )
