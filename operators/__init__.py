"""How children are made: offline operators (hyper, merge), LLM operators (llm), and the registry that names them.

An operator is a plain function: parent genome(s), a random.Random, what it declared it needs from the caller's
OperatorContext (the LLM client, the LLM context, the parents' common ancestor) and its settings in; a Variation
(the child's source or the reason there is none, a one-line description, the LLM calls it made) out. Nothing here
imports evo: its errors are in operators.errors.
"""

from operators.context import Attempt, Lineage, LLMContext, OperatorContext, Step
from operators.errors import OperatorConfigError, OperatorError, OperatorUnavailable
from operators.llm_client import DEFAULT_MODEL, UNAVAILABLE, LLMClient, LLMSettings, check_available, settings_from_env
from operators.registry import NEEDS, REGISTRY, OperatorSpec, Registry, default_registry, get, parse_weights
from operators.usage import PRICES, LLMUsage, estimate_cost
from operators.variation import Variation

__all__ = [
    "Attempt", "LLMContext", "Lineage", "OperatorContext", "Step",
    "OperatorConfigError", "OperatorError", "OperatorUnavailable",
    "DEFAULT_MODEL", "UNAVAILABLE", "LLMClient", "LLMSettings", "check_available", "settings_from_env",
    "NEEDS", "REGISTRY", "OperatorSpec", "Registry", "default_registry", "get", "parse_weights",
    "PRICES", "LLMUsage", "estimate_cost",
    "Variation",
]
