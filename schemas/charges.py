"""The internal charge message: the usage of one consumed batch, as charged to one budget.

The resolve stage emits one `BudgetCharged` per matched budget per consumed batch, keyed by
`budget_id`, on the charges topic. It lists every event it charges, each with its position in
its source partition of the usage topic, rather than one pre-summed total: a batch redelivered
after a crash may be cut at other offsets, and the ledger must then apply exactly the lines above
its watermark for that source partition (design.md, "Throughput comes from batches").

Lines are compact arrays `[offset, index, occurred_at_ms, input, output]`, in increasing position
order, because a charge may carry thousands of them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.base import BudgetId, Event, NonNegativeTokens, TenantId

ChargeLineWire = tuple[
    Annotated[int, Field(ge=0)],  # source offset
    Annotated[int, Field(ge=0)],  # index inside an envelope (0 for a single-event message)
    int,  # occurred_at, milliseconds since the Unix epoch
    NonNegativeTokens,  # input tokens (input_total)
    NonNegativeTokens,  # output tokens
]


class BudgetCharged(Event):
    """The usage events of one consumed batch of one usage partition that charge one budget.

    Redelivered batches are emitted again with the same positions; the ledger skips, line by
    line, what its watermark for `source_partition` already covers.
    """

    TYPE: ClassVar[str] = "BudgetCharged"
    VERSION: ClassVar[int] = 1
    type: Literal["BudgetCharged"] = "BudgetCharged"
    version: Literal[1] = 1

    budget_id: BudgetId
    tenant: TenantId
    source_partition: int = Field(ge=0)
    lines: list[ChargeLineWire] = Field(min_length=1)
