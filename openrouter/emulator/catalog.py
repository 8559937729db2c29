"""A realistic model catalog: per-token prices as decimal strings and one endpoint per serving provider.

Activity rows are split by provider endpoint, so one (day, model) yields several rows as on OpenRouter.
Prices are illustrative (close to public list prices at some point), never fetched.
"""

from __future__ import annotations

import dataclasses
import datetime

from . import money, rng


@dataclasses.dataclass(frozen=True)
class Model:
    id: str
    canonical_slug: str
    name: str
    prompt: str  # USD per prompt token
    completion: str  # USD per completion token
    providers: tuple[str, ...]
    tokenizer: str
    context_length: int
    released: datetime.date
    reasoning: bool = False
    cache_read: str | None = None
    # Typical tokens per request, so expensive chat models and cheap bulk models look different.
    avg_prompt: int = 1800
    avg_completion: int = 400

    @property
    def prompt_units(self) -> int:
        return money.price_units(self.prompt)

    @property
    def completion_units(self) -> int:
        return money.price_units(self.completion)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    index: int
    model_index: int
    model: Model
    provider_name: str
    endpoint_id: str


_D = datetime.date

# Ordered so that the first N models span several providers.
BASE_MODELS: tuple[Model, ...] = (
    Model("openai/gpt-4.1", "openai/gpt-4.1-2025-04-14", "OpenAI: GPT-4.1", "0.000002", "0.000008",
          ("OpenAI", "Azure"), "GPT", 1047576, _D(2025, 4, 14), cache_read="0.0000005"),
    Model("anthropic/claude-sonnet-4", "anthropic/claude-4-sonnet-20250522", "Anthropic: Claude Sonnet 4",
          "0.000003", "0.000015", ("Anthropic", "Google", "Amazon Bedrock"), "Claude", 200000,
          _D(2025, 5, 22), reasoning=True, cache_read="0.0000003", avg_prompt=3500, avg_completion=700),
    Model("google/gemini-2.5-flash", "google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", "0.0000003",
          "0.0000025", ("Google", "Google AI Studio"), "Gemini", 1048576, _D(2025, 6, 17), reasoning=True,
          cache_read="0.000000075", avg_prompt=4000),
    Model("meta-llama/llama-3.3-70b-instruct", "meta-llama/llama-3.3-70b-instruct",
          "Meta: Llama 3.3 70B Instruct", "0.00000013", "0.0000004", ("DeepInfra", "Together", "Groq"),
          "Llama3", 131072, _D(2024, 12, 6)),
    Model("mistralai/mistral-large-2411", "mistralai/mistral-large-2411", "Mistral Large 2411", "0.000002",
          "0.000006", ("Mistral",), "Mistral", 131072, _D(2024, 11, 18)),
    Model("deepseek/deepseek-chat-v3-0324", "deepseek/deepseek-chat-v3-0324", "DeepSeek: DeepSeek V3 0324",
          "0.00000028", "0.00000088", ("DeepSeek", "DeepInfra", "Novita"), "DeepSeek", 163840,
          _D(2025, 3, 24), cache_read="0.00000007"),
    Model("openai/gpt-4.1-mini", "openai/gpt-4.1-mini-2025-04-14", "OpenAI: GPT-4.1 Mini", "0.0000004",
          "0.0000016", ("OpenAI", "Azure"), "GPT", 1047576, _D(2025, 4, 14), cache_read="0.0000001",
          avg_prompt=1200, avg_completion=300),
    Model("x-ai/grok-3-mini", "x-ai/grok-3-mini", "xAI: Grok 3 Mini", "0.0000003", "0.0000005", ("xAI",),
          "Grok", 131072, _D(2025, 4, 9), reasoning=True, cache_read="0.000000075"),
    Model("anthropic/claude-3.5-haiku", "anthropic/claude-3-5-haiku", "Anthropic: Claude 3.5 Haiku",
          "0.0000008", "0.000004", ("Anthropic", "Google"), "Claude", 200000, _D(2024, 11, 4),
          cache_read="0.00000008", avg_prompt=900, avg_completion=250),
    Model("qwen/qwen3-235b-a22b", "qwen/qwen3-235b-a22b-04-28", "Qwen: Qwen3 235B A22B", "0.00000013",
          "0.0000006", ("DeepInfra", "Parasail", "Together"), "Qwen3", 40960, _D(2025, 4, 28), reasoning=True),
    Model("google/gemini-2.5-pro", "google/gemini-2.5-pro", "Google: Gemini 2.5 Pro", "0.00000125",
          "0.00001", ("Google", "Google AI Studio"), "Gemini", 1048576, _D(2025, 6, 17), reasoning=True,
          cache_read="0.00000031", avg_prompt=6000, avg_completion=900),
    Model("deepseek/deepseek-r1", "deepseek/deepseek-r1", "DeepSeek: R1", "0.0000004", "0.000002",
          ("DeepSeek", "Together", "Fireworks"), "DeepSeek", 163840, _D(2025, 1, 20), reasoning=True,
          avg_completion=1500),
    Model("openai/o4-mini", "openai/o4-mini-2025-04-16", "OpenAI: o4 Mini", "0.0000011", "0.0000044",
          ("OpenAI",), "GPT", 200000, _D(2025, 4, 16), reasoning=True, cache_read="0.000000275",
          avg_completion=1200),
    Model("cohere/command-r-plus-08-2024", "cohere/command-r-plus-08-2024", "Cohere: Command R+ (08-2024)",
          "0.0000025", "0.00001", ("Cohere",), "Cohere", 128000, _D(2024, 8, 30)),
    Model("mistralai/mistral-small-3.1-24b-instruct", "mistralai/mistral-small-3.1-24b-instruct-2503",
          "Mistral: Mistral Small 3.1 24B", "0.00000005", "0.0000001", ("Mistral", "DeepInfra"), "Mistral",
          131072, _D(2025, 3, 17), avg_prompt=800, avg_completion=200),
    Model("openai/gpt-4o-mini", "openai/gpt-4o-mini-2024-07-18", "OpenAI: GPT-4o-mini", "0.00000015",
          "0.0000006", ("OpenAI", "Azure"), "GPT", 128000, _D(2024, 7, 18), cache_read="0.000000075",
          avg_prompt=1000, avg_completion=250),
)  # fmt: skip


