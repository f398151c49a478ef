"""Where series and trees come from, and where verdicts go back: Patchwork, mail archives, git
trees, and `lab check`'s posted checks."""
