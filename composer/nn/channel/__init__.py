"""torch modules (nn.Module) of composer; imported only when a model is built."""
