"""Request parameters and the session object, with the validation rules of the API."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, ClassVar, TypedDict, TypeVar

from multidict import MultiMapping
from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from .errors import InvalidIp, InvalidUserId, SessionsError, TokenNotFound

__all__ = [
    "DelParams",
    "GetParams",
    "IpParams",
    "NewParams",
    "Params",
    "Session",
    "UserParams",
    "canonical_ip",
    "parse_params",
]

MAX_USER_ID = 2**63 - 1
_TOKEN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Session(TypedDict):
    """SessionObject as the API returns it."""

    ip: str
    extra: dict[str, Any] | None
    user_id: int
    create: int
    activity: int
    token: str


def _user_id(value: object) -> int:
    # str.isdigit alone would let through other scripts' digits and int() underscores.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
        if 0 < number <= MAX_USER_ID:
            return number
    raise PydanticCustomError("invalid", "not a positive 63-bit integer")


@lru_cache(maxsize=4096)
def canonical_ip(value: str) -> str | None:
    """The canonical text of an IPv4 or IPv6 address, or None if it is not one."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # A zone is local to the host that saw it, so it says nothing about the client.
        if address.scope_id is not None:
            return None
        # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; one client,
        # one address.
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


def _ip(value: object) -> str:
    if isinstance(value, str):
        canonical = canonical_ip(value)
        if canonical is not None:
            return canonical
    raise PydanticCustomError("invalid", "not an IP address")


def _token(value: object) -> uuid.UUID:
    if isinstance(value, str) and len(value) == 36 and _TOKEN.fullmatch(value):
        return uuid.UUID(value)
    raise PydanticCustomError("invalid", "not a token")


UserId = Annotated[int, PlainValidator(_user_id, json_schema_input_type=str)]
IpAddress = Annotated[str, PlainValidator(_ip, json_schema_input_type=str)]
Token = Annotated[uuid.UUID, PlainValidator(_token, json_schema_input_type=str)]


class Params(BaseModel):
    """Query parameters of one method; `errors` says which error each field raises."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    errors: ClassVar[Mapping[str, type[SessionsError]]]


class NewParams(Params):
    errors = {"user_id": InvalidUserId, "ip": InvalidIp}
    user_id: UserId
    ip: IpAddress


class GetParams(Params):
    errors = {"token": TokenNotFound, "ip": InvalidIp}
    token: Token
    ip: IpAddress | None = None


class DelParams(Params):
    errors = {"token": TokenNotFound}
    token: Token


class UserParams(Params):
    errors = {"id": InvalidUserId}
    id: UserId


class IpParams(Params):
    errors = {"ip": InvalidIp}
    ip: IpAddress


P = TypeVar("P", bound=Params)


def parse_params(model: type[P], query: MultiMapping[str]) -> P:
    """Validate a query string against `model`, raising the API error of the first bad field."""
    data: dict[str, object] = {}
    for name in model.model_fields:
        values = query.getall(name, ())
        if len(values) == 1:
            data[name] = values[0]
        elif values:
            data[name] = values  # a repeated parameter is ambiguous: the validator refuses it
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0])
        error_type = model.errors[field]
        if first["type"] == "missing" and error_type is not TokenNotFound:
            raise error_type(f"Parameter {field} is required.") from None
        raise error_type() from None
