"""The Anthropic Messages API as the LLM operators use it: settings built from an explicit environment mapping,
the official client with its own retries and timeout, a cap on concurrent calls, a spend cap, and one usage
record per call.

Retries: the `anthropic` client retries 408/409/429/5xx (529 included) and timeouts itself, max_retries times with
backoff, honouring retry-after headers; nothing here wraps a second retry loop around it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

from operators.errors import OperatorConfigError, OperatorUnavailable
from operators.usage import LLMUsage, estimate_cost

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_BASE_URL = "https://api.anthropic.com"
UNAVAILABLE = "llm operators need ANTHROPIC_API_KEY; running with the offline operators only"


@dataclass(frozen=True)
class LLMSettings:
    """How the LLM operators reach the API. api_key None means they are unavailable (the key never shows in
    repr). timeout_s is per attempt; max_retries is the client's own; max_cost_usd None means no spend cap."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    timeout_s: float = 300.0
    max_retries: int = 4
    max_concurrent: int = 4
    max_cost_usd: float | None = None
    max_tokens: int = 8192

    def __post_init__(self):
        if not self.model or not isinstance(self.model, str):
            raise OperatorConfigError(f"--model must name a Claude model (e.g. {DEFAULT_MODEL}); got {self.model!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise OperatorConfigError(f"ANTHROPIC_BASE_URL must be an http(s) URL; got {self.base_url!r}")
        if not self.timeout_s > 0:
            raise OperatorConfigError(f"the LLM timeout must be > 0 seconds; got {self.timeout_s}")
        if self.max_retries < 0:
            raise OperatorConfigError(f"the LLM retry count must be >= 0; got {self.max_retries}")
        if self.max_concurrent < 1:
            raise OperatorConfigError(f"the LLM concurrency cap must be >= 1; got {self.max_concurrent}")
        if self.max_cost_usd is not None and not self.max_cost_usd >= 0:
            raise OperatorConfigError(f"--max-llm-cost must be >= 0 USD; got {self.max_cost_usd}")
        if self.max_tokens < 256:
            raise OperatorConfigError(f"the LLM max_tokens must be >= 256; got {self.max_tokens}")

    @property
    def available(self) -> bool:
        return bool(self.api_key)


def settings_from_env(env: Mapping[str, str], **overrides) -> LLMSettings:
    """Settings from an environment mapping (the CLI passes os.environ): ANTHROPIC_API_KEY and
    ANTHROPIC_BASE_URL; overrides (model=, max_cost_usd=, timeout_s=, ...) win where they are not None."""
    settings = {"api_key": env.get("ANTHROPIC_API_KEY") or None,
                "base_url": (env.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return LLMSettings(**settings)


def check_available(settings: LLMSettings) -> None:
    """Raises OperatorUnavailable, in one line, when the LLM operators cannot run with these settings."""
    if not settings.available:
        raise OperatorUnavailable(UNAVAILABLE)


@dataclass(frozen=True)
class Reply:
    """What one call produced: the answer's text ("" when the call failed), why generation stopped, and the usage
    record (whose status says whether the call succeeded)."""

    text: str
    stop_reason: str | None
    usage: LLMUsage

    @property
    def answered(self) -> bool:
        """Whether the model answered (possibly declining: status "refused"), as opposed to the call failing."""
        return self.usage.status in ("ok", "refused")


def _failure_status(error: Exception) -> str:
    import anthropic

    if isinstance(error, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(error, anthropic.APIConnectionError):
        return "connection_error"
    if isinstance(error, anthropic.OverloadedError):
        return "overloaded"
    if isinstance(error, anthropic.RateLimitError):
        return "rate_limited"
    if isinstance(error, anthropic.APIStatusError) and error.status_code >= 500:
        return "server_error"
    return "error"


class LLMClient:
    """One per run, held by the driver: the anthropic client, the concurrency and spend caps, and every call's
    usage record. Thread-safe: operators may run in a thread pool."""

    def __init__(self, settings: LLMSettings, *, spent_usd: float = 0.0):
        """spent_usd: what earlier sessions of the run already spent (for --resume), counted against the cap."""
        check_available(settings)
        import anthropic  # 2 s to import: only runs that use the LLM operators pay it

        self.settings = settings
        self._client = anthropic.Anthropic(api_key=settings.api_key, base_url=settings.base_url,
                                           timeout=settings.timeout_s, max_retries=settings.max_retries)
        self._slots = threading.BoundedSemaphore(settings.max_concurrent)
        self._lock = threading.Lock()
        self._spent = float(spent_usd)
        self._usage: list[LLMUsage] = []

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    @property
    def usage(self) -> tuple[LLMUsage, ...]:
        """Every call's record so far, oldest first."""
        with self._lock:
            return tuple(self._usage)

    def budget_left(self) -> bool:
        """False once the spend cap is reached."""
        cap = self.settings.max_cost_usd
        return cap is None or self.spent_usd < cap

    def ensure_budget(self) -> None:
        """Raises OperatorUnavailable when the spend cap is reached: no new calls after that. (Calls already in
        flight finish and are counted, so the total may pass the cap by up to max_concurrent calls.)"""
        if not self.budget_left():
            raise OperatorUnavailable(
                f"the LLM spend cap is reached ({self.spent_usd:.4f} of {self.settings.max_cost_usd:.4f} USD, "
                f"--max-llm-cost); running with the offline operators only")

    def complete(self, *, system: list[dict], messages: list[dict], operator: str, purpose: str = "propose",
                 max_tokens: int | None = None) -> Reply:
        """One Messages API call. A failure the client gave up on (timeouts, 429/5xx after its retries, a bad
        request) comes back as a Reply with empty text and a failure status, not as an exception. Raises
        OperatorUnavailable when the spend cap is reached before the call, and when the API refuses the key or
        does not know the model (every later call would fail the same way)."""
        import anthropic

        self.ensure_budget()
        model = self.settings.model
        with self._slots:
            start = time.monotonic()
            try:
                message = self._client.messages.create(model=model, max_tokens=max_tokens or self.settings.max_tokens,
                                                       system=system, messages=messages)
            except anthropic.AnthropicError as e:
                latency = time.monotonic() - start
                status = _failure_status(e)
                summary = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}".rstrip(": ")
                record = LLMUsage(operator, model, status, latency_s=round(latency, 3), purpose=purpose,
                                  error=summary)
                self._record(record)
                log.warning("%s: LLM call failed (%s)", operator, summary)
                if isinstance(e, (anthropic.AuthenticationError, anthropic.PermissionDeniedError)):
                    raise OperatorUnavailable(f"the Anthropic API refused the key ({summary}); "
                                              f"running with the offline operators only") from None
                if isinstance(e, anthropic.NotFoundError):
                    raise OperatorUnavailable(f"the Anthropic API at {self.settings.base_url} does not serve model "
                                              f"{model!r} ({summary})") from None
                return Reply("", None, record)
            latency = time.monotonic() - start
        try:
            u = message.usage
            cache_write = u.cache_creation_input_tokens or 0
            cache_read = u.cache_read_input_tokens or 0
            cost, note = estimate_cost(model, u.input_tokens, u.output_tokens, cache_write, cache_read)
            status = "refused" if message.stop_reason == "refusal" else "ok"
            record = LLMUsage(operator, model, status, u.input_tokens, u.output_tokens, cache_read, cache_write,
                              round(latency, 3), cost, purpose, note=note)
            text = "".join(block.text for block in message.content if getattr(block, "type", "") == "text")
        except (AttributeError, TypeError, ValueError) as e:  # a server that is not quite the Messages API
            record = LLMUsage(operator, model, "error", latency_s=round(latency, 3), purpose=purpose,
                              error=f"the response is not a Messages API message: {e}")
            self._record(record)
            return Reply("", None, record)
        self._record(record)
        return Reply(text, message.stop_reason, record)

    def _record(self, record: LLMUsage) -> None:
        with self._lock:
            self._usage.append(record)
            self._spent += record.cost_usd

    def close(self) -> None:
        self._client.close()
