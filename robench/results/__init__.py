"""Results: the CSV store (``store``), per-rank shard files (``shards``), masks and statistics (``stats``), the
worst case over attacks (``worstcase``), the seeds report (``seeds``) and the Markdown/plot report (``report``).

Torch-free: ``robench report`` reads results with pandas and matplotlib only. The store's names are re-exported
here, so ``from robench.results import ResultsStore`` works.
"""

from ..attack_meta import NOISE
from ..io import atomic_write
from .store import (
    COLUMNS,
    FLOAT_COLUMNS,
    GRADS,
    INT_COLUMNS,
    JSON_COLUMNS,
    KEY,
    OPTIONAL_COLUMNS,
    Key,
    ResultsStore,
    empty,
    masks,
    read_dir,
    row_key,
    to_frame,
    validate,
)

__all__ = [
    "COLUMNS", "FLOAT_COLUMNS", "GRADS", "INT_COLUMNS", "JSON_COLUMNS", "KEY", "NOISE", "OPTIONAL_COLUMNS", "Key",
    "ResultsStore", "atomic_write", "empty", "masks", "read_dir", "row_key", "to_frame", "validate",
]
