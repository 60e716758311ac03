"""phonecli: run each frozen speech encoder once, probe every layer from a Zarr cache."""

__version__ = "0.1.0"
