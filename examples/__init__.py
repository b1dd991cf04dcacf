"""Examples to configure: server tools (`examples.tools`)."""
