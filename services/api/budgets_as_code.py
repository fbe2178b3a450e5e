"""Budgets as code: a YAML file describes a tenant's tree; plan diffs it, apply writes it.

```yaml
tenant: acme
budgets:
  - id: acme-org
    name: Acme
    limits: {total_tokens: 1000000000}
  - id: acme-support
    name: Support copilot
    parent: acme-org
    limits: {total_tokens: 420000000}
    selector: {feature: [support-copilot]}
```

Each entry is a `BudgetSpec` plus its `id`. Specs are compared after validation, so defaults
written out or left out make no difference, and re-applying an applied file changes nothing.
Budgets live in the tenant but absent from the file are left alone, unless `prune` retires them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from schemas.base import field_errors
from schemas.budgets import BudgetSpec
from schemas.errors import AllotmentError, FieldError

Action = Literal["create", "amend", "retire"]


class BudgetFileInvalid(AllotmentError):
    """The budgets file is not a valid description of a tree; `errors` name field and rule."""

    def __init__(self, path: str, errors: list[FieldError]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: " + "; ".join(str(e) for e in errors))


@dataclass(frozen=True)
class Change:
    action: Action
    budget_id: str
    version: int  # the live version the write expects (0 for a create)
    spec: BudgetSpec | None
    diff: tuple[str, ...] = ()

    def describe(self) -> str:
        sign = {"create": "+", "amend": "~", "retire": "-"}[self.action]
        lines = [f"{sign} {self.action} {self.budget_id}"]
        lines += [f"    {d}" for d in self.diff]
        return "\n".join(lines)


def load_file(path: Path) -> tuple[str, dict[str, BudgetSpec]]:
    """The tenant and the desired specs by budget id, validated; errors name the entry."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BudgetFileInvalid(str(path), [FieldError("(file)", f"is not YAML: {exc}")]) from None
    if not isinstance(data, dict) or not isinstance(data.get("tenant"), str):
        raise BudgetFileInvalid(str(path), [FieldError("tenant", "is required (a string)")])
    entries = data.get("budgets")
    if not isinstance(entries, list):
        raise BudgetFileInvalid(str(path), [FieldError("budgets", "must be a list")])
    specs: dict[str, BudgetSpec] = {}
    errors: list[FieldError] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            errors.append(FieldError(f"budgets.{i}.id", "is required (a string)"))
            continue
        budget_id = entry["id"]
        if budget_id in specs:
            errors.append(FieldError(f"budgets.{i}.id", f"repeats {budget_id!r}"))
            continue
        try:
            specs[budget_id] = BudgetSpec.model_validate(
                {k: v for k, v in entry.items() if k != "id"}
            )
        except ValidationError as exc:
            errors += [FieldError(f"budgets.{i}.{e.field}", e.rule) for e in field_errors(exc)]
    if errors:
        raise BudgetFileInvalid(str(path), errors)
    return data["tenant"], specs


def plan(
    desired: dict[str, BudgetSpec],
    live: dict[str, tuple[int, BudgetSpec]],
    prune: bool = False,
) -> list[Change]:
    """The writes that make the live tree equal the desired one, in an order the rules accept:
    creates and amends parents first, retires children first."""
    changes: list[Change] = []
    for budget_id in _parents_first(desired):
        spec = desired[budget_id]
        if budget_id not in live:
            changes.append(Change("create", budget_id, 0, spec, _diff(None, spec)))
        elif live[budget_id][1] != spec:
            version, current = live[budget_id]
            changes.append(Change("amend", budget_id, version, spec, _diff(current, spec)))
    if prune:
        doomed = {b: s for b, (_, s) in live.items() if b not in desired}
        for budget_id in reversed(_parents_first(doomed)):
            changes.append(Change("retire", budget_id, live[budget_id][0], None))
    return changes


def _parents_first(specs: dict[str, BudgetSpec]) -> list[str]:
    order: list[str] = []
    placed: set[str] = set()

    def place(budget_id: str, trail: tuple[str, ...]) -> None:
        if budget_id in placed or budget_id in trail:
            return
        parent = specs[budget_id].parent
        if parent in specs:
            place(parent, (*trail, budget_id))
        placed.add(budget_id)
        order.append(budget_id)

    for budget_id in sorted(specs):
        place(budget_id, ())
    return order


def _diff(before: BudgetSpec | None, after: BudgetSpec) -> tuple[str, ...]:
    old = _flat(before.model_dump(mode="json")) if before is not None else {}
    new = _flat(after.model_dump(mode="json"))
    if before is None:
        new = {k: v for k, v in new.items() if v not in ([], None, {})}
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key, '-')!r} -> {new.get(key, '-')!r}")
    return tuple(lines)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        result: dict[str, Any] = {}
        for key, value in data.items():
            result.update(_flat(value, f"{prefix}{key}."))
        return result
    return {prefix.rstrip("."): data}
