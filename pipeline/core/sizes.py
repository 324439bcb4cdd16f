"""How many cases count as "a few": a ``predict()`` call's, where the fixed cost of each array step
is most of the time.

Several steps have two forms that give the same result: for a few cases, Python's own values or
all the work in a few array steps; for a block of many, vectorised work taken a field, rule or
group at a time, whose set-up a few cases do not repay and whose all-at-once form would hold a row
per field and case. Each step takes the first form up to :data:`FEW_CASES` rows. One number, so
that a call of one size takes the same forms throughout; the tests check both forms of each step
against each other.
"""

from __future__ import annotations

__all__ = ["FEW_CASES"]

# up to this many rows, a step takes its few-cases form (measured crossovers: 20-200 rows; one
# case: a text column in 40 us against 400 us, a rule's counts looked up in 1/6 of the time)
FEW_CASES = 64
