"""Storage backends behind the ports of `perdure.storage.api`."""
