"""anchorloop's composition root: the command line (``anchorloop.cli``) and the demo that wires
the agent, the environments and the trainer together. Nothing else imports this package."""
