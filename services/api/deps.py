"""What a route needs: the services built at start-up, and the caller's checked principal.

Authorisation is decided here, once: a route that names a tenant takes `Reader` or `Writer`,
which fail with 401 (no valid key) or 403 (the key's role or tenants do not cover it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from services.api.auth import Forbidden, Principal, authenticate
from services.api.commands import Commands
from services.api.state import ConfigState

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
BUDGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$"
NAME_PATTERN = r"^[^\x00/]{1,200}$"


@dataclass
class Services:
    engine: Engine
    state: ConfigState
    commands: Commands
    clock: Callable[[], datetime]


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


_bearer = HTTPBearer(auto_error=False, description="An Allotment API key: alk_<id>_<secret>")

TenantPath = Annotated[str, Path(pattern=TENANT_PATTERN, max_length=128)]
BudgetPath = Annotated[str, Path(pattern=BUDGET_PATTERN, max_length=200)]
Svc = Annotated[Services, Depends(services)]


def principal(
    svc: Svc,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return authenticate(svc.engine, credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(principal)]


def reader(tenant: TenantPath, caller: Caller) -> Principal:
    if not caller.can_read(tenant):
        raise Forbidden(caller.name, "read", tenant)
    return caller


def writer(tenant: TenantPath, caller: Caller) -> Principal:
    if not caller.can_write(tenant):
        raise Forbidden(caller.name, "change", tenant)
    return caller


Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]
