"""Network Atlas dashboard: Summit-style linked views over an atlas (torch-free).

The dashboard reads an atlas only through :mod:`compute.atlas`; it never imports torch.
Run it with ``python -m dashboard`` or ``gunicorn dashboard.app:server``, or in a notebook
with :func:`dashboard.show`.
"""

from dashboard.notebook import show

__all__ = ["show"]
