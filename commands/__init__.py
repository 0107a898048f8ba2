"""Thin command modules: parse arguments, call the library, print the JSON summary."""
