"""HTTP plumbing shared by every listener: middleware, servlets, JSON bodies."""
