"""ComfyUI entry point of the SLA (Sparse-Linear Attention) node pack."""
