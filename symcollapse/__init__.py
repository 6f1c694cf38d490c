"""symcollapse: derive and verify the dynamics of representation collapse."""
