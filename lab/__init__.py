"""Veil's development tools: evaluation, benchmarks, training and their helpers.

Not shipped with the product (neither in the wheel nor in the Docker image): everything here
runs from a checkout, imports the product (``cipher_worker``, ``webapp``), and is never
imported by it. ``python -m lab eval|bench``, ``python -m lab.train …``, ``python -m lab.webbench``.
"""
