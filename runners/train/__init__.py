"""The numeric core: what decides a run's numbers, and nothing else (no files but the data cache,
no processes, no Hydra). Every file here is part of a run's ``code_version``."""
