"""An emulator of OpenRouter's management API, faithful enough for OpenRouter's official SDK.

    emu = Emulator(EmulatorConfig(seed=1, keys=50))
    client = httpx.Client(transport=emu.transport(), base_url="http://emulator/api/v1")
    server = emu.serve()  # real HTTP on 127.0.0.1, server.base_url, server.shutdown()

See README.md beside this file.
"""

from .config import EmulatorConfig
from .emulator import Emulator, Reply
from .faults import Fault, FaultSet
from .log import RequestLog, RequestLogEntry, key_fingerprint
from .truth import Truth

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "FaultSet",
    "Reply",
    "RequestLog",
    "RequestLogEntry",
    "Truth",
    "key_fingerprint",
]
