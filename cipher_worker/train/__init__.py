"""Training commands for the embedded codec (``python -m cipher_worker.train …``)."""
