"""The decision layer: triage, differential sets, the atypical flag."""
