"""Real server processes shared by the tests and the benchmark (`harness.servers`); not part of the product."""
