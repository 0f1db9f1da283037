"""One module per init system; each registers itself with the contract in ``base``."""
