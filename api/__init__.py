"""HTTP front end of the SparseGrad fine-tuning service (built in a later stage)."""
