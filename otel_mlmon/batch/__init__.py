"""The batch path: files in, window results (and an HTML report) out."""
