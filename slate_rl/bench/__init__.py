"""On-demand benchmarks (``slate-rl bench ...``); never part of the test run."""
