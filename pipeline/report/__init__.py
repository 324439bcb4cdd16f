"""Reports: evaluation against the oracle, triage metrics, the questioning simulation, plots, README sections."""
