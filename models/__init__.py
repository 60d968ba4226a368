"""The model that ships with edgeseg (``default/``), installed as package data; see default/README.md."""
