"""The `helpline` commands, one module per audience."""
