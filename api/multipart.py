"""Multipart forms whose refusals name the part: a form field over the part size limit and a part header
over the parser's line limit (a filename that is too long) become 400s naming the field, where Starlette
answers "Part exceeded maximum size of 1024KB." or "Invalid multipart data.".

A router whose routes take forms is declared with ``route_class=FormRoute``: its routes parse a multipart
body first (``read_multipart_form``); FastAPI then reads the parsed form from the request."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import aclosing
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from .datasets import FILENAME_TOO_LONG, invalid_filename
from .errors import ApiError

_HEADER_WINDOW = 16 * 1024
"""Bytes kept from before each chunk: more than the longest header line the parser accepts (4 KiB)."""
_DISPOSITION = b"content-disposition:"
_PART_NAME = re.compile(rb'(?:^|[;\s])name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb'filename\*?="?([^";]*)', re.IGNORECASE)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


class _PartNamingParser(MultiPartParser):
    """Starlette's parser, remembering which part broke a limit."""

    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None]) -> None:
        self._seen = b""
        """The stream's latest bytes: the chunk being parsed and enough before it to hold a whole header line."""
        self._chunk_start = 0
        self._oversized_field: str | None = None
        super().__init__(headers, self._remembering(stream))

    async def _remembering(self, stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        async for chunk in stream:
            kept = self._seen[-_HEADER_WINDOW:]
            self._seen, self._chunk_start = kept + chunk, len(kept)
            yield chunk

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        try:
            super().on_part_data(data, start, end)
        except MultiPartException:
            self._oversized_field = self._current_part.field_name
            raise

    def refusal(self, exc: MultiPartException) -> ApiError:
        """The 400 for ``exc``, naming the part where it can."""
        if self._oversized_field is not None:
            name = self._oversized_field
            return ApiError(400, f"The form field '{name}' is larger than the limit of {self.max_part_size:,} bytes.",
                            param=name, code="form_field_too_large")
        cause = exc.__cause__
        if isinstance(cause, MultipartParseError) and "header size" in str(cause):
            return self._header_refusal(cause.offset)
        return ApiError(400, f"Invalid multipart form data: {exc.message}", code="invalid_multipart")

    def _header_refusal(self, offset: int) -> ApiError:
        """A header line longer than the parser allows: in practice a filename, else a part's other header."""
        stop = self._chunk_start + max(offset, 0)  # where the parser stopped, inside the overflowing line
        newline = self._seen.rfind(b"\r\n", 0, stop)
        start = newline + 2 if newline != -1 else 0
        end = self._seen.find(b"\r\n", stop)
        line = self._seen[start: end if end != -1 else start + _HEADER_WINDOW]
        in_disposition = line.lower().startswith(_DISPOSITION)
        disposition = line if in_disposition else self._current_part.content_disposition or b""
        name_match = _PART_NAME.search(disposition)
        name = _text(name_match.group(1)) if name_match else None
        filename = _FILENAME.search(line) if in_disposition else None
        if filename is not None:
            return invalid_filename(_text(filename.group(1)), FILENAME_TOO_LONG, param=name or "file")
        part = f"the form part '{name}'" if name else "a form part"
        return ApiError(400, f"A header line of {part} is too long.", param=name, code="invalid_multipart")


async def read_multipart_form(request: Request) -> None:
    """Parse a multipart body into the request's form (where ``request.form()`` finds it), or raise the 400
    naming the part that broke a limit. Other bodies are left to FastAPI."""
    content_type, _ = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or request._form is not None:
        return
    async with aclosing(request.stream()) as stream:
        parser = _PartNamingParser(request.headers, stream)
        try:
            form: FormData = await parser.parse()
        except MultiPartException as exc:
            raise parser.refusal(exc) from exc
    request._form = form


class FormRoute(APIRoute):
    """A route that reads a multipart body with ``read_multipart_form`` before FastAPI validates it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def read_form_then_handle(request: Request) -> Response:
            await read_multipart_form(request)
            return await handler(request)

        return read_form_then_handle
