"""Kept for the modules that import ``check_options`` from here; the rule table is :mod:`seis_lightning.options`'s."""

from seis_lightning.options import check_options

__all__ = ["check_options"]
