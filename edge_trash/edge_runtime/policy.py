"""The sort policy: a track's class vote -> one bin (pure Python)."""

from edge_trash.edge_runtime.sort_config import SortConfig
from edge_trash.edge_runtime.tracker import Track


class Decision:
    """One sort decision for one track."""

    def __init__(self, track: Track, class_id: int, label: str, confidence: float, agreement: float,
                 bin_name: str, reason: str):
        self.track = track
        self.class_id = class_id
        self.label = label
        self.confidence = confidence
        self.agreement = agreement
        self.bin = bin_name
        self.reason = reason

    def __repr__(self) -> str:
        return "Decision(track=%d, %s %.2f -> %s [%s])" % (self.track.id, self.label, self.confidence,
                                                            self.bin, self.reason)


def decide(track: Track, config: SortConfig) -> Decision:
    """The decision for a track: the vote winner, its confidence, and the bin with the reason
    (``class``, ``low_confidence`` below min_confidence, ``unmapped`` for a class without a bin)."""
    class_id, confidence, agreement = track.vote_winner()
    label = config.labels[class_id]
    if confidence < config.min_confidence:
        bin_name, reason = config.reject_bin, "low_confidence"
    elif class_id not in config.class_to_bin:
        bin_name, reason = config.reject_bin, "unmapped"
    else:
        bin_name, reason = config.class_to_bin[class_id], "class"
    return Decision(track, class_id, label, confidence, agreement, bin_name, reason)
