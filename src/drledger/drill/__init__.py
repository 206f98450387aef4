"""Local PostgreSQL clusters and the disaster drill built on them."""
