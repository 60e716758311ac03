"""One module per encoder family; each defines `Adapter(EncoderAdapter)`."""
