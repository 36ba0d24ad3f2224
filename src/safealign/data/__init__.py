"""Datasets → records. ``loaders`` reads file formats; ``registry`` maps short names to files and upstreams."""
