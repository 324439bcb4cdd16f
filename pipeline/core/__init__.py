"""The foundation: the case schema and its parser, configs, the knowledge base, the exact oracle, paths and errors."""
