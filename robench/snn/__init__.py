"""Spiking networks: neurons and their engines (``neurons``), gradient paths (``paths``), architectures (``models``)."""
