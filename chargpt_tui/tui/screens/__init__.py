"""Screens pushed over the main view: help, sampling parameters, attention, quit confirmation."""
