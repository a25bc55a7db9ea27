"""The Max for Live device: built from a readable source and checked by code."""
