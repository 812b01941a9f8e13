"""Turning predictions into action and measuring the effect: segments, uplift, plans, campaigns."""
