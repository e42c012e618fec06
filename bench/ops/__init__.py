"""One module per op; each defines `cases(device, quick) -> list[Case | Skip]`."""

OPS = ("vq", "maskgit", "attention", "integrations")
