"""Example plug-in: focal loss, selectable as ``criterion=focal`` (with ``criterion.gamma``)."""
