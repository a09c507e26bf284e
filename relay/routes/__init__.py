"""HTTP routes, one module per area; each handler is a few lines over the store and dispatcher."""
