"""Tests of the dog_init package."""
