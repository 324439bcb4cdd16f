"""Working with one case: why (explain), what to ask next, and the interactive `kneepain ask`."""
