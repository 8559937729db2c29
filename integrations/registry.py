"""Providers Doow can connect. A new provider is a new package plus one line here."""

from functools import cache
from importlib import import_module

PROVIDERS: dict[str, str] = {
    "openrouter": "openrouter.provider.OpenRouterProvider",
}


@cache
def get_provider(key: str):
    try:
        dotted = PROVIDERS[key]
    except KeyError:
        raise LookupError(f"Unknown provider {key!r}") from None
    module_path, _, class_name = dotted.rpartition(".")
    return getattr(import_module(module_path), class_name)()


def provider_keys() -> list[str]:
    return list(PROVIDERS)
