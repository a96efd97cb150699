"""Fleet: groups, enrollment tokens, policies, re-imaged and cloned PCs."""
