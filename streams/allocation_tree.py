"""The shape rules of a tenant's budget tree (org -> team -> feature / key / user).

A write is checked against the tenant's live budgets as they would be after it, so that no
accepted configuration has a cycle, an unknown parent, or children that allocate more than their
parent can give. Errors name the field of the written budget and the rule it breaks; the API
turns them into 422 answers. Pure: plain data in, `FieldError`s out.

Over-allocation: for each metric the parent limits, the children's limits of that metric add up
to at most the parent's limit plus the parent's own `overflow_cap_tokens` (what the parent itself
may draw from its parent). A parent with no overflow cap allows no over-allocation.
Children share their parent's period, because a day's allocation cannot be compared with a
month's limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.budgets import BudgetSpec, Metric
from schemas.errors import AllotmentError, FieldError

METRIC_FIELD: dict[Metric, str] = {
    "input": "input_tokens",
    "output": "output_tokens",
    "total": "total_tokens",
}


class AllocationRejected(AllotmentError):
    """A config or allocation write would break a tree rule; `errors` name field and rule."""

    def __init__(self, budget_id: str, errors: list[FieldError]) -> None:
        self.budget_id = budget_id
        self.errors = errors
        super().__init__(f"budget {budget_id!r}: " + "; ".join(str(e) for e in errors))


def children_of(specs: Mapping[str, BudgetSpec], parent_id: str) -> list[str]:
    """Ids of the live budgets whose parent is `parent_id`, sorted for a stable order."""
    return sorted(bid for bid, spec in specs.items() if spec.parent == parent_id)


def ancestors(specs: Mapping[str, BudgetSpec], budget_id: str) -> list[str]:
    """Parent, grandparent, ... of `budget_id`; stops at a missing parent or a repeat."""
    seen: list[str] = []
    current = specs.get(budget_id)
    while current is not None and current.parent is not None:
        if current.parent in seen or current.parent == budget_id:
            break
        seen.append(current.parent)
        current = specs.get(current.parent)
    return seen


def validate_tree(specs: Mapping[str, BudgetSpec], changed: str) -> list[FieldError]:
    """Errors that the tree `specs` (after a write) has because of budget `changed`.

    Only the rules the write can have broken are checked, so an old inconsistency elsewhere in
    the tenant never blocks an unrelated write.
    """
    spec = specs.get(changed)
    if spec is None:
        return []
    errors = _parent_errors(specs, changed, spec)
    if errors:
        return errors
    errors += _allocation_errors(specs, changed, spec, as_child=False)
    if spec.parent is not None:
        errors += _allocation_errors(specs, spec.parent, specs[spec.parent], as_child=True)
    return errors


def check_retire(specs: Mapping[str, BudgetSpec], budget_id: str) -> list[FieldError]:
    """A budget with live children cannot be retired: they would lose their parent."""
    live = children_of(specs, budget_id)
    if not live:
        return []
    return [
        FieldError(
            "budget_id",
            f"has live children ({', '.join(live)}); retire or re-parent them first",
        )
    ]


def _parent_errors(
    specs: Mapping[str, BudgetSpec], changed: str, spec: BudgetSpec
) -> list[FieldError]:
    if spec.parent is None:
        return []
    if spec.parent == changed:
        return [FieldError("spec.parent", "must not be the budget itself (a cycle)")]
    parent = specs.get(spec.parent)
    if parent is None:
        return [
            FieldError(
                "spec.parent",
                f"unknown parent {spec.parent!r}: no live budget of this tenant has that id",
            )
        ]
    cycle = _cycle_through(specs, changed)
    if cycle:
        return [FieldError("spec.parent", f"makes a cycle in the tree: {' -> '.join(cycle)}")]
    errors: list[FieldError] = []
    if parent.period != spec.period:
        errors.append(
            FieldError(
                "spec.period",
                f"must equal the parent's period ({_period_text(parent)}): allocation compares "
                "limits of the same period",
            )
        )
    return errors


def _cycle_through(specs: Mapping[str, BudgetSpec], start: str) -> list[str]:
    """The path start -> ... -> start when walking up the parents returns to `start`."""
    path = [start]
    node = specs[start].parent
    while node is not None:
        path.append(node)
        if node == start:
            return path
        if node in path[:-1]:
            return []
        current = specs.get(node)
        node = current.parent if current is not None else None
    return []


def _allocation_errors(
    specs: Mapping[str, BudgetSpec], parent_id: str, parent: BudgetSpec, *, as_child: bool
) -> list[FieldError]:
    errors: list[FieldError] = []
    kids = children_of(specs, parent_id)
    if not as_child:
        for kid in kids:
            if specs[kid].period != parent.period:
                errors.append(
                    FieldError(
                        "spec.period",
                        f"child {kid!r} has period {_period_text(specs[kid])}; children share "
                        "their parent's period",
                    )
                )
    allowance = parent.overflow_cap_tokens or 0
    for metric, limit in parent.limits.by_metric().items():
        allocated = sum(specs[k].limits.by_metric().get(metric, 0) for k in kids)
        if allocated <= limit + allowance:
            continue
        field = f"spec.limits.{METRIC_FIELD[metric]}"
        overflow = f"allows overflow of {allowance}" if allowance else "allows no overflow"
        if as_child:
            rule = (
                f"with this budget the children of {parent_id!r} allocate {allocated} {metric} "
                f"tokens, beyond its limit {limit} (it {overflow})"
            )
        else:
            rule = (
                f"is {limit} but the children allocate {allocated} {metric} tokens "
                f"(this budget {overflow})"
            )
        errors.append(FieldError(field, rule))
    return errors


def _period_text(spec: BudgetSpec) -> str:
    period = spec.period
    if period.kind == "rolling":
        return f"rolling {period.window_days} days in {period.timezone}"
    return f"{period.kind} in {period.timezone}"
