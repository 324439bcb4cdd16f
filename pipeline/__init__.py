"""kneepain: tells apart the causes of pain behind the knee (information, not a diagnosis).

The public API (DESIGN.md): load_knowledge_base, generate_cases, oracle_posterior, log_density,
predict, explain, next_questions, load_model, and the errors CaseValidationError and
ModelIntegrityError.
"""

from .explain import explain
from .generate import generate_cases
from .knowledge import KnowledgeBase, KnowledgeBaseError, load_knowledge_base
from .model_io import ModelIntegrityError, load_model
from .oracle import log_density, oracle_posterior
from .predict import predict
from .questions import next_questions
from .schema import CONDITIONS, CaseValidationError

__all__ = [
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
