import logging
import re

from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables

# OpenRouter keys look like sk-or-v1-<64 hex>; scrub anything key-shaped and every bearer token,
# whatever logger it comes through (httpx logs request headers at DEBUG).
_SECRET_PATTERNS = [
    re.compile(r"sk-or-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(bearer\s+)[^\s'\"]+"),
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"),
]


def scrub(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


@sensitive_variables("secret")
def redact_pieces(text: str, secret: str, piece: int = 8) -> str:
    """`text` with every run of `piece` or more characters of `secret` in it replaced by [redacted]."""
    hidden = [False] * len(text)
    for i in range(len(secret) - piece + 1):
        at = text.find(secret[i : i + piece])
        while at != -1:
            hidden[at : at + piece] = [True] * piece
            at = text.find(secret[i : i + piece], at + 1)
    if not any(hidden):
        return text
    out = []
    for at, char in enumerate(text):
        if not hidden[at]:
            out.append(char)
        elif at == 0 or not hidden[at - 1]:
            out.append("[redacted]")
    return "".join(out)


class ScrubSecretsFilter(logging.Filter):
    """Scrubs a record's message and, for logger.exception, its traceback text: formatters reuse
    `exc_text` once set, so the scrubbed text is what every handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(_formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_formatter = logging.Formatter()


class ScrubSecretsReporterFilter(SafeExceptionReporterFilter):
    """Django's error-report filter (sensitive_variables, sensitive_post_parameters, settings),
    plus: a frame variable whose text holds anything key-shaped is hidden too, whether or not the
    function marked it sensitive (a decorator's frame holding the arguments, a library's frame)."""

    def get_traceback_frame_variables(self, request, tb_frame):
        variables = super().get_traceback_frame_variables(request, tb_frame)
        if not self.is_active(request):
            return variables
        return [
            (name, self.cleansed_substitute if _holds_secret(value) else value) for name, value in variables
        ]


def _holds_secret(value) -> bool:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break the error report
        return False
    return scrub(text) != text
