"""One module per weight format, each exposing `FORMAT`."""
