"""The dashboard's ES modules, shipped as package data and served by the plugin."""
