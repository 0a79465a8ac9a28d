"""The UI's pages, a module per part of it, each a small class listing its routes."""
