"""Evaluation: perplexity over loss-bearing tokens and generation-based exact-match accuracy."""
