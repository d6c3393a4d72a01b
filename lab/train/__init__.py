"""Training commands for the embedded codec (``python -m lab.train …``)."""
