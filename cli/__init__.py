"""Helpline cli."""
