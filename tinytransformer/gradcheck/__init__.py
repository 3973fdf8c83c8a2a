"""Numerical gradient checking: does each hand-written backward match the forward?

``check.py`` holds the checker (``gradcheck``, element by element; ``directional_gradcheck``,
a whole model along random directions) and ``cases.py`` the standard case of every layer.
"""

from .check import (FLOOR, UPSTREAM_STREAM, ArrayCheck, GradcheckResult, directional_gradcheck,
                    gradcheck, rel_error)
from .cases import GradcheckCase, check_all, format_table, padded_ids, standard_cases

__all__ = ["gradcheck", "directional_gradcheck", "rel_error", "GradcheckResult", "ArrayCheck",
           "GradcheckCase", "standard_cases", "padded_ids", "check_all", "format_table", "FLOOR", "UPSTREAM_STREAM"]
