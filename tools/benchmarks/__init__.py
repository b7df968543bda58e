"""appimg benchmarks: each section measures appimg beside its peer tool in one run."""
