"""Quality simulation of ai-extraction-guard: victims, attackers and benign clients on simulated time.

``python -m extraction_sim`` (from ``bench/``) runs the full report; ``run_simulation(Scale.small())``
is the reduced form the test suite runs. Every request goes through the plugin's own decision code
(``ExtractionGuard.check_access`` / ``learn`` with ``build_observation`` and the tap's
``response_summary``) on a memory storage whose clock is the simulated request time.
"""

from .runner import Report, Scale, run_simulation

__all__ = ["Report", "Scale", "run_simulation"]
