"""safealign: make an instruction-tuned model safe to serve without making it useless, with numbers."""

__version__ = "0.1.0"
