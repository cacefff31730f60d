"""Tasks: the conductor of a run (data, model and criterion construction, the train and valid steps)."""
