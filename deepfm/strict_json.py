"""JSON as RFC 8259 defines it, for every file and line the project writes.

Python's `json.dumps` writes NaN and infinity as the tokens `NaN` and `Infinity`, which no strict
parser (Spark's, jq, JavaScript's JSON.parse, Go's) reads. An undefined figure (the AUC of one
class, the std of an empty column) is written as null instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):  # numpy's float64 too
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    return obj
