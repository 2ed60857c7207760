"""codealign: align code models with execution feedback.

Data flow: problems -> prompts -> samples -> sandbox verdicts -> rewards / pass@k -> trainer -> next round.
See docs/ARCHITECTURE.md for which module holds each concept.
"""

__version__ = "0.1.0"
