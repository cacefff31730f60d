"""Models; each is built from its config node's ``_target_``."""
