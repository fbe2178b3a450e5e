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
from streams.allocation_tree import ancestors, check_retire, validate_tree

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


class PlanRejected(AllotmentError):
    """The desired tree breaks a tree rule, or no order of single writes reaches it.

    Raised by `plan` before anything is written, so `apply` never stops halfway because of the
    file itself; `errors` name the budget, its field and the rule.
    """

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def plan(
    desired: dict[str, BudgetSpec],
    live: dict[str, tuple[int, BudgetSpec]],
    prune: bool = False,
) -> list[Change]:
    """The writes that make the live tree equal the desired one, in an order the API accepts.

    The API checks each write against the tree as it is right after that write, so the order
    matters: shrinking a parent together with its children must lower the children first,
    growing must raise the parents first, a retire must wait until its children moved away.
    The whole final tree is checked first (`PlanRejected` names what is wrong with it), then
    the writes are ordered by replaying them on the live tree with the API's own rules:
    retires and decreases children-first, creates and increases parents-first, each taken only
    when the tree after it is valid. A final tree that no such sequence reaches (moving a
    whole subtree to another period, say) is rejected before the first write as well.
    """
    changes: list[Change] = []
    for budget_id in sorted(desired):
        spec = desired[budget_id]
        if budget_id not in live:
            changes.append(Change("create", budget_id, 0, spec, _diff(None, spec)))
        elif live[budget_id][1] != spec:
            version, current = live[budget_id]
            changes.append(Change("amend", budget_id, version, spec, _diff(current, spec)))
    if prune:
        changes += [
            Change("retire", b, version, None)
            for b, (version, _) in sorted(live.items())
            if b not in desired
        ]
    now = {b: s for b, (_, s) in live.items()}
    final = {b: s for b, s in {**now, **desired}.items() if not _retired(b, changes)}
    _check_final(final, changes)
    return _ordered(now, final, changes)


def _retired(budget_id: str, changes: list[Change]) -> bool:
    return any(c.budget_id == budget_id and c.action == "retire" for c in changes)


def _check_final(final: dict[str, BudgetSpec], changes: list[Change]) -> None:
    errors: list[FieldError] = []
    for change in changes:
        if change.action == "retire":
            found = check_retire(final, change.budget_id)
        else:
            found = validate_tree(final, change.budget_id)
        errors += [_named(change.budget_id, e) for e in found]
    if errors:
        raise PlanRejected(errors)


def _ordered(
    now: dict[str, BudgetSpec], final: dict[str, BudgetSpec], changes: list[Change]
) -> list[Change]:
    """Replay the writes on the live tree, always taking the first preferred one that fits."""

    def preference(change: Change) -> tuple[int, int, str]:
        if change.action == "retire":
            return (0, -len(ancestors(now, change.budget_id)), change.budget_id)
        depth = len(ancestors(final, change.budget_id))
        if change.action == "amend" and _shrinks(now[change.budget_id], final[change.budget_id]):
            return (1, -depth, change.budget_id)
        return (2, depth, change.budget_id)

    pending = sorted(changes, key=preference)
    tree = dict(now)
    ordered: list[Change] = []
    while pending:
        change = next((c for c in pending if not _step_errors(tree, c)), None)
        if change is None:
            stuck = [_named(c.budget_id, _step_errors(tree, c)[0]) for c in pending]
            rule = "cannot be reached one write at a time from the live tree"
            raise PlanRejected([FieldError("budgets", rule), *stuck])
        pending.remove(change)
        if change.spec is None:
            tree.pop(change.budget_id, None)
        else:
            tree[change.budget_id] = change.spec
        ordered.append(change)
    return ordered


def _step_errors(tree: dict[str, BudgetSpec], change: Change) -> list[FieldError]:
    """The API's check of one write (`services.api.commands`) against `tree` as it is now."""
    if change.spec is None:
        return check_retire(tree, change.budget_id)
    return validate_tree({**tree, change.budget_id: change.spec}, change.budget_id)


def _shrinks(before: BudgetSpec, after: BudgetSpec) -> bool:
    old, new = before.limits.by_metric(), after.limits.by_metric()
    return any(new.get(metric, 0) < tokens for metric, tokens in old.items()) or (
        (after.overflow_cap_tokens or 0) < (before.overflow_cap_tokens or 0)
    )


def _named(budget_id: str, error: FieldError) -> FieldError:
    return FieldError(f"budgets[{budget_id}].{error.field}", error.rule)


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
