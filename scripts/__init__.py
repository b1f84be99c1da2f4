"""Development scripts; ``demo`` runs as a module (``python -m scripts.demo``) to import the
test harness."""
