"""Hydra launcher plug-ins of runner (Hydra loads launchers only from the hydra_plugins namespace)."""
