"""The web app's budgets, measured on a world of its own: ``python -m lab.webbench`` (see
:mod:`lab.webbench.benchmark`)."""
