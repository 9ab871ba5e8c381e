"""One module per `repmon` sub-command; each defines register(subparsers)."""