def build(count: int) -> tuple[Model, ...]:
    """The first `count` models; beyond the base list, dated variants of it (large catalogs for benchmarks)."""
    models = list(BASE_MODELS[:count])
    n = 0
    while len(models) < count:
        base = BASE_MODELS[n % len(BASE_MODELS)]
        version = n // len(BASE_MODELS) + 2
        models.append(
            dataclasses.replace(
                base,
                id=f"{base.id}-v{version}",
                canonical_slug=f"{base.canonical_slug}-v{version}",
                name=f"{base.name} v{version}",
            )
        )
        n += 1
    return tuple(models)


def endpoints(models: tuple[Model, ...]) -> tuple[Endpoint, ...]:
    out = []
    for model_index, model in enumerate(models):
        for provider in model.providers:
            out.append(
                Endpoint(
                    len(out), model_index, model, provider, rng.uuid_like("endpoint", model.id, provider)
                )
            )
    return tuple(out)


_SUPPORTED = ["max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice", "response_format", "seed"]


def api_model(model: Model) -> dict:
    """A /models entry in the shape of the SDK's `Model` component."""
    pricing = {
        "prompt": model.prompt,
        "completion": model.completion,
        "request": "0",
        "image": "0",
        "web_search": "0",
        "internal_reasoning": "0",
    }
    if model.cache_read:
        pricing["input_cache_read"] = model.cache_read
    released = datetime.datetime.combine(model.released, datetime.time(12), tzinfo=datetime.UTC)
    return {
        "id": model.id,
        "canonical_slug": model.canonical_slug,
        "hugging_face_id": None,
        "name": model.name,
        "created": int(released.timestamp()),
        "description": f"{model.name}, served through {len(model.providers)} provider(s) (emulated).",
        "context_length": model.context_length,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": model.tokenizer,
            "instruct_type": None,
        },
        "pricing": pricing,
        "top_provider": {
            "context_length": model.context_length,
            "max_completion_tokens": 32768,
            "is_moderated": model.id.startswith(("openai/", "anthropic/")),
        },
        "per_request_limits": None,
        "supported_parameters": _SUPPORTED + (["reasoning", "include_reasoning"] if model.reasoning else []),
        "default_parameters": None,
        "supported_voices": None,
        "links": {"details": f"/api/v1/models/{model.id}/endpoints"},
    }
