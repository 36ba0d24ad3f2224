"""The OpenAI wire format the server speaks: the chat request's schema, errors, and a finished completion.

Only what the server does is accepted: a request that asks for tools, logprobs, penalties or a JSON response format
is a 400 that says so (not silently ignored); unknown fields that change nothing (``user``, ``metadata`` ...) are
ignored, as OpenAI's own server does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RequestError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=8)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # asked for, but not done by this server: a 400 names them (see ``unsupported``)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        """The first field that asks for something this server does not do, or None."""
        if self.tools or self.functions or self.tool_choice not in (None, "none"):
            return "tools"
        if self.logprobs or self.top_logprobs:
            return "logprobs"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                return name
        if self.logit_bias:
            return "logit_bias"
        return None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


def parse_request(data: Any) -> ChatRequest:
    """A JSON value → a ``ChatRequest``, or a 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise RequestError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param) from None
    bad = req.unsupported()
    if bad:
        raise RequestError(400, f"{bad} is not supported by this server", param=bad, code="unsupported_parameter")
    if len(req.stops()) > 4:
        raise RequestError(400, "stop: at most 4 sequences", param="stop")
    return req


@dataclass
class Completion:
    """A finished answer from a backend: one text per choice (``n``), why each ended, and token counts."""

    texts: list[str]
    finish_reasons: list[str]  # "stop" | "length" | "content_filter" (replaced by the guard)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence (not included); whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)
