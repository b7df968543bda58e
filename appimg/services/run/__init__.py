"""``appimg run``: start an app inside its merged view, without root (spec/run.md)."""
