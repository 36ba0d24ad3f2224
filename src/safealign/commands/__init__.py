"""One module per ``safealign`` subcommand; each defines ``add_parser(subparsers)`` that sets ``func``.

Keep imports of torch/transformers inside the functions so ``safealign --help`` stays fast.
"""
