"""The console handler's filter scrubs key-shaped text from messages and from tracebacks."""

import io
import logging

from integrations.log_scrub import ScrubSecretsFilter

KEY = "sk-or-v1-" + "0123456789abcdef" * 4


def logged(emit) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubSecretsFilter())
    logger = logging.getLogger("tests.log_scrub")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_key_in_a_logged_exception_is_scrubbed_from_its_traceback():
    def emit(logger):
        try:
            raise ValueError(f"OpenRouter said: Bearer {KEY} is invalid")
        except ValueError:
            logger.exception("Call with %s failed", KEY)

    text = logged(emit)
    assert "Traceback" in text and "ValueError" in text and "[redacted]" in text
    assert KEY[:20] not in text and KEY[-16:] not in text
