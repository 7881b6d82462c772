"""The care team's web page (GET /dashboard/): static files over the public API, no build step."""
