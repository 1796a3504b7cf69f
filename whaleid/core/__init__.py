"""Layer 0: what every other layer uses and that knows nothing of whaleid: user errors, atomic file output, logging, the parallel map over files, devices."""
