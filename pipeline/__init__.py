"""kneepain: tells apart the causes of pain behind the knee (information, not a diagnosis)."""

from .cases import as_frame
from .generate import generate_cases
from .knowledge import KnowledgeBase, KnowledgeBaseError, load_knowledge_base
from .oracle import log_density, oracle_posterior
from .schema import CONDITIONS, CaseValidationError

__all__ = [
    "CONDITIONS",
    "CaseValidationError",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "as_frame",
    "generate_cases",
    "load_knowledge_base",
    "log_density",
    "oracle_posterior",
]
