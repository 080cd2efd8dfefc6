"""Request bodies of the OpenAI-compatible endpoints, validated by pydantic (strict types: a
string where a number belongs is a 400, not a silent conversion) and the server's limits.

Unknown fields are ignored (clients send many optional ones: user, presence_penalty, ...);
fields tunesmith cannot honour (tools, chat logprobs) are refused by the routes with a 400
rather than silently dropped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TOKENS = 4096  # per request; the model's context may allow less (checked per prompt)
MAX_N = 8  # choices per request
MAX_STOP = 4  # stop strings, as OpenAI
MAX_LOGPROBS = 5  # top alternatives per token, as OpenAI's legacy completions
MAX_INPUTS = 64  # prompts (completions) or texts (classifications) per request
DEFAULT_MAX_TOKENS = 256


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


Stop = str | list[str] | None


class _Sampling(_Body):
    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: Stop = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop: at most {MAX_STOP} non-empty strings")
        return stops


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None
    tools: list | None = None
    stream_options: dict | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False


class ClassificationRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
