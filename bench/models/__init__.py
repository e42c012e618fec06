"""One module per model pipeline; each defines `cases(device, quick) -> list[Case | Skip]`."""

MODELS = ("genie", "sora", "jepa")
