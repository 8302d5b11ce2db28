"""Triton kernels of SLA and their launchers. Importing this package imports Triton."""
