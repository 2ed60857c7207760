"""sandbox: a standalone execution service that judges untrusted programs against tests.

It never imports ``codealign``: others run it without the trainer.
"""

__version__ = "0.1.0"
