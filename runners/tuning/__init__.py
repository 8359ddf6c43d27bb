"""Tuning: declared search spaces (``trial=i``) and the validation-only choice of configurations
(``python -m runners.tuning``)."""
