"""Hydra plug-in that puts runner plug-ins' conf/ folders on the config search path (see runner.plugins)."""
