"""Spiking networks: neurons (``neurons``) and their fused engine (``fused``), gradient paths (``paths``),
architectures (``models``)."""
