"""Evaluation: verdicts → rates (``metrics``, ``safety``), the ``safealign eval`` driver (``run``), and the
helpfulness, pairwise-comparison and error-analysis modules that read its result dirs."""
