"""One module per stage; each defines click commands and only parses and calls."""
