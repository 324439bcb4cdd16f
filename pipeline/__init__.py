"""kneepain: tells apart the causes of pain behind the knee (information, not a diagnosis).

The public API: ``load_knowledge_base``, ``generate_cases``, ``oracle_posterior``, ``log_density``,
``predict``, ``explain``, ``next_questions``, ``load_model``, and the errors
``CaseValidationError``, ``BatchInputError`` (a file that cannot be read as cases) and
``ModelIntegrityError``. Names are imported on first use, so
``import pipeline`` stays light (no numpy, pandas, scipy or scikit-learn until a function needs
them).

The package is arranged in rooms by stage; a room imports only the rooms below it (checked by
import-linter, see ``pyproject.toml``): ``core`` (schema, parsing, knowledge base, oracle, paths,
errors) < ``data`` (generator) < ``model`` (features, training, persistence, tracking) <
``decision`` (triage, differential, atypical) < ``serve`` (predict, batch files, MLflow, Dask) <
``interact`` (explain, questions, ask) < ``report`` (evaluation, plots) < ``stages`` < ``cli``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS = {
    "BatchInputError": "pipeline.core.errors",
    "CONDITIONS": "pipeline.core.schema",
    "CaseValidationError": "pipeline.core.errors",
    "KnowledgeBase": "pipeline.core.knowledge",
    "KnowledgeBaseError": "pipeline.core.errors",
    "ModelIntegrityError": "pipeline.core.errors",
    "explain": "pipeline.interact.explain",
    "generate_cases": "pipeline.data.generate",
    "load_knowledge_base": "pipeline.core.knowledge",
    "load_model": "pipeline.serve.loading",
    "log_density": "pipeline.core.oracle",
    "next_questions": "pipeline.interact.questions",
    "oracle_posterior": "pipeline.core.oracle",
    "predict": "pipeline.serve.predict",
}

__all__ = [
    "BatchInputError",
    "CONDITIONS",
    "CaseValidationError",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "ModelIntegrityError",
    "explain",
    "generate_cases",
    "load_knowledge_base",
    "load_model",
    "log_density",
    "next_questions",
    "oracle_posterior",
    "predict",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time names load on first use
    from pipeline.core.errors import BatchInputError, CaseValidationError, KnowledgeBaseError, ModelIntegrityError
    from pipeline.core.knowledge import KnowledgeBase, load_knowledge_base
    from pipeline.core.oracle import log_density, oracle_posterior
    from pipeline.core.schema import CONDITIONS
    from pipeline.data.generate import generate_cases
    from pipeline.interact.explain import explain
    from pipeline.interact.questions import next_questions
    from pipeline.serve.loading import load_model
    from pipeline.serve.predict import predict


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
